"""`infill-lsp` / `python -m lsp_server`: start the language server.

Speaks LSP over stdio by default, or TCP with --tcp. Logs go to stderr (and --log-file),
never to stdout, which carries the protocol.

Only argparse and the settings are imported up front: `--help` and `--version` answer
without pygls, and the server answers `initialize` without torch or transformers, which
load with the model, in the background (`InfillServer.start_loading`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lsp_server import VERSION, settings


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `infill-lsp`."""
    parser = argparse.ArgumentParser(
        prog="infill-lsp",
        description="Language server that fills code in the middle with a "
        "DiffusionGemma "
        "text-diffusion model: inline completion (ghost text), completion items, "
        "rewrite-selection code actions and fill-on-save of hole markers.",
    )
    parser.add_argument("--version", action="version", version=f"infill-lsp {VERSION}")
    parser.add_argument(
        "--stdio", action="store_true", help="speak LSP on stdin/stdout (default)"
    )
    parser.add_argument(
        "--tcp", action="store_true", help="listen on TCP instead of stdio"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="TCP host (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=2087, help="TCP port (default 2087)"
    )
    parser.add_argument(
        "--model",
        default="",
        help="checkpoint directory or hub id (default: the model `infill model build` "
        "wrote); the client's infill.model setting overrides it",
    )
    parser.add_argument(
        "--device",
        choices=settings.DEVICES,
        default="auto",
        help="where the model runs (default auto); the infill.device setting "
        "overrides it",
    )
    parser.add_argument(
        "--backend",
        default="local",
        help="'local' (the model in this process, default) or KIND:URL, a shared "
        "backend, e.g. ray:http://gpu-box:8000/infill (started with `infill serve`); "
        "the infill.backend setting overrides it",
    )
    parser.add_argument("--log-file", help="also write the log to this file")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `infill-lsp` console script."""
    args = build_parser().parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(
        level=args.log_level,
        handlers=handlers,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        # pygls logs every message body at INFO: whole documents, on every change.
        logging.getLogger("pygls").setLevel(logging.WARNING)
    from lsp_server.server import create_server

    base = settings.Settings(model=args.model, device=args.device, backend=args.backend)
    server = create_server(base=base)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
    return 0


if __name__ == "__main__":
    sys.exit(main())
