"""Token healing: the prefix's last token is left off the canvas and the first span
slot rewrites it."""

import pytest
from test_engine import scripted

from infill_engine import InfillEngine, InfillRequest
from infill_engine.core.healing import TokenHealing, unheal
from infill_engine.model.device import resolve

PREFIX = "def add(a, b):\n    ret"
REQUEST = InfillRequest(prefix=PREFIX, suffix="\n\nprint(add(1, 2))\n")


@pytest.fixture
def healing(tiny_tokenizer):
    return TokenHealing(tiny_tokenizer, len(tiny_tokenizer))


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    return InfillEngine(
        tiny_model,
        tiny_tokenizer,
        resolve("cpu"),
        span_lengths=(8, 16),
        heal_last_token=True,
    )


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_a_word_piece_is_left_off_and_the_rest_is_kept(healing, tiny_tokenizer):
    ids = encode(tiny_tokenizer, PREFIX)
    kept, healed = healing.heal(ids)
    assert kept == ids[:-1]
    assert healed and PREFIX.endswith(healed)
    assert tiny_tokenizer.decode(kept) + healed == PREFIX


@pytest.mark.parametrize("prefix", ["if x:\n", "x = 1\n    ", ""])
def test_a_line_break_is_never_healed(healing, tiny_tokenizer, prefix):
    ids = encode(tiny_tokenizer, prefix)
    if ids and "\n" not in tiny_tokenizer.decode(ids[-1:]):
        ids = ids + encode(tiny_tokenizer, "\n")  # end on a token with the break
    assert healing.heal(ids) == (ids, "")


@pytest.mark.parametrize("prefix", ["x = foo(", "x = ", "total = values[", "a.b"])
def test_a_space_or_a_sign_is_healed_too(healing, tiny_tokenizer, prefix):
    # `x = |foo`: the prefix ends in a space the tokenizer joins to the next word
    ids = encode(tiny_tokenizer, prefix)
    kept, healed = healing.heal(ids)
    assert kept == ids[:-1] and healed == tiny_tokenizer.decode(ids[-1:])
    assert tiny_tokenizer.decode(kept) + healed == prefix


def test_allowed_tokens_start_with_the_healed_text(healing, tiny_tokenizer):
    ids = encode(tiny_tokenizer, PREFIX)
    _, healed = healing.heal(ids)
    allowed = healing.allowed(healed)
    assert allowed[ids[-1]]  # the token it replaces is always among them
    texts = [tiny_tokenizer.decode([i]) for i in range(len(tiny_tokenizer))]
    assert allowed.tolist() == [t.startswith(healed) for t in texts]
    assert healing.allowed("").all()


def test_unheal_strips_only_the_healed_text():
    assert unheal("return a", "ret") == "urn a"
    assert unheal("x + 1", "ret") == "x + 1"


def test_the_fill_is_what_follows_the_healed_text(engine, tiny_tokenizer):
    healed = engine.plan(REQUEST).healed
    assert healed and PREFIX.endswith(healed)
    # The model "knows" the middle as written after the prefix without its last token.
    middle = healed + "urn a + b"
    assert engine.healing.texts[encode(tiny_tokenizer, middle)[0]].startswith(healed)
    scripted(engine, REQUEST, [middle, middle])
    assert engine.fill(REQUEST).text == "urn a + b"


def test_without_healing_the_canvas_keeps_the_whole_prefix(engine):
    healed = engine.plan(REQUEST)
    engine.heal_last_token, engine._last_plan = False, None
    plain = engine.plan(REQUEST)
    assert plain.healed == ""
    assert plain.span_start == healed.span_start + 1


def test_the_first_slot_only_holds_a_token_that_starts_with_the_healed_text(engine):
    # The model "wants" a first token that does not start with the healed text.
    scripted(engine, REQUEST, ["x + 1", "x + 1"])
    batch = engine.plan(REQUEST)
    firsts: list[int] = []

    def first_slot(view):
        firsts.extend(view.argmax[:, batch.span_start].tolist())

    engine.fill(REQUEST, on_step=first_slot)
    assert firsts
    texts = engine.healing.texts
    assert all(texts[i].startswith(batch.healed) for i in firsts), [
        texts[i] for i in firsts
    ]


@pytest.mark.parametrize("prefix", ["r", "", "\n", "é", "数据 = da"])
def test_short_and_non_ascii_prefixes_fill(engine, prefix):
    request = InfillRequest(prefix, "\n")
    batch = engine.plan(request)
    assert prefix.endswith(batch.healed)
    result = engine.fill(request)
    assert result.steps > 0 and not result.cancelled


def test_token_texts_are_the_tokenizers_own_decode(healing, tiny_tokenizer):
    """The fast table is what `batch_decode` gives, token for token."""
    ids = [[i] for i in range(len(tiny_tokenizer))]
    assert healing.texts == tiny_tokenizer.batch_decode(ids, skip_special_tokens=True)
