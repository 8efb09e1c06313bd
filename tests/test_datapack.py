"""The training data pack, adapters limited to the floor's rows, and the GPU run's CPU
rehearsal (`gpu_run --smoke`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from infill_engine.core import rows
from infill_engine.data.corpus import SourceFile
from infill_engine.data.neardup import NearDuplicates
from infill_engine.model.lora import add_adapter, load_adapter, save_adapter
from infill_engine.training import datapack, gpu_run, train

ROOT = Path(__file__).resolve().parent.parent


def _sources() -> list[SourceFile]:
    paths = sorted((ROOT / "infill_engine" / "core").glob("*.py"))
    return [
        SourceFile(
            str(p.relative_to(ROOT)), "infill_engine", "Apache-2.0", p.read_text()
        )
        for p in paths
        if len(p.read_text()) > 2000
    ]


def _near_copy(text: str) -> str:
    """A vendored copy: a new header line, one name changed."""
    return "# vendored copy\n" + text.replace("def ", "def  ", 1)


def test_near_duplicates_are_found_and_other_files_are_not():
    files = _sources()
    index = NearDuplicates()
    for file in files:
        assert index.add(file.origin, file.text) is None
    assert index.find(_near_copy(files[0].text)) == files[0].origin
    assert index.find("x = 1\n" * 3) is None
    unrelated = "\n".join(f"value_{i} = compute({i}, {i * 7})" for i in range(80))
    assert index.find(unrelated) is None


@pytest.fixture(scope="module")
def built(tiny_tokenizer, tmp_path_factory):
    files = _sources()
    heldout, train_files = files[:2], files[2:]
    extra = [
        SourceFile("copy/of_heldout.py", "copy", "MIT", _near_copy(heldout[0].text)),
        SourceFile("copy/of_train.py", "copy", "MIT", _near_copy(train_files[0].text)),
    ]
    out = tmp_path_factory.mktemp("pack")
    manifest = datapack.build(
        train_files + extra, heldout, tiny_tokenizer, out, show_progress=False
    )
    return manifest, datapack.DataPack.load(out), train_files, out


def test_the_pack_holds_each_file_token_for_token(built, tiny_tokenizer):
    manifest, pack, train_files, _ = built
    assert (
        pack.files("train") == len(train_files) == manifest["splits"]["train"]["files"]
    )
    offsets, tokens = pack.arrays["train_offsets"], pack.arrays["train_tokens"]
    assert tokens.dtype == np.uint16
    for number, file in enumerate(train_files):
        ids = tokens[offsets[number] : offsets[number + 1]].tolist()
        assert tiny_tokenizer.decode(ids) == file.text


def test_near_copies_of_held_out_and_training_files_are_dropped(built):
    manifest, *_ = built
    assert manifest["dropped"]["near a held-out file"] == 1
    assert manifest["dropped"]["near another training file"] == 1
    packages = {s["package"] for s in manifest["sources"]}
    assert packages == {"infill_engine"}


def test_planned_holes_start_at_the_token_a_cut_falls_in(built, tiny_tokenizer):
    _, pack, train_files, _ = built
    holes = pack.arrays["train_holes"]
    assert len(holes) >= len(train_files)
    offsets = pack.arrays["train_offsets"]
    for number, first, last, kind in holes.tolist():
        length = offsets[number + 1] - offsets[number]
        assert 0 <= first < last <= length
        assert last - first <= datapack.LONGEST_MIDDLE and 0 <= kind < 4
    # A line hole cut inside a token starts at that token (the engine heals it).
    text = "value = compute_total(alpha, beta)\nnext_line = 1\n" * 40
    enc = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [a for a, _ in enc["offset_mapping"]]
    planned = datapack.plan_holes(text, starts, "python", random.Random(3))
    assert planned
    for first, last, _ in planned:
        assert tiny_tokenizer.decode(enc["input_ids"][first:last]).strip()
        assert first == 0 or starts[first] <= len(text)


def test_examples_from_the_pack_hold_the_holes_tokens(built, tiny_tokenizer):
    _, pack, *_ = built
    ids = train.Ids(
        tiny_tokenizer.bos_token_id,
        tiny_tokenizer.pad_token_id,
        tiny_tokenizer.eos_token_id,
    )
    stream = pack.examples("train", ids, 64, random.Random(0), (1, 16), 1, (8, 16, 32))
    for _ in range(20):
        example = next(stream)
        span = example.target[example.span_mask].tolist()
        assert span and example.prompt_ids[0] == tiny_tokenizer.bos_token_id
        middle = [t for t in span if t != tiny_tokenizer.eos_token_id]
        assert middle, "a planned hole is never empty"


def test_a_missing_or_torn_pack_is_a_clear_error(built, tmp_path):
    with pytest.raises(FileNotFoundError, match="build it with"):
        datapack.DataPack.load(tmp_path)
    _, _, _, out = built
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "manifest.json").write_text((out / "manifest.json").read_text())
    (torn / "pack.npz").write_bytes((out / "pack.npz").read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable data pack"):
        datapack.DataPack.load(torn)


def test_an_adapter_limited_to_rows_leaves_the_other_rows_the_bases(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer)
    layer = model.model.decoder.layers[0].mlp.up_proj
    x = torch.randn(2, 6, layer.in_features)
    base = layer(x)
    adapters = add_adapter(model, 4, 8.0)
    lora = adapters["layers.0.mlp.up_proj"]
    with torch.no_grad():
        lora.lora_b.normal_()
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 3:] = True
    with rows.adapter_rows(mask):
        limited = lora(x)
    assert torch.equal(limited[~mask], base[~mask])
    assert not torch.allclose(limited[mask], base[mask])
    assert torch.allclose(limited[mask], lora(x)[mask])
    with rows.without_adapter():
        assert torch.equal(lora(x), base)
    with rows.adapter_rows(mask), pytest.raises(ValueError, match="do not fit"):
        lora(torch.randn(2, 5, layer.in_features))


def test_floor_rows_are_the_noise_and_the_suffix():
    span = torch.tensor([[0, 0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    noised = torch.tensor([[0, 0, 1, 0, 1, 0, 0]], dtype=torch.bool)
    assert train.floor_rows(span, noised).int().tolist() == [[0, 0, 1, 0, 1, 1, 1]]


def test_a_floor_step_leaves_the_prompt_and_the_prefix_rows_to_the_base(tiny_tokenizer):
    """Limited to no row, the adapter changes nothing, prompt included: the loss is
    the base's. Limited to the floor's rows, it acts and gets gradients."""
    model = build_tiny_model(tiny_tokenizer)
    model.config.readout_shift = 1
    adapters = add_adapter(model, 4, 8.0)
    with torch.no_grad():
        for lora in adapters.values():
            lora.lora_b.normal_(0, 0.1)
    rng = random.Random(0)
    text = (ROOT / "infill_engine" / "core" / "canvas.py").read_text()
    files = [SourceFile("canvas.py", "x", "MIT", text)]
    stream = train.batches(
        train.examples(files, tiny_tokenizer, 64, rng, (16,), 1, (8, 16)), 2
    )
    batch = next(stream)
    gen = torch.Generator().manual_seed(0)
    noisy, noised = train.add_noise(batch, len(tiny_tokenizer), gen, 1.0, 5)
    mask = train.floor_rows(batch.span_mask, noised)
    loss = train.span_loss(model, batch, noisy, noised, False, gen, 0.0, False, mask)
    with torch.no_grad():
        with rows.without_adapter():
            base = train.span_loss(model, batch, noisy, noised, False, gen, 0.0, False)
        nothing = torch.zeros_like(mask)
        none = train.span_loss(
            model, batch, noisy, noised, False, gen, 0.0, False, nothing
        )
        merged = train.span_loss(model, batch, noisy, noised, False, gen, 0.0, False)
    assert torch.equal(none, base)
    assert not torch.isclose(loss, base) and not torch.isclose(merged, loss)
    loss.backward()
    assert any(lora.lora_b.grad is not None for lora in adapters.values())


def test_split_pieces_join_to_the_file(tmp_path):
    whole = tmp_path / "adapter.safetensors"
    whole.write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "out"
    out.mkdir()
    parts = gpu_run.split_for_transfer(whole, out, piece=3000)
    assert len(parts) == 4 and all(p.stat().st_size <= 3000 for p in parts)
    assert b"".join(p.read_bytes() for p in sorted(parts)) == whole.read_bytes()
    assert gpu_run.split_for_transfer(whole, out) == [out / "adapter.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors"]


def test_load_adapter_refuses_another_models_adapter(tiny_tokenizer, tmp_path):
    model = build_tiny_model(tiny_tokenizer)
    adapters = add_adapter(model, 4, 8.0)
    path = tmp_path / "a.safetensors"
    save_adapter(adapters, path, {"tokens_seen": 7})
    assert load_adapter(adapters, path) == {"tokens_seen": 7}
    other = add_adapter(build_tiny_model(tiny_tokenizer), 2, 4.0)
    with pytest.raises(ValueError, match="model's"):
        load_adapter(other, path)


def test_the_gpu_run_rehearses_end_to_end_and_resumes(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    common = ["--smoke", "--out", str(out), "--work", str(work)]
    first = gpu_run.main(
        [*common, "--minutes", "0.2", "--after-minutes", "0.05", "--rank", "4"]
    )
    assert first["stopped"] == "deadline" and first["steps"] > 0
    assert first["resumed_from"] == "zero"
    losses = first["heldout_span_loss"]
    assert losses["resumed"] == losses["base"]  # from zero: the base itself
    for name in ("adapter.safetensors", "log.tsv", "run.log", "summary.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["steps"] == first["steps"]
    second = gpu_run.main([*common, "--minutes", "0.1", "--after-minutes", "0.05"])
    assert second["resumed_from"] == f"checkpoint at step {first['steps']}"
    assert second["steps"] > first["steps"]
    assert second["heldout_span_loss"]["resumed"] == losses["new"]
    # The rank comes from what is resumed; another one is refused before any work.
    from safetensors import safe_open

    with safe_open(str(out / "adapter.safetensors"), framework="pt") as handle:
        key = next(k for k in handle.keys() if k.endswith(".lora_a"))
        assert handle.get_slice(key).get_shape()[0] == 4
    # A pack tokenised with another vocabulary is refused.
    manifest = work / "pack" / "manifest.json"
    kept = manifest.read_text()
    changed = json.loads(kept) | {"tokenizer_sha256": "0" * 64}
    manifest.write_text(json.dumps(changed))
    with pytest.raises(SystemExit, match="another vocabulary"):
        gpu_run.main([*common, "--minutes", "0.1"])
    manifest.write_text(kept)
    shipped = work / "shipped.safetensors"
    (out / "adapter.safetensors").replace(shipped)
    (work / "checkpoint.pt").unlink()
    with pytest.raises(SystemExit, match="has rank 4"):
        gpu_run.main([*common, "--minutes", "0.1", "--rank", "8"])


def test_vocab_coverage_counts_the_tokens_the_kept_table_drops(
    tiny_tokenizer, tmp_path
):
    from dataclasses import asdict

    from infill_engine.evals import vocab_coverage

    (tmp_path / "corpus").mkdir()
    texts = {"heldout": "def f(x):\n    return x\n", "polyglot": "let x = 1;\n"}
    for split in vocab_coverage.SPLITS:
        origin = "pkg/a.ts" if split == "polyglot" else "pkg/a.py"
        file = SourceFile(origin, "pkg", "MIT", texts.get(split, "x = 1\n"))
        (tmp_path / "corpus" / f"{split}.jsonl").write_text(json.dumps(asdict(file)))
    ids = tiny_tokenizer(texts["polyglot"], add_special_tokens=False)["input_ids"]
    kept = set(range(len(tiny_tokenizer))) - {ids[0]}
    counts = vocab_coverage.coverage(tiny_tokenizer, kept, tmp_path, 1)
    assert counts["polyglot/typescript"] == (len(ids), ids.count(ids[0]))
    assert counts["heldout/python"][1] == 0


def test_kept_vocabulary_scores_weigh_each_language_alike(built, tiny_tokenizer):
    from infill_engine.training import keptvocab

    _, pack, train_files, _ = built
    scores, counted = keptvocab.language_scores(pack, tiny_tokenizer, tiny_tokenizer)
    assert counted == {"python": int(pack.arrays["train_offsets"][-1])}
    assert abs(sum(scores.values()) - 1.0) < 1e-9  # one language: shares sum to 1
    common = max(scores, key=scores.__getitem__)
    text = "".join(f.text for f in train_files)
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(common) == max(ids.count(i) for i in set(ids))
