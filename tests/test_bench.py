from lsp_server.tools import bench


def test_typing_lines_are_indented_statements_spread_over_the_file():
    text = "\n".join(
        ["def f(values):", '    """doc string long enough to count"""']
        + [f"    total_{i} = compute(values, {i}) + 1" for i in range(9)]
        + ["    # a comment that is long enough", "    x = 1"]
    )
    picked = bench.typing_lines(text, 3)
    assert picked == [2, 5, 8]
    assert all(text.split("\n")[i].strip().startswith("total_") for i in picked)


def test_typing_lines_start_after_the_given_offset():
    lines = [f"    total_{i} = compute(values, {i}) + 1" for i in range(10)]
    text = "\n".join(lines)
    after = (len(lines[0]) + 1) * 6 + 3  # inside line 6
    assert bench.typing_lines(text, 10, after) == [7, 8, 9]


def test_summary_latency_counts_every_request_splits_only_engine_runs():
    samples = [
        {"latency_ms": 100.0, "prefillMs": 20.0, "steps": 4, "queueMs": 6.0},
        {"latency_ms": 2.0, "prefillMs": 20.0, "steps": 4, "engine": False},
        {"latency_ms": 120.0, "prefillMs": 4.0, "steps": 2, "queueMs": 2.0},
    ]
    for sample, items in zip(samples, (1, 1, 0), strict=True):
        sample["items"] = items
    out = bench.summarize(samples)
    assert (out["requests"], out["engine_runs"], out["empty"]) == (3, 2, 1)
    assert out["p50_ms"] == 100.0 and out["max_ms"] == 120.0
    assert out["prefill_ms"] == 12.0 and out["steps"] == 3.0
    assert out["queue_ms"] == 4.0
    from infill_engine.tools.bench import format_lsp

    row = format_lsp({"typing": out})[-1]
    assert row.startswith("| typing | 3 (2, 1) | 100 |") and "| 4 | 12 |" in row


def test_engine_report_runs_on_a_model_and_names_its_refresh(tiny_engine):
    from infill_engine.tools import bench as engine_bench
    from infill_engine.tools.bench import format_report

    saved = tiny_engine.config
    tiny_engine.config = saved.with_overrides(refresh_every=0)
    try:
        overhead = engine_bench.step_overhead(tiny_engine, steps=3, repeats=1)
        race = engine_bench.versus_autoregressive(tiny_engine, 8, repeats=1)
    finally:
        tiny_engine.config = saved
    assert overhead["refresh_every"] == 0
    assert all(overhead[k] > 0 for k in ("bare_forward_ms", "configured_step_ms"))
    assert race["autoregressive_forwards"] == 8 and race["diffusion_steps"] > 0
    assert race["diffusion_ms_per_token"] > 0
    llama = engine_bench.versus_llama_cpp(tiny_engine, 8, lines=2)
    report = {"overhead": overhead, "vs_autoregressive": race, "vs_llama_cpp": llama}
    table = format_report(report)
    assert "as configured (refresh every 0)" in table
    if "skipped" in llama:  # an extra: said so in one line, not an error
        assert f"llama.cpp side by side skipped: {llama['skipped']}" in table
    else:
        race = llama["lines"]
        assert race["lines"] == 2 and "engine / llama.cpp per line" in table
        for side in ("llama_cpp", "engine"):
            assert race[side]["p50_ms"] > 0 and race[side]["mean_tokens"] >= 0


class StatusOnly:
    """A session whose server last answered version 3 of a.py with a line span."""

    def __init__(self):
        self.versions = {"file:///a.py": 3, "file:///b.py": 1}

    async def command(self, name):
        assert name == "infill.status"
        last = {"uri": "file:///a.py", "version": 3, "kind": "line", "serverMs": 9.0}
        return {"last": last}


async def test_a_sample_is_the_engines_only_for_the_version_the_status_names():
    session = StatusOnly()
    answered = await bench.sample(session, "typing", 12.0, None, "file:///a.py")
    assert answered["engine"] is True and answered["kind"] == "typing"
    assert answered["protocol_ms"] == 3.0
    session.versions["file:///a.py"] = 4  # typed on, answered without the engine
    typed_through = await bench.sample(session, "typing", 2.0, None, "file:///a.py")
    assert typed_through["engine"] is False
    elsewhere = await bench.sample(session, None, 12.0, None, "file:///b.py")
    assert elsewhere["engine"] is False and elsewhere["kind"] == "line"


async def test_a_sample_before_any_engine_answer_still_has_a_row():
    class Fresh(StatusOnly):
        async def command(self, name):
            return {"last": {}}

    first = await bench.sample(Fresh(), None, 5.0, None, "file:///a.py")
    assert first["engine"] is False and isinstance(first["kind"], str)
