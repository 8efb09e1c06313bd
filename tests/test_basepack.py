"""The base pack: the GGUF cut to the kept vocabulary rows, and restored."""

from __future__ import annotations

import numpy as np
import pytest

from infill_engine.training import basepack


def write_gguf(path, rows: int = 12, width: int = 32):
    """A small GGUF with an F32 token embedding between two other tensors."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_uint32("test.rows", rows)
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((rows, width)).astype(np.float32)
    writer.add_tensor(
        "blk.0.attn_q.weight", rng.standard_normal((4, width)).astype(np.float32)
    )
    writer.add_tensor(basepack.EMBEDDING, embedding)
    writer.add_tensor(
        "output_norm.weight", rng.standard_normal(width).astype(np.float32)
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return embedding


def read_tensors(path):
    import gguf

    return {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}


def test_a_pack_restores_the_file_with_dropped_rows_zero(tmp_path):
    source = tmp_path / "base.gguf"
    embedding = write_gguf(source)
    kept = [0, 2, 3, 7, 11]
    parts = basepack.pack(source, kept, tmp_path / "pack", {"embedding_rms": 1.0}, 1)
    packed = sum(p.stat().st_size for p in parts)
    assert packed == source.stat().st_size - 7 * 32 * 4  # 7 rows of 32 floats left out
    out = basepack.unpack(tmp_path / "pack", tmp_path / "restored.gguf")
    before, after = read_tensors(source), read_tensors(out)
    expected = np.zeros_like(embedding)
    expected[kept] = embedding[kept]
    np.testing.assert_array_equal(after[basepack.EMBEDDING], expected)
    for name in ("blk.0.attn_q.weight", "output_norm.weight"):
        np.testing.assert_array_equal(after[name], before[name])
    assert basepack.read_pack(tmp_path / "pack")["scales"] == {"embedding_rms": 1.0}


def test_a_damaged_or_incomplete_pack_is_refused(tmp_path):
    source = tmp_path / "base.gguf"
    write_gguf(source, rows=64, width=64)
    parts = basepack.pack(source, [1, 5], tmp_path / "pack", {}, 1)
    damaged = bytearray(parts[-1].read_bytes())
    damaged[-1] ^= 0xFF
    parts[-1].write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="not the one packed"):
        basepack.unpack(tmp_path / "pack", tmp_path / "out.gguf")
    parts[0].unlink()
    with pytest.raises(ValueError, match="parts missing: part00.bin"):
        basepack.unpack(tmp_path / "pack", tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
