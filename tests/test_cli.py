"""`infill fill` as a user runs it: a real process on a saved tiny checkpoint."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest
import torch
from conftest import build_tiny_model

from infill_engine import cli
from infill_engine.cli import split_at

EXAMPLE = (
    "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n"
    "    return total\n"
)


def run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "infill_engine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fill_prints_the_middle_and_leaves_the_file_alone(tmp_path, tiny_model_dir):
    source = tmp_path / "ex.py"
    source.write_text(EXAMPLE)
    proc = run(
        "fill",
        str(source),
        "--line",
        "5",
        "--col",
        "12",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--span",
        "8",
        "--steps",
        "4",
        "--visual",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert '"steps"' in proc.stdout and "step 1/4" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert source.read_text() == EXAMPLE


def test_position_outside_the_file_is_a_clear_error(tmp_path, tiny_model_dir):
    source = tmp_path / "ex.py"
    source.write_text(EXAMPLE)
    proc = run(
        "fill",
        str(source),
        "--line",
        "2",
        "--col",
        "99",
        "--model",
        str(tiny_model_dir),
    )
    assert proc.returncode == 2
    assert (
        "column 99 is outside line 2" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_missing_model_is_one_line_not_a_traceback(tmp_path):
    source = tmp_path / "ex.py"
    source.write_text(EXAMPLE)
    proc = run(
        "fill", str(source), "--line", "1", "--col", "1", "--model", str(tmp_path / "m")
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr


def test_help_explains_every_flag():
    proc = run("fill", "--help")
    for flag in (
        "--line",
        "--col",
        "--model",
        "--device",
        "--span",
        "--visual",
        "--steps",
    ):
        assert flag in proc.stdout


def test_invalid_utf8_on_disk_is_a_clear_error(tmp_path, tiny_model_dir):
    source = tmp_path / "bad.py"
    source.write_bytes(b"x = '\xff\xfe'\n\x00\n")
    proc = run(
        "fill", str(source), "--line", "1", "--col", "1", "--model", str(tiny_model_dir)
    )
    assert proc.returncode == 2
    assert "utf-8" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_the_demo_position_is_the_indented_hole_in_the_example():
    import re
    from pathlib import Path

    from infill_engine.cli import split_at

    root = Path(__file__).resolve().parent.parent
    demo = re.search(
        r"infill fill (\S+) --line (\d+) --col (\d+)", (root / "Makefile").read_text()
    )
    text = (root / demo.group(1)).read_text()
    offset = split_at(text, int(demo.group(2)), int(demo.group(3)))
    line_start = text.rindex("\n", 0, offset) + 1
    assert text[line_start:offset] == "    " and text[offset] == "\n"


# The live view, the cost of starting, empty answers and clear input errors: each
# through the real command, as a user meets them.

LONG_LINES = (
    "def mean(xs):\n"
    "    # " + "the long comment wraps in a narrow pane; " * 3 + "\n"
    "    total = 0\n"
    "    \n"
    "    return total / len(xs)\n"
)


def infill(*args, timeout=120):
    """The `infill` console script, as installed beside this interpreter."""
    script = Path(sys.executable).with_name("infill")
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=timeout
    )


def on_terminal(args, columns, lines=40, timeout=120):
    """Run `infill` with stderr on a pseudo-terminal of `columns` x `lines`.

    Returns the terminal's screen at the end (as a terminal emulator shows it), the
    raw bytes written there, stdout, and the seconds from the first step's frame to
    the last frame's.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    script = Path(sys.executable).with_name("infill")
    proc = subprocess.Popen(
        [str(script), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    raw, first_frame, last_frame = b"", None, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        raw += data
        if first_frame is None and b"step 1/" in raw:
            first_frame = time.monotonic()
        if last_frame is None and b"done after" in raw:
            last_frame = time.monotonic()
    os.close(master)
    stdout = proc.communicate(timeout=timeout)[0].decode()
    screen = pyte.Screen(columns, lines)
    pyte.ByteStream(screen).feed(raw)
    assert first_frame and last_frame, raw.decode(errors="replace")
    return (
        [row.rstrip() for row in screen.display],
        raw,
        stdout,
        last_frame - first_frame,
    )


@pytest.mark.parametrize("columns", [60, 200])
def test_visual_redraws_in_place_paced_and_ends_on_the_kept_row(
    tmp_path, tiny_model_dir, columns
):
    source = tmp_path / "ex.py"
    source.write_text(LONG_LINES)
    pace = 0.3
    args = ["fill", str(source), "--line", "4", "--col", "5", "--visual"]
    args += ["--pace", str(pace), "--span", "8", "--span", "16", "--steps", "4"]
    args += ["--model", str(tiny_model_dir), "--device", "cpu", "--json"]
    screen, raw, stdout, seconds = on_terminal(args, columns)
    result = json.loads(stdout)
    steps, kept = result["steps"], result["span_length"]
    # Every step was drawn, each frame over the last: none is left on the screen,
    # and the last frame is the kept row alone, with one legend under it.
    for step in range(1, steps + 1):
        assert f"step {step}/4".encode() in raw
    shown = "\n".join(screen)
    assert not [row for row in screen if row.startswith("step ")], shown
    assert [row for row in screen if row.startswith("done after")] == [
        f"done after {steps} steps: span {kept} kept"
    ], shown
    other = 16 if kept == 8 else 8
    assert f"span {other}:" not in shown and f"span {kept}: the answer" in shown
    assert shown.count("pinned context") == 1
    # Each step's frame stayed up `pace` seconds at least (a step here takes ~10 ms).
    assert seconds >= steps * pace - 0.1


def test_importing_the_cli_and_parsing_flags_leaves_torch_unimported():
    code = (
        "import sys, infill_engine, infill_engine.cli as cli\n"
        "parser = cli.build_parser()\n"
        "parser.format_help()\n"
        "parser.parse_args(['fill', 'f.py', '--line', '1', '--col', '1', '--visual'])\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_package_still_offers_every_public_name():
    import infill_engine

    for name in infill_engine.__all__:
        assert getattr(infill_engine, name).__name__ == name
        assert name in dir(infill_engine)
    with pytest.raises(AttributeError):
        infill_engine.NoSuchName  # noqa: B018


@pytest.fixture(scope="module")
def blank_model_dir(tmp_path_factory, tiny_tokenizer):
    """A checkpoint whose weights are all zero: every logit ties, so every slot's
    argmax is id 0, the pad token, which decodes to no text."""
    model = build_tiny_model(tiny_tokenizer)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    path = tmp_path_factory.mktemp("blank-model")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_an_empty_middle_says_no_suggestion_with_its_own_exit_code(
    tmp_path, blank_model_dir
):
    source = tmp_path / "ex.py"
    source.write_text(EXAMPLE)
    proc = infill(
        "fill", str(source), "--line", "5", "--col", "12", "--span", "8",
        "--steps", "2", "--model", str(blank_model_dir), "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == cli.EXIT_NO_SUGGESTION == 3, proc.stderr
    assert proc.stdout == ""
    assert "infill: no suggestion: the span's 8 tokens decode to no text" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_help_documents_the_exit_statuses():
    for args in (["--help"], ["fill", "--help"]):
        proc = infill(*args)
        assert proc.returncode == 0
        assert f"{cli.EXIT_NO_SUGGESTION}  " in proc.stdout
        assert "no suggestion" in proc.stdout and "exit status" in proc.stdout


def test_a_line_past_the_end_names_the_files_line_count(tmp_path):
    source = tmp_path / "ex.py"
    source.write_text("".join(f"x{n} = {n}\n" for n in range(25)))
    proc = infill("fill", str(source), "--line", "30", "--col", "1")
    assert proc.returncode == 2
    assert proc.stderr == f"infill: {source}: line 30 is outside the file (25 lines)\n"


def test_lines_count_as_editors_count_them():
    text = "a\nbc\n"
    assert split_at(text, 2, 3) == 4
    assert split_at(text, 3, 1) == len(text)  # after the final newline: the end
    with pytest.raises(ValueError, match=r"outside the file \(2 lines\)"):
        split_at(text, 4, 1)
    with pytest.raises(ValueError, match=r"column 2 is outside line 3 \(1..1\)"):
        split_at(text, 3, 2)
    with pytest.raises(ValueError, match=r"\(1 line\)"):
        split_at("", 2, 1)


def test_a_binary_file_is_one_clear_line(tmp_path):
    source = tmp_path / "logo.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    proc = infill("fill", str(source), "--line", "1", "--col", "1")
    assert proc.returncode == 2
    assert proc.stderr == (
        f"infill: {source}: not UTF-8 text (byte 0x89 on line 1); infill reads "
        "UTF-8 source files, not binary ones\n"
    )


def test_a_nul_byte_is_refused_not_filled(tmp_path, tiny_model_dir):
    source = tmp_path / "ex.py"
    source.write_bytes(b"x = 1\n\x00\ny = 2\n")
    proc = infill(
        "fill", str(source), "--line", "3", "--col", "1",
        "--model", str(tiny_model_dir), "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"infill: {source}: holds a NUL byte (line 2): a binary file, not source; "
        "not filled\n"
    )


def test_the_readme_tells_what_the_command_does():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    quick_start = readme.split("## Quick start")[1].split("\n## ")[0]
    command_line = (root / "docs" / "cli.md").read_text()
    for fact in ("Python 3.11", "`make`", "Node 20+", "du -sh .venv", "make demo"):
        assert fact in quick_start, fact
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in quick_start
    help_text = infill("fill", "--help").stdout
    statuses = re.findall(r"^  (\d)  ", help_text.split("exit status:")[1], re.M)
    assert statuses == ["0", "2", "3"]
    for status in statuses:
        assert re.search(rf"\b{status} [a-z]", command_line.split("Exit status")[1])
    assert f"default {cli.DEFAULT_PACE} s" in command_line
    assert f"default {cli.DEFAULT_PACE};" in " ".join(help_text.split())


def _adds_errors(language_id: str, prefix: str, fill: str, suffix: str) -> bool:
    """The server's gate, written out: does the fill add a tree-sitter error?"""
    import tree_sitter as ts
    import tree_sitter_python

    parser = ts.Parser(ts.Language(tree_sitter_python.language()))

    def errors(text: str) -> int:
        tree = parser.parse(text.encode())
        count, stack = 0, [tree.root_node]
        while stack:
            node = stack.pop()
            count += node.is_error or node.is_missing
            stack.extend(node.children)
        return count

    assert language_id == "python"
    return errors(prefix + fill + suffix) > errors(prefix + suffix)


def test_json_valid_is_the_servers_parse_gate(tmp_path, tiny_model_dir):
    """`valid` says whether each candidate parses in place (it said True for all)."""
    source = tmp_path / "ex.py"
    source.write_text(EXAMPLE)
    spans = [a for n in (3, 6, 9, 12) for a in ("--span", str(n))]
    args = ["fill", str(source), "--line", "5", "--col", "12", *spans]
    proc = run(*args, "--model", str(tiny_model_dir), "--device", "cpu", "--json")
    assert proc.returncode in (0, 3), proc.stderr
    result = json.loads(proc.stdout)
    assert result["parse_gate"] == "python"
    prefix, suffix = EXAMPLE[: EXAMPLE.index("total\n", 60)], "total\n"
    assert (prefix + suffix) == EXAMPLE
    verdicts = [
        (c["valid"], not _adds_errors("python", prefix, c["text"], suffix))
        for c in result["candidates"]
    ]
    assert verdicts and all(valid == expected for valid, expected in verdicts)
    assert any(not valid for valid, _ in verdicts), "the tiny model wrote only code"


def test_a_file_without_a_grammar_is_not_gated_and_an_unknown_language_is_refused(
    tmp_path, tiny_model_dir
):
    source = tmp_path / "notes.txt"
    source.write_text("first line\nsecond line\n")
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    proc = run("fill", str(source), "--line", "2", "--col", "3", *model, "--json")
    assert proc.returncode in (0, 3), proc.stderr
    result = json.loads(proc.stdout)
    assert result["parse_gate"] is None
    assert all(c["valid"] for c in result["candidates"])
    proc = run("fill", str(source), "--line", "2", "--col", "3", "--language", "cobol")
    assert proc.returncode == 2
    assert "no grammar for --language 'cobol'" in proc.stderr
    assert "python" in proc.stderr and "Traceback" not in proc.stderr


def test_fill_keeps_the_floors_greedy_fill_where_the_model_would_fall_back(
    tmp_path, tiny_tokenizer
):
    """A model that falls back on the parse check (`fallback_alternatives` in its
    infill.json) still gets the greedy fill from `infill fill`: the gate checks the
    raw middle, whose end may begin the suffix's next line, so a fallback there swapped
    the demo's right line for a worse one (regression)."""
    from conftest import checkpoint, tiny_gemma3

    from infill_engine.model.convert import from_gemma3

    causal = tiny_gemma3(len(tiny_tokenizer), seed=1)
    ids = torch.randint(3, len(tiny_tokenizer), (1, 48))
    converted = from_gemma3(causal, ids, canvas_length=32)
    converted.config.readout_shift = 1
    converted.config.mask_token_id = 3
    model_dir = checkpoint(converted, tiny_tokenizer, tmp_path / "floor-model")
    source = tmp_path / "ex.py"
    source.write_text(EXAMPLE)
    args = ["fill", str(source), "--line", "5", "--col", "12", "--span", "8"]
    fills = []
    for extra in ({}, {"fallback_alternatives": 4}):
        denoise = {"decoding": "floor", "greedy": True} | extra
        (model_dir / "infill.json").write_text(json.dumps({"denoise": denoise}))
        proc = run(*args, "--model", str(model_dir), "--device", "cpu", "--json")
        assert proc.returncode in (0, 3), proc.stderr
        result = json.loads(proc.stdout)
        fills.append((result["text"], [c["text"] for c in result["candidates"]]))
    assert fills[1] == fills[0]
