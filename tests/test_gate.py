"""When automatic ghost text stays quiet: comments, strings, a long rest of the line,
per-language switches; parsed with the real grammars."""

import pytest

from lsp_server import context, gate, postprocess
from lsp_server.documents import Snapshot
from lsp_server.settings import Settings, parse
from lsp_server.syntax import parse as parse_tree


def quiet_at(text: str, language: str = "python", **settings) -> str | None:
    """`gate.quiet` at the `|` in `text`."""
    offset = text.index("|")
    text = text.replace("|", "", 1)
    snap = Snapshot("file:///t", 1, language, text)
    return gate.quiet(Settings(**settings), snap, offset, parse_tree(language, text))


@pytest.mark.parametrize(
    "text, language",
    [
        ("x = 1  # the mean of|\ny = 2\n", "python"),
        ("x = 1  # note|", "python"),
        ("def f():\n    '''Return the|'''\n", "python"),
        ("s = 'abc|'\n", "python"),
        ('s = f"value {x} and|"\n', "python"),
        ("let a = 1; // why|\n", "typescript"),
        ("/* a block| */\nlet a = 1;\n", "javascript"),
        ("const s = `template ${x} te|`;\n", "typescript"),
        ('fmt.Println("hello|")\n', "go"),
        ('fn main() { let s = "hi|"; }\n', "rust"),
        ('fn main() { let s = r#"raw|"#; }\n', "rust"),
    ],
)
def test_comments_and_strings_are_quiet(text, language):
    assert quiet_at(text, language) is not None
    assert quiet_at(text, language, in_comments_and_strings=True) is None


@pytest.mark.parametrize(
    "text, language",
    [
        ("x = 1  # note\nvalue = |\n", "python"),
        ("s = 'abc'|\n", "python"),
        ("s = 'abc' + |\n", "python"),
        ("/* a block */|\nlet a = 1;\n", "javascript"),
        ("/* a block */ let b = |;\n", "javascript"),
        ("def f():\n    '''Doc.'''\n    return |\n", "python"),
        ('x := "go"\ny := |\n', "go"),
        ("|", "python"),
    ],
)
def test_code_next_to_comments_and_strings_is_not(text, language):
    assert quiet_at(text, language) is None


def test_a_long_rest_of_the_line_is_quiet_a_short_one_is_not():
    assert quiet_at("total = compute(|)\n") is None
    assert quiet_at("total = |compute(values, weights)\n") is not None
    assert quiet_at("total = |compute(values, weights)\n", max_line_suffix=40) is None
    assert quiet_at("total = |     \n", max_line_suffix=0) is None  # spaces only


def test_a_language_without_a_grammar_is_gated_on_the_line_alone():
    assert quiet_at("# a comment|\n", "plaintext") is None
    assert quiet_at("a |long rest of the line\n", "plaintext") is not None


def test_languages_are_switched_off_one_by_one():
    s, problems = parse({"disabledLanguages": ["markdown"]})
    assert not problems
    assert s.serves("python") and not s.serves("markdown")
    s, _ = parse(
        {"languages": ["python", "markdown"], "disabledLanguages": ["markdown"]}
    )
    assert s.serves("python") and not s.serves("markdown") and not s.serves("go")


def test_gating_settings_are_checked():
    s, problems = parse({"maxLineSuffix": -1, "inCommentsAndStrings": "yes"})
    assert len(problems) == 2
    assert s.max_line_suffix == 8 and s.in_comments_and_strings is False


def test_the_next_line_context_inserts_after_a_line_break():
    text = "def mean(xs):\n    total = sum(xs)\n    return total / len(xs)\n"
    offset = text.index("sum(xs)") + len("sum(xs)")
    snap = Snapshot("file:///t", 1, "python", text)
    ctx = context.next_line(snap, offset, parse_tree("python", text))
    assert ctx.prefix.endswith("total = sum(xs)\n") and ctx.header == "\n"
    assert ctx.suffix.startswith("\n    return") and ctx.single_line
    assert postprocess.clean(ctx, "    count = len(xs)\n") == "    count = len(xs)"
    # the line that follows already, written again, is no suggestion
    assert postprocess.clean(ctx, "    return total / len(xs)\n") == ""
