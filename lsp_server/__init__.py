"""Language server for diffusion infilling: ghost text, completions, rewrite, fill on
save.

`InfillServer` and `create_server` are imported on first use, so that `infill-lsp
--help` imports neither pygls nor the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

VERSION = "0.1.0"
__version__ = VERSION
__all__ = ["VERSION", "InfillServer", "create_server"]

if TYPE_CHECKING:
    from lsp_server.server import InfillServer, create_server


def __getattr__(name: str) -> Any:
    """The server's names, imported when first asked for (PEP 562)."""
    if name in ("InfillServer", "create_server"):
        from lsp_server import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
