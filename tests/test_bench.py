"""The benchmark harness and ``gpu-trader bench``: timing math, targets, a quick run, the CLI."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from gpu_trader import cli
from gpu_trader.backend import get_backend
from gpu_trader.bench import SIZES, SUITES, Reference, SkipCase, Workload, workloads
from gpu_trader.bench.harness import Stats, TimingPolicy, measure, measure_interleaved, percentile, run_workload
from gpu_trader.bench.report import print_table
from gpu_trader.bench.targets import TARGETS, Check, evaluate

TINY = TimingPolicy(warmup_calls=2, warmup_s=0.0, min_samples=5, max_samples=50, budget_s=0.0)


# -- percentiles and timing ---------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 95, 99, 99.9, 100])
def test_percentile_matches_numpy(n, q):
    values = np.sort(np.random.default_rng(n).lognormal(size=n))
    assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12, abs=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=300), st.floats(0, 100))
def test_percentile_matches_numpy_property(values, q):
    s = np.sort(np.asarray(values, dtype=np.float64))
    assert percentile(s, q) == pytest.approx(np.percentile(s, q), rel=1e-12, abs=1e-9)


def test_percentile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sorted_values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_stats_from_ns_are_seconds_at_numpy_percentiles():
    ns = np.random.default_rng(0).integers(1_000, 1_000_000, 997)
    s = Stats.from_ns(ns.tolist())
    secs = ns * 1e-9
    assert s.n == 997
    for q, got in ((50, s.p50_s), (95, s.p95_s), (99, s.p99_s)):
        assert got == pytest.approx(np.percentile(secs, q), rel=1e-12)
    assert s.min_s == pytest.approx(secs.min()) and s.max_s == pytest.approx(secs.max())
    assert s.mean_s == pytest.approx(secs.mean())


def test_measure_excludes_warmup_and_synchronizes_every_call():
    calls, syncs = [], []

    def fn():
        if not calls:
            time.sleep(0.05)  # a "JIT compilation" on the first call
        calls.append(1)

    stats = measure(fn, TINY, sync=lambda: syncs.append(1))
    assert stats.n == TINY.min_samples
    assert len(calls) == TINY.warmup_calls + stats.n
    # one sync before the first call, one after each warm-up call, two around each timed call
    assert len(syncs) == 1 + TINY.warmup_calls + 2 * stats.n
    assert stats.max_s < 0.05


def test_measure_respects_max_samples():
    policy = TimingPolicy(warmup_calls=1, warmup_s=0.0, min_samples=1, max_samples=7, budget_s=10.0)
    assert measure(lambda: None, policy).n == 7


# -- one workload through the harness ---------------------------------------------------
def _raise(exc):
    raise exc


def test_run_workload_references_copy_yardstick_and_targets(capsys):
    x = np.ones((64, 1000))
    wl = Workload(
        "double", {"symbols": 64, "bars": 1000}, setup=lambda be: be.asarray(x), run=lambda a: a * 2.0,
        items=x.size, target="features.batched",
        references=(
            Reference("absent", lambda: None, lambda s: None, requires="no_such_module_xyz"),
            Reference("numpy", lambda: x, lambda a: a + 1.0),
        ),
        copy_inputs=lambda a: (a,), bytes_moved=2 * x.nbytes,
    )
    res = run_workload("t", wl, get_backend("cpu"), TINY)
    assert res.status == "ok" and res.stats.n == TINY.min_samples
    assert res.throughput_per_s == pytest.approx(x.size / res.stats.p50_s)
    assert res.references["absent"].ratio is None and "not installed" in res.references["absent"].note
    numpy_ref = res.references["numpy"]
    assert numpy_ref.ratio == pytest.approx(numpy_ref.p50_s / res.stats.p50_s)
    assert res.copy_bytes == 2 * x.nbytes
    assert res.x_copy == pytest.approx(res.stats.p50_s / res.copy_p50_s)
    assert res.bw_fraction == pytest.approx(2 * x.nbytes / res.stats.p50_s / res.copy_bandwidth_Bps)
    assert res.ours.missing == ("ratio:talib",)  # the batched target checks TA-Lib, absent here
    assert res.plan.status == "-"
    print_table([res])
    assert "absent n/a" in capsys.readouterr().out


def test_run_workload_on_jax_measures_yardsticks_and_skips_areas_it_lacks():
    pytest.importorskip("jax")
    jax_be = get_backend("jax")
    x = np.ones((64, 1000))
    wl = Workload("double", {}, setup=lambda be: be.asarray(x), run=lambda a: a * 2.0, items=x.size,
                  copy_inputs=lambda a: (a,), bytes_moved=2 * x.nbytes, flops=1e6)
    res = run_workload("t", wl, jax_be, TINY)
    assert res.status == "ok" and res.backend == "jax"
    assert res.copy_bandwidth_Bps > 0 and res.gemm_rate_flops > 0
    vectors = Workload("v", {}, setup=lambda be: be.ops("vectors"), run=lambda s: None, items=1)
    skipped = run_workload("t", vectors, jax_be, TINY)
    assert skipped.status == "skipped" and "does not implement vectors" in skipped.note


def test_default_backends_are_those_implementing_every_area(monkeypatch, capsys):
    """``gpu-trader bench`` without --backend runs cpu (and cuda where present), never the partial
    jax backend; naming jax runs it."""
    from gpu_trader import bench

    seen = []
    monkeypatch.setattr(bench, "run", lambda plan, size, **kw: seen.append(list(dict.fromkeys(
        c.backend for c in plan))) or [])
    assert cli.main(["bench", "--suite", "risk", "--quick"]) == 0
    expected = [n for n in ("cpu", "cuda") if n in gt.available_backends()]
    assert seen[-1] == expected
    if "jax" in gt.available_backends():
        assert cli.main(["bench", "--suite", "risk", "--quick", "--backend", "jax"]) == 0
        assert seen[-1] == ["jax"]


def test_run_workload_reports_skips_and_errors(capsys):
    cpu = get_backend("cpu")
    skipped = run_workload("t", Workload("s", {}, lambda be: _raise(SkipCase("not here")), _raise, items=1), cpu, TINY)
    assert skipped.status == "skipped" and skipped.note == "not here"
    broken = Workload("e", {}, lambda be: None, lambda s: _raise(RuntimeError("boom")), items=1)
    failed = run_workload("t", broken, cpu, TINY)
    assert failed.status == "error" and failed.note == "RuntimeError: boom"
    print_table([skipped, failed])
    out = capsys.readouterr().out
    assert "SKIPPED" in out and "ERROR" in out and "boom" in out


def test_workload_metrics_are_checked_and_printed(capsys):
    """A workload's own metrics (read from its state after timing) join p50/p95/p99 and
    throughput as checkable names; end_to_end.event checks them."""
    wl = Workload("own", {}, setup=lambda be: {"n": 0}, run=lambda s: s.update(n=s["n"] + 1), items=10,
                  target="end_to_end.event",
                  extra_metrics=lambda s, *_: {"event_p50_s": 1e-6, "event_p95_s": 2e-6, "event_p99_s": 2e-3,
                                                "calls": s["n"]})
    res = run_workload("t", wl, get_backend("cpu"), TINY)
    m = res.metrics()
    assert m["event_p50_s"] == 1e-6 and m["calls"] == TINY.warmup_calls + TINY.min_samples
    assert (m["p95_s"], m["p99_s"], m["throughput_per_s"]) == (res.stats.p95_s, res.stats.p99_s,
                                                                res.throughput_per_s)
    assert res.plan.status == "PASS"
    assert res.ours.status == "FAIL" and any("event_p99_s" in f for f in res.ours.failures)
    print_table([res])
    assert "event_p50_s 1us" in capsys.readouterr().out
def test_run_workload_gemm_fraction_scaled_reference_extra_metrics_and_policy(capsys):
    """``flops`` -> the measured matmul rate and gemm_fraction; ``Reference.scale`` multiplies the
    reference's time; ``extra_metrics`` sees the metrics so far; ``policy`` replaces the run's."""
    a = np.random.default_rng(0).normal(size=(256, 256))
    seen = {}

    def extra(state, be, policy, metrics):
        seen.update(metrics, policy=policy)
        return {"x_model": metrics["p50_s"] / 2}

    own = TimingPolicy(warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=3, budget_s=0.0)
    wl = Workload("mm", {"n": 256}, lambda be: a, lambda m: m @ m, items=1, flops=2 * 256**3,
                  references=(Reference("half", lambda: a[:128], lambda m: m @ m.T, scale=2.0),),
                  extra_metrics=extra, policy=own)
    res = run_workload("t", wl, get_backend("cpu"), TINY)
    assert res.stats.n == 3 and seen["policy"] is own
    assert res.gemm_rate_flops > 0
    assert res.gemm_fraction == pytest.approx(2 * 256**3 / res.stats.p50_s / res.gemm_rate_flops)
    assert seen["gemm_fraction"] == res.gemm_fraction
    assert res.metrics()["x_model"] == pytest.approx(res.stats.p50_s / 2)
    assert "time scaled" in res.references["half"].note
    print_table([res])
    out = capsys.readouterr().out
    assert "gemm_fraction" in out and "x_model" in out


# -- targets ------------------------------------------------------------------------
def test_evaluate_pass_fail_missing_and_not_applicable():
    checks = (Check("p50_s", "<", 1e-3), Check("ratio:talib", ">=", 1.0, ("cpu",)))
    assert evaluate(checks, {"p50_s": 5e-4, "ratio:talib": 2.0}, "cpu").status == "PASS"
    failed = evaluate(checks, {"p50_s": 2e-3, "ratio:talib": 2.0}, "cpu")
    assert failed.status == "FAIL" and "p50_s" in failed.failures[0]
    missing = evaluate(checks, {"p50_s": 5e-4, "ratio:talib": None}, "cpu")
    assert missing.status == "n/a" and missing.missing == ("ratio:talib",)
    assert evaluate(checks, {"p50_s": 5e-4}, "cuda").status == "PASS"  # the ratio check is CPU-only
    assert evaluate((), {"p50_s": 1.0}, "cpu").status == "-"


def test_check_and_workload_reject_bad_declarations():
    with pytest.raises(ValueError, match="op"):
        Check("p50_s", "!=", 1.0)
    with pytest.raises(ValueError, match="unknown target"):
        Workload("w", {}, lambda be: None, lambda s: None, items=1, target="nope")
    with pytest.raises(ValueError, match="copy_inputs"):
        Workload("w", {}, lambda be: None, lambda s: None, items=1, bytes_moved=8)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_declarations(suite):
    counts = {}
    for size in SIZES:
        wls = workloads(suite, size)
        names = [w.name for w in wls]
        assert len(names) == len(set(names)), "workload names must be unique within a suite"
        assert all(w.target is None or w.target in TARGETS for w in wls)
        counts[size] = len(wls)
    # every size covers every case family: the standard run shows every case the full one does
    assert counts["standard"] == counts["full"] >= counts["quick"]


def test_unknown_suite_and_size_are_clear_errors():
    with pytest.raises(ValueError, match="unknown suite 'nope'; known suites: .*features"):
        workloads("nope", "quick")
    with pytest.raises(ValueError, match="size must be one of quick, standard, full"):
        workloads("risk", "huge")


# -- a quick run of the features suite through the CLI ----------------------------------
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``gpu-trader bench --quick --backend cpu --suite features`` with --json and --baseline."""
    tmp = tmp_path_factory.mktemp("bench")
    baseline = tmp / "old.json"
    baseline.write_text(json.dumps({"results": [
        {"suite": "features", "name": "sma(20) 100 bars", "backend": "cpu", "stats": {"p50_s": 1.0}},
    ]}))
    path = tmp / "new.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["bench", "--quick", "--backend", "cpu", "--suite", "features",
                         "--json", str(path), "--baseline", str(baseline)])
    return code, out.getvalue(), json.loads(path.read_text())


