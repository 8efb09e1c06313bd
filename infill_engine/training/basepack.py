"""The base GGUF cut to what the default model uses, for a training machine that cannot
install the base package (no network, or too little room to copy 253 MB to it).

    python -m infill_engine.training.basepack pack DIR [--parts MB]
    python -m infill_engine.training.basepack unpack DIR OUT.gguf

`pack` reads the pinned base (`build.base_gguf`, its sha256 checked) and writes the
file's bytes with only the kept vocabulary's rows of `token_embd` (the shipped table,
`build.kept_tokens`): about 90 MB instead of 253 MB, in parts of at most `--parts` MB.
`unpack` writes the GGUF back with every dropped row zero. The build keeps only kept
rows (`trim`), and `pack.json` holds what the conversion measures on the whole base
(`convert.conversion_scales`, which zero rows would change), so
`build(gguf=OUT.gguf, scales=...)` makes the model the pinned base makes. `pack.json`
also holds the sha256 of the unpacked file, which `unpack` checks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

EMBEDDING = "token_embd.weight"
PACK_JSON = "pack.json"


def _embedding(gguf: Path) -> tuple[int, int, int]:
    """(byte offset, byte size, rows) of the token embedding's data in the file."""
    import gguf as gguf_lib

    reader = gguf_lib.GGUFReader(str(gguf))
    for tensor in reader.tensors:
        if tensor.name == EMBEDDING:
            rows = int(tensor.shape[-1])
            return int(tensor.data_offset), int(tensor.n_bytes), rows
    raise ValueError(f"{gguf} has no {EMBEDDING}")


def pack(
    gguf: Path, kept: list[int], out: Path, scales: dict[str, Any], part_mb: int
) -> list[Path]:
    """Write `gguf` minus the dropped embedding rows to `out` in parts; see module."""
    start, size, rows = _embedding(gguf)
    row_bytes = size // rows
    data = gguf.read_bytes()
    table = data[start : start + size]
    rows_kept = (table[i * row_bytes : (i + 1) * row_bytes] for i in sorted(kept))
    kept_rows = b"".join(rows_kept)
    body = data[:start] + kept_rows + data[start + size :]
    out.mkdir(parents=True, exist_ok=True)
    step = part_mb * 1_000_000
    parts: list[Path] = []
    for index in range(0, len(body), step):
        part = out / f"part{len(parts):02d}.bin"
        part.write_bytes(body[index : index + step])
        parts.append(part)
    meta = {
        "embedding_offset": start,
        "embedding_bytes": size,
        "row_bytes": row_bytes,
        "kept": sorted(kept),
        "parts": [p.name for p in parts],
        "sha256": hashlib.sha256(
            _restore(body, start, size, row_bytes, sorted(kept))
        ).hexdigest(),
        "scales": scales,
    }
    (out / PACK_JSON).write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return parts


def _restore(
    body: bytes, start: int, size: int, row_bytes: int, kept: list[int]
) -> bytes:
    """The GGUF bytes, dropped rows zero, from a pack's body."""
    table = bytearray(size)
    for n, i in enumerate(kept):
        table[i * row_bytes : (i + 1) * row_bytes] = body[
            start + n * row_bytes : start + (n + 1) * row_bytes
        ]
    tail = body[start + len(kept) * row_bytes :]
    return body[:start] + bytes(table) + tail


def read_pack(directory: Path) -> dict[str, Any]:
    """A pack's `pack.json`."""
    return json.loads((directory / PACK_JSON).read_text(encoding="utf-8"))


def unpack(directory: Path, out: Path) -> Path:
    """Write the GGUF a pack holds to `out`, its sha256 checked.

    Raises:
        ValueError: a part is missing or the result is not what was packed.
    """
    meta = read_pack(directory)
    missing = [name for name in meta["parts"] if not (directory / name).is_file()]
    if missing:
        raise ValueError(f"{directory}: parts missing: {', '.join(missing)}")
    body = b"".join((directory / name).read_bytes() for name in meta["parts"])
    data = _restore(
        body,
        meta["embedding_offset"],
        meta["embedding_bytes"],
        meta["row_bytes"],
        meta["kept"],
    )
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ValueError(f"{directory}: the unpacked file is not the one packed")
    out.write_bytes(data)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: pack or unpack; see module."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the pack of the pinned base to DIR")
    p.add_argument("directory", type=Path)
    p.add_argument("--parts", type=int, default=45, help="most MB per part")
    u = sub.add_parser("unpack", help="write the GGUF of the pack in DIR to OUT")
    u.add_argument("directory", type=Path)
    u.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "unpack":
        print(unpack(args.directory, args.out))
        return
    from infill_engine.model import build

    kept = build.kept_tokens()
    if kept is None:
        raise SystemExit("no kept-token table is shipped: nothing to pack against")
    from infill_engine.model.convert import conversion_scales

    with tempfile.TemporaryDirectory() as work:
        gguf = build.base_gguf(Path(work))
        causal, tokenizer = build.load_base(gguf)
        scales = conversion_scales(causal, build.calibration_ids(tokenizer))
        del causal
        parts = pack(gguf, kept, args.directory, scales, args.parts)
    for part in parts:
        print(f"{part} {part.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
