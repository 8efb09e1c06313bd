from lsp_server.context import InfillContext
from lsp_server.postprocess import (
    NO_PARSE,
    NOTHING,
    clean,
    line_end_fill,
    parsing_fill,
    validator,
)


def ctx(kind, prefix="", suffix="", indent=""):
    return InfillContext(prefix, suffix, 0, 0, kind, indent, (16,))


def test_single_line_stops_at_the_line_break():
    assert clean(ctx("line", suffix="\nnext"), "a + b\nprint(x)") == "a + b"


def test_text_repeating_the_rest_of_the_line_is_dropped():
    assert clean(ctx("expression", suffix=")\n"), "a, b)") == "a, b"
    assert clean(ctx("line", suffix="]:\n"), "x[0]:") == "x[0"


def test_block_lines_repeating_the_suffix_are_dropped():
    text = "total += x\n    return total"
    out = clean(ctx("block", suffix="\n    return total\n", indent="    "), text)
    assert out == "total += x"


def test_block_written_from_column_zero_is_indented_like_its_block():
    out = clean(
        ctx("block", indent="    "), "for x in xs:\n    total += x\nreturn total"
    )
    assert out == "for x in xs:\n        total += x\n    return total"


def test_properly_indented_blocks_and_closers_are_left_alone():
    text = "if (x) {\n    y();\n  }"
    assert clean(ctx("block", indent="  "), text) == text


def test_whitespace_only_is_nothing():
    assert clean(ctx("block"), " \n  \n") == ""


def test_parse_check_prefers_candidates_that_add_no_error():
    c = ctx("line", prefix="x = foo(", suffix=")\n")
    assert validator("python", c)("1, 2")
    assert not validator("python", c)("1, (2")
    assert validator("zig", c)("anything")  # no grammar: no opinion


def test_validator_cleans_raw_engine_text_before_parsing():
    c = ctx("line", prefix="x = foo(", suffix=")\n")
    # a second line would be cut by clean(); only the first line is judged
    assert validator("python", c)("1, 2\n((((")


def test_an_unseen_fill_is_the_first_candidate_that_parses():
    c = ctx("hole", prefix="def first(xs):\n    ", suffix="\n", indent="    ")
    assert parsing_fill("python", c, ["try", "return xs[0]"]) == ("return xs[0]", "")
    assert parsing_fill("python", c, ["try", "while"]) == ("", NO_PARSE)
    assert parsing_fill("python", c, [" ", ""]) == ("", NOTHING)
    assert parsing_fill("zig", c, ["try"]) == ("try", "")  # no grammar: no opinion


def test_at_a_line_end_a_line_must_leave_its_statement_parsing():
    """`x + 1 +` adds no error to a hole that already had one on its line, so the
    plain check passes it; at a line end it must leave none there."""
    c = ctx("line", prefix="def f(x):\n    y = x + ", suffix="\n    return y\n")
    for broken in ("1 +", "["):
        assert validator("python", c)(broken)
        assert not validator("python", c, line_end=True)(broken)
    assert validator("python", c, line_end=True)("1")


def test_the_line_end_check_ignores_errors_elsewhere_in_the_context():
    c = ctx(
        "line",
        prefix="def g(:\n    pass\n\n\ndef f(x):\n    y = ",
        suffix="\n    return y\n",
    )
    assert validator("python", c, line_end=True)("x + 1")
    assert not validator("python", c, line_end=True)("x +")


def test_a_line_end_shows_a_passing_line_a_cut_of_one_or_nothing():
    c = ctx("line", prefix="y = f(", suffix="\n    b)\nz = 1\n")
    passes = validator("python", c, line_end=True)
    # the first candidate that passes, skipping one that cleans to nothing
    assert line_end_fill(passes, c, [" ", "a,", "a, c,"]) == "a,"
    # none passes whole: cut where the suffix takes over (`b)` is already below)
    assert line_end_fill(passes, c, ["a, b)", "a + b)"]) == "a,"
    # no cut passes either: nothing, rather than a line that breaks the code
    assert line_end_fill(passes, c, ["((", ")))"]) == ""
    assert line_end_fill(validator("zig", c, True), c, ["(("]) == "(("


def test_a_window_begun_inside_a_docstring_still_gets_its_line():
    """A context window that starts inside a docstring parses as one error around
    the cursor whatever the line holds; the line-end check then says only what the
    plain one says, instead of rejecting every line (regression: in a long file,
    every keystroke after such a cut was left without a suggestion)."""
    head = (
        'for two inputs:\n\n>>> x = [1, 2, 3]\n"""\n\nimport math\n\n\n'
        'def g(data):\n    """Return the mean of data.\n\n    >>> g([1, 2])\n'
        '    1.5\n    """\n    return sum(data)\n\n\n'
    )
    c = ctx(
        "line",
        prefix=head + "def f(x):\n    y = ",
        suffix='\n    return y\n\n\ndef h(x):\n    """Return x."""\n    return x\n',
    )
    assert validator("python", c, line_end=True)("x + 1")