@pytest.mark.slow
def test_cli_quick_run_exits_zero(quick_run):
    code, _, _ = quick_run
    assert code == 0


@pytest.mark.slow
def test_quick_run_has_every_case_with_finite_numbers(quick_run):
    _, _, doc = quick_run
    results = doc["results"]
    assert [r["name"] for r in results] == [w.name for w in workloads("features", "quick")]
    for r in results:
        assert r["backend"] == "cpu" and r["device"] and r["dtype"] == "float64" and r["sizes"]
        if r["status"] == "skipped":  # only the streaming case may be skipped (FeatureStream not there yet)
            assert r["name"].startswith("FeatureStream") and r["note"]
            continue
        assert r["status"] == "ok", r
        s = r["stats"]
        assert all(math.isfinite(s[k]) and s[k] > 0 for k in ("p50_s", "p95_s", "p99_s"))
        assert s["min_s"] <= s["p50_s"] <= s["p95_s"] <= s["p99_s"] <= s["max_s"]
        assert 0 <= s["mad_s"] <= s["max_s"] - s["min_s"]  # the noise estimate of the regression gate
        assert math.isfinite(r["throughput_per_s"]) and r["throughput_per_s"] > 0
        assert r["plan"]["status"] in ("PASS", "FAIL", "n/a", "-")
        assert r["ours"]["status"] in ("PASS", "FAIL", "n/a")
        for ref in r["references"].values():
            assert ref["ratio"] is None or (math.isfinite(ref["ratio"]) and ref["ratio"] > 0)
        if "symbols" in r["sizes"] and r["sizes"]["symbols"] > 1:  # batched: the copy yardstick
            assert math.isfinite(r["x_copy"]) and r["x_copy"] > 0
            assert math.isfinite(r["bw_fraction"]) and r["bw_fraction"] > 0


