"""The line-fill comparison's holes and scoring, with fillers of known answers."""

from __future__ import annotations

from infill_engine.data.corpus import SourceFile
from infill_engine.evals.compare import first_line, line_holes, score

SOURCE = """def mean(values):
    total = sum(values)
    return total / len(values)


def spread(values):
    return max(values) - min(values)
"""


def _files() -> list[SourceFile]:
    return [SourceFile("x.py", "x", "MIT", SOURCE), SourceFile("y.py", "y", "MIT", "(")]


def test_holes_come_from_files_that_parse_and_rebuild_them():
    holes = line_holes(_files(), 20, seed=1)
    assert len(holes) == 20
    for hole in holes:
        assert hole.prefix + hole.middle + hole.suffix == SOURCE
        assert hole.middle.strip() and "\n" not in hole.middle


def test_score_counts_exact_parsed_and_empty_fills():
    holes = line_holes(_files(), 10, seed=2)
    right = score(holes, lambda h, _: h.middle + "\nextra line")
    assert right["exact_match"] == 1.0 and right["parses"] == 1.0
    assert right["empty"] == 0.0
    assert right["parses_shown"] == 1.0
    empty = score(holes, lambda h, _: "\n" + h.middle)
    assert empty["exact_match"] == 0.0 and empty["empty"] == 1.0
    broken = score(holes, lambda h, _: h.middle + " ((")
    assert broken["exact_match"] == 0.0 and broken["parses"] == 0.0
    # half empty, half right: every line shown parses, half of all holes do
    halves = score(holes, lambda h, _: h.middle if holes.index(h) % 2 else "")
    assert halves["empty"] == 0.5 and halves["parses_shown"] == 1.0


def test_first_line_is_what_lands_on_the_cursors_line():
    assert first_line("x + 1  \ny") == "x + 1"
    assert first_line("\nfoo") == ""


class _Preferring:
    """A causal model that ranks the vocabulary the same way at every position:
    `first` on the first forward, a line break after it."""

    def __init__(self, vocab: int, first: dict[int, float], newline: int):
        import torch

        self.torch = torch
        self.vocab, self.first, self.newline, self.calls = vocab, first, newline, 0
        self.config = type(
            "C", (), {"get_text_config": lambda c: c, "vocab_size": vocab}
        )()

    def __call__(self, input_ids, logits_to_keep=1, cache=None):
        logits = self.torch.zeros(1, 1, self.vocab)
        if self.calls == 0:
            for token, value in self.first.items():
                logits[0, 0, token] = value
        else:
            logits[0, 0, self.newline] = 10.0
        self.calls += 1
        return type("Out", (), {"logits": logits, "past_key_values": None})()


def test_the_healed_baseline_rewrites_the_prefix_s_last_token(tiny_tokenizer):
    from infill_engine.core.healing import TokenHealing
    from infill_engine.data.holes import Hole
    from infill_engine.evals.compare import left_to_right_filler

    tok = tiny_tokenizer
    hole = Hole("def f(values):\n    ret", "urn values", "\n", "line")
    ids = tok(hole.prefix, add_special_tokens=False)["input_ids"]
    healing = TokenHealing(tok, len(tok))
    _, healed = healing.heal(ids)
    longer = max(
        (
            i
            for i, t in enumerate(healing.texts)
            if t.startswith(healed) and t != healed
        ),
        key=lambda i: len(healing.texts[i]),
    )
    paren = tok.convert_tokens_to_ids("(")
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    first = {paren: 9.0, longer: 5.0}  # "(" wins unless it may not come first

    def fill(heal: bool) -> str:
        model = _Preferring(len(tok), first, newline)
        return first_line(left_to_right_filler(model, tok, 64, heal)(hole))

    assert fill(heal=False) == "("
    assert fill(heal=True) == healing.texts[longer][len(healed) :]


def test_the_polyglot_set_shares_its_holes_among_languages_and_parses_each(tmp_path):
    import json

    from infill_engine.evals import polyglot
    from infill_engine.evals.compare import parse_check, set_holes

    go = "package main\n\nfunc add(a int, b int) int {\n\treturn a + b\n}\n"
    rust = "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"
    files = [
        SourceFile("p/add.go", "p", "MIT", go),
        SourceFile("q/lib.rs", "q", "MIT", rust),
        SourceFile("q/tests/it.rs", "q", "MIT", rust),  # a test file: not in the set
    ]
    (tmp_path / "corpus").mkdir()
    with (tmp_path / "corpus" / "polyglot.jsonl").open("w") as out:
        for f in files:
            out.write(json.dumps(f.__dict__) + "\n")
    drawn = set_holes(tmp_path, "polyglot", 6, seed=3)
    assert len(drawn) == 6
    languages = [lang for _, lang in drawn]
    assert languages.count("go") == languages.count("rust") == 3
    for hole, language in drawn:
        assert ("func add" in hole.prefix + hole.middle + hole.suffix) == (
            language == "go"
        )
        check = parse_check(language)
        assert check(hole.prefix + hole.middle + hole.suffix)
        assert not check(hole.prefix + " (((" + hole.suffix)
    assert polyglot.language_of("x/a.d.ts") is None
    assert polyglot.language_of("x/a_test.go") is None
    assert polyglot.language_of("x/src/a.ts") == "typescript"
    assert not polyglot.parses("go", "func (")
