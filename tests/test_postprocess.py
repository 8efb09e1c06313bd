from lsp_server.context import InfillContext
from lsp_server.postprocess import NO_PARSE, NOTHING, clean, parsing_fill, validator


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