@pytest.mark.slow
def test_quick_run_json_records_device_and_versions(quick_run):
    _, _, doc = quick_run
    assert doc["schema"] == 1 and doc["quick"] is True and doc["size"] == "quick" and doc["timestamp"]
    assert doc["devices"]["cpu"]
    env = doc["environment"]
    for name in ("python", "numpy", "numba", "talib", "gpu_trader"):
        assert name in env["versions"]
    assert env["versions"]["numpy"] == np.__version__
    assert env["cpu_count"] >= 1
    assert "loadavg_before_run" in env and "loadavg_after_run" in env
    assert env["threads"]["numba_num_threads"] >= 1


@pytest.mark.slow
def test_quick_run_prints_table_with_targets_and_baseline(quick_run):
    _, text, _ = quick_run
    assert "p50" in text and "plan" in text and "ours" in text
    assert "sma(20) 100 bars" in text
    assert "PASS" in text or "FAIL" in text
    assert "features.sma" in text  # the targets legend
    assert "Against baseline" in text


# -- CLI errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--suite", "nope"], "unknown suite(s) nope; known suites: market_data, features"),
        (["bench", "--backend", "nope"], "backend 'nope' is unknown; available backends: cpu"),
        (["bench", "--baseline", "/nonexistent/old.json"], "--baseline: baseline '/nonexistent/old.json'"),
        (["bench", "--json", "/nonexistent/dir/out.json"], "--json: directory"),
    ],
)
def test_cli_bad_arguments_exit_nonzero_with_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_bad_baseline_content(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--baseline", str(bad)])
    assert exc.value.code == 2
    assert "is not a gpu-trader bench JSON file" in capsys.readouterr().err


def test_cli_module_entry_point_exit_status():
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_trader.cli", "bench", "--suite", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown suite" in proc.stderr
    assert subprocess.run([sys.executable, "-m", "gpu_trader.cli"], capture_output=True).returncode == 2


# -- interleaved timing -------------------------------------------------------------------
def test_measure_interleaved_takes_turns_and_splits_the_samples():
    """Callables timed together alternate round by round, each with its share of the samples."""
    order = []
    policy = TimingPolicy(warmup_calls=1, warmup_s=0.0, min_samples=7, max_samples=7, budget_s=0.0, rounds=3)
    a, b = (lambda: order.append("a")), (lambda: order.append("b"))
    stats = measure_interleaved([(a, lambda: None), (b, lambda: None)], policy)
    assert [s.n for s in stats] == [7, 7]
    timed = "".join(order[2:])  # after one warm-up call each
    assert timed == "aaa" "bbb" "aa" "bb" "aa" "bb"  # rounds of 3, 2, 2 samples
    alone = []
    assert measure(lambda: alone.append(1), policy).n == 7 and len(alone) == 8  # one callable: one round


def test_reference_that_cannot_run_here_is_n_a_not_an_error():
    wl = Workload("w", {}, lambda be: None, lambda s: None, items=1, target="risk.rolling_corr",
                  references=(Reference("jax", lambda: _raise(SkipCase("too old here")), lambda s: None),))
    res = run_workload("t", wl, get_backend("cpu"), TINY)
    assert res.status == "ok" and res.references["jax"].ratio is None
    assert res.references["jax"].note == "too old here"
    assert res.ours.status == "n/a" and res.ours.missing == ("ratio:jax",)  # missing, not FAIL


# -- sizes, --list, --case and -k ---------------------------------------------------------------
def _listing(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["bench", "--list", *argv]) == 0
    return out.getvalue()


def test_list_prints_every_case_with_suite_sizes_and_target_without_timing(monkeypatch):
    from gpu_trader import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("--list must not time anything"))
    text = _listing(["--suite", "features", "risk"])
    lines = text.splitlines()
    assert lines[0].split() == ["suite", "case", "sizes", "target"]
    expected = [("features", w) for w in workloads("features")] + [("risk", w) for w in workloads("risk")]
    rows = [line for line in lines[2:] if line.startswith(("features ", "risk "))]
    assert len(rows) == len(expected)
    for row, (suite, wl) in zip(rows, expected):
        assert row.startswith(suite) and wl.name in row
        assert all(f"{k}={v}" in row for k, v in wl.sizes.items())
        assert (f"{wl.target}: {TARGETS[wl.target].ours_text}" in row) if wl.target else row.endswith("-")
    assert f"{len(expected)} cases, size standard, on cpu" in text


