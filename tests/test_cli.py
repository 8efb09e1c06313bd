"""`infill fill` as a user runs it: a real process on a saved tiny checkpoint."""

import subprocess
import sys

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
