"""Start-up cost: `infill-lsp --help` and the server's `initialize` need no torch.

torch and transformers take seconds to import; they are imported with the model, in the
background, once the server has answered `initialize`. Each check runs in a fresh
interpreter and reads its `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from infill_engine.model.device import DEVICE_CHOICES
from lsp_server import settings

HEAVY = ("torch", "transformers")


def imported_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; which heavy modules it left imported."""
    report = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "from lsp_server.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit:\n"
        "    assert exit.code == 0"
    )
    assert imported_after(code) == []


def test_a_server_is_built_and_started_without_torch():
    # what `infill-lsp` runs before it reads the client's `initialize`
    code = (
        "import lsp_server.__main__\n"
        "from lsp_server.server import create_server\n"
        "create_server(base=lsp_server.__main__.settings.Settings(device='cpu'))"
    )
    assert imported_after(code) == []


def test_the_device_choices_are_the_engines():
    assert settings.DEVICES == DEVICE_CHOICES