def test_sizes_quick_standard_full_in_the_listing():
    assert "sma(20) 500x2520" in _listing(["--suite", "features"])
    assert "sma(20) 2000x2520" in _listing(["--suite", "features", "--full"])
    assert "sma(20) 200x2520" in _listing(["--suite", "features", "--quick"])
    assert "1000000 scenarios" in _listing(["--suite", "risk", "--full"])
    assert "1000000 scenarios" not in _listing(["--suite", "risk"])


def test_quick_and_full_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--quick", "--full"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_case_and_keyword_select_cases(monkeypatch):
    from gpu_trader import bench

    seen = {}
    monkeypatch.setattr(bench, "run", lambda plan, size, **kw: seen.update(plan=plan, size=size) or [])
    argv = ["bench", "--backend", "cpu", "--case", "sma(20) 100 bars", "--case", "risk/sharpe 252 days",
            "-k", "CORR 5", "--full"]
    assert cli.main(argv) == 0
    assert [c.key for c in seen["plan"]] == [
        "features/sma(20) 100 bars", "risk/sharpe 252 days", "risk/corr 5 assets x 252 days",
        "risk/corr 50 assets x 252 days"]
    assert seen["size"] == "full" and {c.backend for c in seen["plan"]} == {"cpu"}
    text = _listing(["-k", "monte carlo"])
    assert text.count("monte carlo VaR") == 3 and "3 cases" in text


