import pytest

from lsp_server import context
from lsp_server.documents import Snapshot
from lsp_server.syntax import parse


def snap(text: str, language: str = "python") -> Snapshot:
    return Snapshot("file:///t", 1, language, text)


def kind_at(text: str, marker: str = "|", language: str = "python") -> str:
    offset = text.index(marker)
    text = text.replace(marker, "", 1)
    return context.span_kind(snap(text, language), offset, parse(language, text))


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("x = foo(|a, b)\n", "line"),  # text after the cursor: complete up to it
        ("def f():\n    |\n", "block"),  # blank line in a body: multi-line
        ("def f():|\n", "block"),  # after a block opener
        ("x = foo(a, |\n", "expression"),  # open bracket
        ("x = foo(a|)\n", "expression"),  # only a closer after the cursor
        ("total = |\n", "line"),
        ("if (x) {|\n", "block"),
    ],
)
def test_span_kind(text, kind):
    assert kind_at(text, language="javascript" if "{" in text else "python") == kind


def test_prefix_is_cut_at_a_statement_boundary_nearest_the_cursor():
    funcs = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400))
    text = funcs + "def g():\n    "
    s = snap(text)
    ctx = context.at_cursor(s, len(text), parse("python", text))
    assert ctx.prefix.startswith("def f") and len(ctx.prefix) <= context.PREFIX_CHARS
    assert text.endswith(ctx.prefix)
    assert ctx.kind == "block" and ctx.indent == "    "


def test_suffix_is_cut_at_a_statement_end():
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200))
    text = "x = 1\n" + body
    ctx = context.at_cursor(snap(text), 0, parse("python", text))
    assert text.startswith(ctx.suffix)
    assert ctx.suffix.rstrip().endswith(tuple(f"+ {i}" for i in range(200)))
    assert len(ctx.suffix) <= context.SUFFIX_CHARS


@pytest.mark.parametrize("language", ["javascript", "go", "rust", "typescript", "zig"])
def test_other_languages_get_context_too(language):
    text = "\n".join(f"// line {i}" for i in range(3000)) + "\nlet x = "
    ctx = context.at_cursor(snap(text, language), len(text), parse(language, text))
    assert text.endswith(ctx.prefix) and ctx.prefix.startswith("// line")
    assert len(ctx.prefix) <= context.PREFIX_CHARS


def test_one_huge_line_is_cut_inside_it():
    text = "x=" + "1+" * 100_000
    ctx = context.at_cursor(snap(text, "javascript"), len(text), None)
    assert context.PREFIX_CHARS - context.PREFIX_STEP < len(ctx.prefix)
    assert len(ctx.prefix) <= context.PREFIX_CHARS


def test_prefix_start_stays_put_while_typing_at_the_cursor():
    funcs = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400))
    line = "def g(values):\n    return sorted(values, key=len)[: limit * 2]"
    starts = set()
    for n in range(len(line) + 1):
        text = funcs + line[:n]
        ctx = context.at_cursor(snap(text), len(text), parse("python", text))
        assert text.endswith(ctx.prefix)
        starts.add(len(text) - len(ctx.prefix))
    assert len(starts) <= 2  # it moves only when the cursor enters a new grid cell


def test_holes_are_found_in_comments_only():
    text = (
        "def f():\n"
        "    # <fill> parse the header\n"
        "    s = '# <fill> in a string'\n"
        "    #<fill>\n"
    )
    holes = context.find_holes(snap(text), parse("python", text), "<fill>")
    assert [(text[h.start : h.end], h.hint) for h in holes] == [
        ("# <fill> parse the header", "parse the header"),
        ("#<fill>", ""),
    ]
    js = "function f() {\n  // <fill> add them\n}\n"
    assert context.find_holes(snap(js, "javascript"), parse("javascript", js), "<fill>")


def test_a_hint_stays_as_a_comment_the_fill_begins_with():
    text = "def f():\n    # <fill> add one\n"
    s = snap(text)
    hole = context.find_holes(s, None, "<fill>")[0]
    ctx = context.for_hole(s, hole, None)
    assert ctx.header == "# add one\n    "
    assert ctx.prefix.endswith("def f():\n    # add one\n    ")
    assert ctx.suffix == "\n" and ctx.kind == "hole"


def test_selection_context_pins_both_sides():
    text = "a = 1\nb = compute(a)\nc = 3\n"
    start, end = text.index("compute"), text.index("\nc")
    ctx = context.for_range(snap(text), start, end, None)
    assert ctx.prefix == "a = 1\nb = " and ctx.suffix == "\nc = 3\n"
    assert ctx.kind == "selection" and len(ctx.span_lengths) == 2
