"""Load test: bursts of inline requests, as fast as the client can send them, with
typing
in between, on one document and on ten. Not part of the test suite; prints JSON.

For each burst: how many requests were answered with a suggestion, answered empty
(superseded by a newer request for the same document, or computed for an older version
and dropped), the time from the last request sent to the last answer, and the server's
resident memory before and after. `--rounds` repeats the pair of bursts on new
documents, to see whether memory levels off. Run as
`python -m lsp_server.tools.loadtest`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types

from lsp_server.tools.client import Session

BASE = (
    "import math\n\n\ndef area(shape, size):\n"
    "    if shape == 'circle':\n        return math.pi * size ** 2\n"
    "    return size * size\n\n\nresult = area('circle', 2)\n"
)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def burst(
    session: Session, documents: int, requests: int, round_: int = 0
) -> dict[str, Any]:
    """Open `documents` files and send `requests` inline requests round-robin, typing a
    character into the document before each one."""
    uris = [f"file:///load/{round_}/{documents}/{i}.py" for i in range(documents)]
    for uri in uris:
        session.open(uri, BASE)
    server = session.client._server
    assert server is not None
    pid = server.pid
    before = rss_mib(pid)
    pending = []
    column = {uri: 0 for uri in uris}
    start = time.perf_counter()
    for n in range(requests):
        uri = uris[n % documents]
        line = BASE.count("\n")  # type on a fresh last line
        session.change(
            uri,
            types.Range(
                types.Position(line, column[uri]), types.Position(line, column[uri])
            ),
            "x",
        )
        column[uri] += 1
        pending.append(asyncio.ensure_future(session.inline(uri, line, column[uri])))
        await asyncio.sleep(0)  # let the request go out before the next keystroke
    sent = time.perf_counter()
    results = await asyncio.gather(*pending, return_exceptions=True)
    done = time.perf_counter()
    errors = [r for r in results if isinstance(r, BaseException)]
    answered = [r for r in results if not isinstance(r, BaseException) and r.items]
    return {
        "documents": documents,
        "requests": requests,
        "with_suggestion": len(answered),
        "empty": requests - len(answered) - len(errors),
        "errors": len(errors),
        "send_seconds": sent - start,
        "last_answer_after_last_send_ms": (done - sent) * 1000,
        "rss_before_mib": before,
        "rss_after_mib": rss_mib(pid),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    session = await Session.ready(args.model, args.device, {"maxSteps": args.steps})
    out: dict[str, Any] = {"bursts": []}
    for round_ in range(args.rounds):
        for documents in (1, 10):
            out["bursts"].append(await burst(session, documents, args.requests, round_))
    alive = await session.command("infill.status")
    out["server_state_after"] = alive["state"]
    await session.stop()
    out["tracebacks_in_log"] = sum("Traceback" in line for line in session.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m lsp_server.tools.loadtest`."""
    parser = argparse.ArgumentParser(
        prog="python -m lsp_server.tools.loadtest", description=__doc__
    )
    parser.add_argument(
        "--model", default="", help="checkpoint (default: the default model)"
    )
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--requests", type=int, default=500, help="requests per burst")
    parser.add_argument("--steps", type=int, default=0, help="maxSteps (0: model's)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times to run the pair of bursts (on new documents), to watch memory",
    )
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