@pytest.mark.parametrize("argv, message", [
    (["--case", "sma(20) 99 bars"], "no case named 'sma(20) 99 bars'"),
    (["-k", "no such thing"], "no case matches 'no such thing'"),
    (["--suite", "risk", "--case", "sma(20) 100 bars"], "no case named"),  # not in the suites asked for
])
def test_selection_matching_nothing_is_an_argument_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_plan_order_is_suite_then_backend_then_declaration():
    from gpu_trader.bench import plan_cases

    plan = plan_cases(["risk", "features"], ["cpu", "jax"], "quick", keywords=["252 days", "bollinger(20,2) 20 bars"])
    keys = [(c.suite, c.backend, c.workload.name) for c in plan]
    risk = [w.name for w in workloads("risk", "quick") if "252 days" in w.name]
    assert keys == ([("risk", "cpu", n) for n in risk] + [("risk", "jax", n) for n in risk]
                    + [("features", b, "bollinger(20,2) 20 bars") for b in ("cpu", "jax")])


# -- progress lines: the estimated time left ----------------------------------------------------
def test_progress_lines_estimate_the_time_left():
    from gpu_trader.bench import PlannedCase
    from gpu_trader.bench.harness import CaseResult
    from gpu_trader.bench.progress import Progress, case_weight, fmt_duration

    one = Workload("one", {}, lambda be: None, lambda s: None, items=1)  # weight 2
    refs = Workload("refs", {}, lambda be: None, lambda s: None, items=1,
                    references=(Reference("x", lambda: None, lambda s: None),) * 2)  # weight 4
    assert (case_weight(one), case_weight(refs)) == (2, 4)
    plan = [PlannedCase("s", "cpu", one), PlannedCase("s", "cpu", refs), PlannedCase("t", "cpu", one)]
    now = [100.0]
    out = io.StringIO()
    progress = Progress(plan, out=out, clock=lambda: now[0])
    now[0] += 3.0
    progress.case_done(CaseResult("s", "one", "cpu", "dev", {}, "float64", "bar", None))
    assert progress.eta_s() == pytest.approx(3.0 / 2 * 6)  # 3 s per 2 weight, 6 weight left
    now[0] += 9.0
    progress.case_done(CaseResult("s", "refs", "cpu", "dev", {}, "float64", "bar", None, status="skipped"))
    progress.suite_done("s", 2_500_000_000, 400_000_000)
    now[0] += 1.0
    progress.case_done(CaseResult("t", "one", "cpu", "dev", {}, "float64", "bar", None, status="error"))
    lines = out.getvalue().splitlines()
    assert lines == [
        "  [1/3] s/cpu: one ... ok (3.0 s; ~9 s left)",
        "  [2/3] s/cpu: refs ... skipped (9.0 s; ~4 s left)",
        "  s done in 12 s; parent RSS 400 MB after releasing its data (2.50 GB before)",
        "  [3/3] t/cpu: one ... error (1.0 s; done)",
    ]
    line = re.compile(r"^  \[\s*\d+/\d+\] \S+/\S+: .+ \.\.\. (ok|skipped|error) "
                      r"\(\d+\.\d s; (~(\d+ h \d\d min|\d+ min \d\d s|\d+ s) left|done)\)$")
    assert all(line.match(x) for x in lines if "[" in x)
    assert [fmt_duration(s) for s in (0.4, 59, 61, 3599, 3600 * 2 + 125)] == [
        "0 s", "59 s", "1 min 01 s", "59 min 59 s", "2 h 02 min"]


