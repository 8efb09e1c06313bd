"""Several editors at once: latency and throughput of a backend under N clients.

    infill bench --clients 1,4,16 [--backend ray:URL] [--model DIR]

Each client is a thread that asks for line fills one after another, as an editor whose
user pauses after each suggestion does; the holes are the same for every backend
(`line_requests`: single-line holes cut with a fixed seed from this project's example
file and engine sources). Measured per backend and client count, in one run: requests,
throughput, p50/p95/max latency, empty answers (counted apart: an empty answer is not a
fast one) and errors. `local` is the engine in this process, shared by the clients as
one language server shares it; a remote backend is reached through
`backends.connect.connect`.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from infill_engine.core.spans import LINE_SPAN_LENGTHS
from infill_engine.engine import InfillRequest

PACKAGE = Path(__file__).resolve().parent.parent
EXAMPLES = PACKAGE.parent / "examples"


def line_requests(count: int, seed: int = 0) -> list[InfillRequest]:
    """`count` single-line holes from the example files and the engine's sources."""
    from infill_engine.data.holes import cut_line

    files = sorted(EXAMPLES.glob("*.py")) + sorted(PACKAGE.glob("core/*.py"))
    texts = [f.read_text(encoding="utf-8") for f in files]
    rng = random.Random(seed)
    out: list[InfillRequest] = []
    while len(out) < count:
        hole = cut_line(rng.choice(texts), rng)
        if hole is not None and hole.middle.strip():
            out.append(
                InfillRequest(
                    hole.prefix, hole.suffix, LINE_SPAN_LENGTHS, single_line=True
                )
            )
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(
    engine: Any, clients: int, per_client: int, requests: list[InfillRequest]
) -> dict[str, Any]:
    """`clients` threads, each filling `per_client` of `requests` in turn."""
    latencies: list[float] = []
    empty = errors = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal empty, errors
        for i in range(per_client):
            request = requests[(index * per_client + i) % len(requests)]
            started = time.perf_counter()
            try:
                result = engine.fill(request)
            except Exception:  # a failed request counts as an error, not a latency
                with lock:
                    errors += 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                empty += not result.text.strip()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": clients * per_client,
        "answered": len(latencies),
        "errors": errors,
        "empty": empty,
        "throughput_rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": statistics.median(latencies) if latencies else 0.0,
        "p95_ms": percentile(latencies, 0.95),
        "max_ms": max(latencies, default=0.0),
    }


def measure(
    backends: dict[str, Any], counts: list[int], per_client: int
) -> list[dict[str, Any]]:
    """Every backend at every client count, on the same holes; each row also gives
    its p95 as a multiple of the same backend's p95 at the fewest clients."""
    requests = line_requests(max(counts) * per_client)
    rows = []
    for name, engine in backends.items():
        engine.fill(requests[0])  # load and warm, outside the measurement
        base = None
        for count in counts:
            row = {"backend": name} | run(engine, count, per_client, requests)
            base = base or row["p95_ms"] or None
            row["p95_vs_fewest"] = row["p95_ms"] / base if base else 0.0
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| backend | clients | answered | errors | empty | req/s | p50 ms | p95 ms "
        "| max ms | p95 / fewest clients' |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['clients']} | {r['answered']}/{r['requests']} "
            f"| {r['errors']} | {r['empty']} | {r['throughput_rps']:.2f} "
            f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['max_ms']:.0f} "
            f"| {r['p95_vs_fewest']:.2f} |"
        )
    return "\n".join(lines)
