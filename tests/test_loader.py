"""A missing, partial or corrupt model directory gives one clear error."""

import json
import os
import platform
import resource
import shutil
from pathlib import Path

import pytest

from infill_engine import ModelLoadError
from infill_engine.model import loader
from infill_engine.model.device import cpu_dtype
from infill_engine.model.loader import load

CPU_DTYPE = str(cpu_dtype()).removeprefix("torch.")  # what this machine runs on


@pytest.fixture
def broken(tmp_path, tiny_model_dir):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def expect_error(path, pattern):
    with pytest.raises(ModelLoadError, match=pattern):
        load(str(path), device="cpu")


def test_missing_directory(tmp_path):
    expect_error(tmp_path / "nope", "not found")


def test_empty_directory(tmp_path):
    expect_error(tmp_path, "no config.json")


def test_truncated_weights(broken):
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    expect_error(broken, "truncated or corrupt")


def test_missing_weights(broken):
    (broken / "model.safetensors").unlink()
    expect_error(broken, "no weights")


def test_config_not_json(broken):
    (broken / "config.json").write_text("{not json")
    expect_error(broken, "not valid JSON")


def test_other_model_type(broken):
    config = json.loads((broken / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (broken / "config.json").write_text(json.dumps(config))
    expect_error(broken, "'llama' model")


def test_missing_tokenizer(broken):
    (broken / "tokenizer.json").unlink()
    expect_error(broken, "no tokenizer")


def test_unknown_device(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="device must be one of"):
        load(str(tiny_model_dir), device="tpu")


def test_good_directory_loads(tiny_model_dir):
    loaded = load(str(tiny_model_dir), device="cpu")
    assert loaded.placement.describe() == f"cpu/{CPU_DTYPE}"
    assert not loaded.model.training


def test_engine_defaults_shipped_beside_the_checkpoint(broken):
    from infill_engine import InfillEngine

    (broken / "infill.json").write_text('{"max_prompt_tokens": 48}')
    engine = InfillEngine.load(str(broken), device="cpu")
    assert engine.max_prompt_tokens == 48
    assert (
        InfillEngine.load(str(broken), "cpu", max_prompt_tokens=7).max_prompt_tokens
        == 7
    )
    (broken / "infill.json").write_text('{"max_prompt_tokenz": 48}')
    expect_error(broken, "is not one of")


def test_token_healing_is_a_setting_shipped_beside_the_checkpoint(broken):
    from infill_engine import InfillEngine, InfillRequest

    request = InfillRequest("def add(a, b):\n    ret", "\n")
    assert not InfillEngine.load(str(broken), device="cpu").plan(request).healed
    (broken / "infill.json").write_text('{"heal_last_token": true}')
    engine = InfillEngine.load(str(broken), device="cpu")
    assert engine.heal_last_token and engine.plan(request).healed
    (broken / "infill.json").write_text('{"heal_last_token": "yes"}')
    expect_error(broken, "is not one of")


def test_denoise_defaults_shipped_beside_the_checkpoint(broken):
    from infill_engine import InfillEngine

    (broken / "infill.json").write_text(
        '{"denoise": {"max_steps": 6, "schedule": "linear"}}'
    )
    engine = InfillEngine.load(str(broken), device="cpu")
    assert (engine.config.max_steps, engine.config.schedule) == (6, "linear")
    assert engine.config.entropy_bound == 0.1  # untouched fields keep their defaults
    (broken / "infill.json").write_text('{"denoise": {"schedule": "cosine"}}')
    expect_error(broken, "'denoise': schedule must be one of")
    (broken / "infill.json").write_text('{"denoise": {"stepz": 3}}')
    expect_error(broken, "'denoise'")


def test_cpu_dtype_follows_the_processor_unless_overridden(monkeypatch):
    import torch

    from infill_engine.model.device import resolve

    monkeypatch.setenv("INFILL_CPU_DTYPE", "float32")
    assert resolve("cpu").dtype == torch.float32
    monkeypatch.setenv("INFILL_CPU_DTYPE", "bfloat16")
    assert resolve("cpu").dtype == torch.bfloat16
    monkeypatch.setenv("INFILL_CPU_DTYPE", "float8")
    with pytest.raises(ValueError, match="INFILL_CPU_DTYPE must be one of"):
        resolve("cpu")
    monkeypatch.delenv("INFILL_CPU_DTYPE")
    for amx, avx512_bf16, prefer, dtype in [
        (False, False, False, torch.float32),
        (True, False, False, torch.bfloat16),
        (False, True, False, torch.float32),  # AVX-512 BF16 alone: float32, for memory
        (False, True, True, torch.bfloat16),  # unless the checkpoint prefers bf16
        (False, False, True, torch.float32),  # no bf16 dot products: never
    ]:
        cpu = torch.cpu
        monkeypatch.setattr(cpu, "_is_amx_tile_supported", lambda a=amx: a)
        monkeypatch.setattr(cpu, "_is_avx512_bf16_supported", lambda b=avx512_bf16: b)
        assert resolve("cpu", prefer_bf16=prefer).dtype == dtype


def test_a_checkpoint_that_prefers_bf16_loads_in_bf16_where_the_cpu_has_it(
    monkeypatch, broken
):
    import torch

    monkeypatch.delenv("INFILL_CPU_DTYPE", raising=False)
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        monkeypatch.setenv(name, "")  # recorded, so the test leaves them as they were
        monkeypatch.delenv(name)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert load(str(broken), device="cpu").placement.dtype == torch.float32
    (broken / "infill.json").write_text('{"cpu_bf16": true, "max_prompt_tokens": 64}')
    loaded = load(str(broken), device="cpu")
    assert loaded.placement.dtype == torch.bfloat16
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    # oneDNN's kernel caches are capped (they grew without bound in bf16), unless the
    # environment says otherwise
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert os.environ["LRU_CACHE_CAPACITY"] == "64"
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "256")
    load(str(broken), device="cpu")
    assert os.environ["LRU_CACHE_CAPACITY"] == "256"
    assert loaded.engine_defaults == {"max_prompt_tokens": 64}  # read by the loader
    (broken / "infill.json").write_text('{"cpu_bf16": "yes"}')
    expect_error(broken, "'cpu_bf16' is not one of")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_freed_blocks_are_reused_without_faulting_pages_in_again():
    import torch

    from infill_engine.model.device import resolve

    resolve("cpu")  # a CPU placement keeps freed memory for the process
    floats, rounds = 10 << 20, 10  # 40 MiB: glibc maps blocks this large afresh
    torch.ones(floats)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.ones(floats)  # allocated, every page written, freed
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    pages = floats * 4 // resource.getpagesize() * rounds
    # Mapped afresh, every page faults in again each round (measured: all of them).
    assert faults < pages / 4, f"{faults} of {pages} pages faulted in again"


def test_built_models_live_in_the_xdg_cache_unless_infill_cache_says(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("INFILL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loader.cache_dir() == tmp_path / "xdg" / "diffusion-infill"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid: ignored
    assert loader.cache_dir() == Path.home() / ".cache" / "diffusion-infill"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert loader.cache_dir() == Path.home() / ".cache" / "diffusion-infill"
    monkeypatch.setenv("INFILL_CACHE", str(tmp_path / "mine"))
    assert loader.cache_dir() == tmp_path / "mine"