def test_cli_progress_goes_to_stderr_with_eta(monkeypatch, capsys):
    cases = [Workload(f"c{i}", {}, lambda be: None, lambda s: None, items=1) for i in range(3)]
    monkeypatch.setattr("gpu_trader.bench.suites.workloads", lambda suite, size: cases)
    monkeypatch.setattr("gpu_trader.bench.selection.workloads", lambda suite, size: cases)
    assert cli.main(["bench", "--backend", "cpu", "--suite", "orders", "--quick"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("  [1/3] orders/cpu: c0 ... ok (") and err[0].endswith(" left)")
    assert err[2].endswith("; done)") and err[3].startswith("  orders done in ")
    assert "parent RSS" in err[3]


# -- memory: the suite's data released, a child's own peak ----------------------------------------
def test_run_releases_each_suites_data_and_reports_the_parents_rss():
    from gpu_trader.bench import PlannedCase, run
    from gpu_trader.bench.data import random_walk_ohlcv
    from gpu_trader.bench.memory import resident_bytes

    big = (2000, 2520)  # 5 arrays of 40 MB
    wl = Workload("holds data", {}, lambda be: random_walk_ohlcv(big), lambda s: None, items=1)
    light = Workload("light", {}, lambda be: None, lambda s: None, items=1)
    suites = []
    res = run([PlannedCase("a", "cpu", wl), PlannedCase("b", "cpu", light)], "quick",
              on_suite_done=lambda *args: suites.append(args))
    assert [r.status for r in res] == ["ok", "ok"] and [s[0] for s in suites] == ["a", "b"]
    (_, before, after), _ = suites
    assert random_walk_ohlcv.cache_info().currsize == 0
    assert before - after > 150e6, "the suite's 200 MB of cached inputs stayed resident"
    assert abs(resident_bytes() - after) < 100e6


_PEAK_CHILD = ("import resource; from gpu_trader.bench.memory import peak_resident_bytes; "
               "print(peak_resident_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")


def test_child_peak_rss_is_its_own_not_the_parents():
    """A parent holding 600 MB starts a child: the child's VmHWM is its own small figure, while
    ru_maxrss, which the cold-start case used to report, carries the parent's peak over."""
    from gpu_trader.bench.memory import peak_resident_bytes, resident_bytes

    held = np.ones(75_000_000)  # 600 MB, touched
    assert resident_bytes() > held.nbytes and peak_resident_bytes() >= resident_bytes()
    proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD], capture_output=True, text=True, check=True)
    child_peak, child_maxrss = (int(v) for v in proc.stdout.split())
    assert 5e6 < child_peak < 300e6 < held.nbytes
    assert child_maxrss >= held.nbytes  # the old figure: Linux carries the parent's peak across exec
    del held


@pytest.mark.slow
def test_cold_start_case_reports_the_child_figure_from_a_large_parent():
    from gpu_trader.bench.suites import end_to_end

    held = np.ones(125_000_000)  # 1 GB in the bench process
    wl = end_to_end._cold_start(5, 500)
    res = run_workload("end_to_end", wl, get_backend("cpu"), TimingPolicy(
        warmup_calls=1, warmup_s=0.0, min_samples=2, max_samples=2, budget_s=0.0))
    assert res.status == "ok", res.note
    assert 20e6 < res.extra["rss_bytes"] < 0.8 * held.nbytes  # the child's own peak, not the parent's
    assert res.ours.status in ("PASS", "FAIL") and "rss_bytes" not in " ".join(res.ours.failures)
    del held
