"""The bench regression gate (``--baseline``, ``--fail-on-regression``, ``gpu-trader compare``)
and the Markdown report, on the real bench JSON files of benches/results; the peer targets
(every ratio against another library must reach its goal) on synthetic metrics.

Oracle: the new runs are copies of a real run with p50s scaled by known factors (and noise
set to known values), so every case's expected verdict follows from the factor applied.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpu_trader.bench
from gpu_trader import cli
from gpu_trader.backend import get_backend
from gpu_trader.bench import workloads
from gpu_trader.bench import compare as cmp
from gpu_trader.bench.harness import CaseResult, Stats
from gpu_trader.bench.markdown import render_report
from gpu_trader.bench.targets import TARGETS, evaluate

RESULTS = Path(__file__).resolve().parent.parent / "benches" / "results"
RISK_RUN = RESULTS / "cpu-amd-epyc-2core-2026-11-25-orders-portfolio-risk.json"  # has gemm_fraction
VECTORS_RUN = RESULTS / "cpu-amd-epyc-2core-2026-11-25-vectors.json"  # has a skipped case
FEATURES_RUN = RESULTS / "cpu-amd-epyc-2core-2026-11-25.json"

# factor applied to the p50 of case i (i % 4) and the verdict it must get at the 5 % floor
FACTORS = (1.0, 1.2, 0.8, 1.03)
EXPECTED = {1.0: cmp.UNCHANGED, 1.2: cmp.REGRESSED, 0.8: cmp.IMPROVED, 1.03: cmp.UNCHANGED}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _scaled(doc: dict, factors=FACTORS) -> dict:
    new = copy.deepcopy(doc)
    for i, r in enumerate(new["results"]):
        if r.get("stats"):  # every time of the case, as a uniformly slower machine would record
            r["stats"].update({k: v * factors[i % len(factors)] for k, v in r["stats"].items()
                               if k.endswith("_s") and v is not None})
    return new


def _write(tmp_path: Path, name: str, doc: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def _main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


def _by_name(comparisons):
    return {c.name: c for c in comparisons}


# -- verdicts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("run", [RISK_RUN, FEATURES_RUN, VECTORS_RUN], ids=lambda p: p.stem)
def test_scaled_copy_of_a_real_run_gets_the_verdict_of_its_factor(run):
    old = _load(run)
    new = _scaled(old)
    got = _by_name(cmp.compare(new["results"], old["results"]))
    assert len(got) == len(old["results"])
    for i, r in enumerate(old["results"]):
        c = got[r["name"]]
        if r["status"] != "ok":
            assert c.verdict == cmp.NO_TIMING
            continue
        factor = FACTORS[i % len(FACTORS)]
        assert c.verdict == EXPECTED[factor], (r["name"], factor, c)
        assert c.ratio == pytest.approx(factor, rel=1e-12)
        assert c.threshold == cmp.MIN_CHANGE  # these files predate mad_s: the 5 % floor


def test_identical_runs_are_all_unchanged():
    doc = _load(FEATURES_RUN)
    assert {c.verdict for c in cmp.compare(doc["results"], doc["results"])} == {cmp.UNCHANGED}


def _with_mad(doc: dict, rel_mad: float) -> dict:
    doc = copy.deepcopy(doc)
    for r in doc["results"]:
        if r.get("stats"):
            r["stats"]["mad_s"] = rel_mad * r["stats"]["p50_s"]
    return doc


def test_noise_above_five_percent_widens_the_threshold():
    old = _with_mad(_load(FEATURES_RUN), 0.30)  # a noisy baseline: 30 % spread
    new = _with_mad(_scaled(_load(FEATURES_RUN)), 0.01)
    for c in cmp.compare(new["results"], old["results"]):
        assert c.threshold == pytest.approx(0.30)
        assert c.verdict == cmp.UNCHANGED  # +-20 % is inside the noise


def test_noise_in_the_new_run_counts_too():
    old = _with_mad(_load(FEATURES_RUN), 0.01)
    new = _with_mad(_scaled(_load(FEATURES_RUN), (1.3,)), 0.25)
    for c in cmp.compare(new["results"], old["results"]):
        assert c.threshold == pytest.approx(0.25, rel=1e-9)
        assert c.verdict == cmp.REGRESSED  # 30 % beyond the 25 % noise


def test_quiet_runs_use_the_five_percent_floor():
    old = _with_mad(_load(FEATURES_RUN), 0.001)
    new = _with_mad(_scaled(_load(FEATURES_RUN), (1.06, 0.94, 1.04)), 0.001)
    verdicts = [c.verdict for c in cmp.compare(new["results"], old["results"])]
    assert verdicts[:3] == [cmp.REGRESSED, cmp.IMPROVED, cmp.UNCHANGED]
    assert all(c.threshold == cmp.MIN_CHANGE for c in cmp.compare(new["results"], old["results"]))


def test_old_json_without_mad_against_new_json_with_it():
    old = _load(FEATURES_RUN)
    assert all("mad_s" not in r["stats"] for r in old["results"])
    new = _with_mad(_scaled(old), 0.02)
    got = cmp.compare(new["results"], old["results"])
    assert {c.threshold for c in got} == {cmp.MIN_CHANGE}
    assert [c.verdict for c in got[:4]] == [EXPECTED[f] for f in FACTORS]


def test_different_sizes_or_dtype_are_not_comparable():
    old = _load(FEATURES_RUN)
    new = _scaled(old, (1.5,))
    new["results"][0]["sizes"] = {k: v * 2 for k, v in new["results"][0]["sizes"].items()}
    new["results"][1]["dtype"] = "float32"
    got = cmp.compare(new["results"], old["results"])
    assert got[0].verdict == got[1].verdict == cmp.NOT_COMPARABLE
    assert "sizes" in got[0].note and "float64 -> float32" in got[1].note
    assert got[0].threshold is None
    assert {c.verdict for c in got[2:]} == {cmp.REGRESSED}


def test_new_and_missing_cases_are_listed():
    old = _load(FEATURES_RUN)
    new = copy.deepcopy(old)
    dropped = new["results"].pop(3)["name"]
    new["results"][0]["name"] = "brand new case"
    new["results"][1]["backend"] = "cuda"  # same case on another backend is another case
    got = cmp.compare(new["results"], old["results"])
    verdicts = {(c.name, c.backend): c.verdict for c in got}
    assert verdicts[("brand new case", "cpu")] == cmp.NEW
    assert verdicts[(old["results"][1]["name"], "cuda")] == cmp.NEW
    for name in (dropped, old["results"][0]["name"], old["results"][1]["name"]):
        assert verdicts[(name, "cpu")] == cmp.MISSING
    assert len(got) == len(new["results"]) + 3
    assert [c.verdict for c in got[-3:]] == [cmp.MISSING] * 3  # missing ones come last


def test_min_change_must_be_positive():
    with pytest.raises(ValueError, match="min_change"):
        cmp.compare([], [], min_change=0.0)


# -- the noise field in the harness -----------------------------------------------------------
def test_stats_mad_is_numpy_median_absolute_deviation():
    ns = np.random.default_rng(1).integers(1_000, 1_000_000, 501)
    secs = ns * 1e-9
    s = Stats.from_ns(ns.tolist())
    assert s.mad_s == pytest.approx(np.median(np.abs(secs - np.median(secs))), rel=1e-12)
    assert s.to_dict()["mad_s"] == s.mad_s


def test_stats_without_mad_still_construct():
    s = Stats(n=1, p50_s=1.0, p95_s=1.0, p99_s=1.0, mean_s=1.0, min_s=1.0, max_s=1.0)
    assert s.mad_s is None


# -- the CLI: exit codes ----------------------------------------------------------------------
def test_cli_compare_exit_codes_with_and_without_fail_on_regression(tmp_path):
    old = _write(tmp_path, "old.json", _load(RISK_RUN))
    new = _write(tmp_path, "new.json", _scaled(_load(RISK_RUN)))
    code, text = _main(["compare", old, new])
    assert code == cli.EXIT_OK == 0
    assert "REGRESSED" in text and "IMPROVED" in text and "unchanged" in text
    code, _ = _main(["compare", old, new, "--fail-on-regression"])
    assert code == cli.EXIT_REGRESSION == 3
    faster = _write(tmp_path, "faster.json", _scaled(_load(RISK_RUN), (1.0, 0.8)))
    assert _main(["compare", old, faster, "--fail-on-regression"])[0] == 0


def test_cli_min_change_raises_the_floor(tmp_path):
    old = _write(tmp_path, "old.json", _load(RISK_RUN))
    new = _write(tmp_path, "new.json", _scaled(_load(RISK_RUN)))
    code, text = _main(["compare", old, new, "--fail-on-regression", "--min-change", "0.25"])
    assert code == 0  # +-20 % is inside a 25 % floor
    assert "REGRESSED" not in text and "IMPROVED" not in text and "+-25%" in text


def test_cli_compare_exits_one_when_the_new_run_has_an_error(tmp_path):
    doc = _load(FEATURES_RUN)
    broken = _scaled(doc)
    broken["results"][0].update(status="error", note="RuntimeError: boom", stats=None)
    old, new = _write(tmp_path, "old.json", doc), _write(tmp_path, "new.json", broken)
    code, text = _main(["compare", old, new, "--fail-on-regression"])
    assert code == cli.EXIT_CASE_ERROR
    assert cmp.NO_TIMING in text


def test_cli_compare_bad_files_are_argument_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": [{"suite": "x"}]}')
    with pytest.raises(SystemExit) as exc:
        cli.main(["compare", str(FEATURES_RUN), str(bad)])
    assert exc.value.code == 2
    assert "is not a gpu-trader bench JSON file" in capsys.readouterr().err


def _case_results(doc: dict) -> list[CaseResult]:
    out = []
    for r in doc["results"]:
        res = CaseResult(r["suite"], r["name"], r["backend"], r["device"], r["sizes"], r["dtype"], r["unit"], None,
                         status=r["status"], note=r["note"])
        if r.get("stats"):
            res.stats = Stats(**r["stats"])
        out.append(res)
    return out


@pytest.fixture
def fake_run(monkeypatch):
    """``gpu_trader.bench.run`` replaced by one returning the given results (no timing)."""
    def install(doc: dict):
        monkeypatch.setattr(gpu_trader.bench, "run", lambda *a, **k: _case_results(doc))
    return install


def test_cli_bench_baseline_gate_and_report(tmp_path, fake_run):
    old_doc = _load(FEATURES_RUN)
    old = _write(tmp_path, "old.json", old_doc)
    fake_run(_scaled(old_doc))
    argv = ["bench", "--backend", "cpu", "--suite", "features", "--baseline", old]
    code, text = _main(argv)
    assert code == 0 and "Against baseline" in text and "REGRESSED" in text
    report = tmp_path / "r.md"
    code, _ = _main(argv + ["--fail-on-regression", "--report", str(report)])
    assert code == 3
    assert "## Against the baseline" in report.read_text()
    fake_run(_scaled(old_doc, (1.0, 0.9)))
    assert _main(argv + ["--fail-on-regression"])[0] == 0


def test_cli_bench_case_error_wins_over_regression(tmp_path, fake_run):
    old_doc = _load(FEATURES_RUN)
    new_doc = _scaled(old_doc)
    new_doc["results"][0].update(status="error", note="RuntimeError: boom", stats=None)
    fake_run(new_doc)
    code, _ = _main(["bench", "--suite", "features", "--baseline", _write(tmp_path, "old.json", old_doc),
                     "--fail-on-regression"])
    assert code == cli.EXIT_CASE_ERROR == 1


@pytest.mark.parametrize("argv, message", [
    (["bench", "--fail-on-regression"], "--fail-on-regression needs --baseline"),
    (["bench", "--min-change", "0.1"], "--min-change needs --baseline"),
    (["compare", str(FEATURES_RUN), str(FEATURES_RUN), "--min-change", "0"], "expected a fraction > 0"),
    (["compare", str(FEATURES_RUN), str(FEATURES_RUN), "--min-change", "x"], "expected a fraction > 0"),
    (["bench", "--report", "/nonexistent/dir/r.md"], "--report: directory"),
    (["compare", "/nonexistent/old.json", str(FEATURES_RUN)], "baseline '/nonexistent/old.json': cannot read"),
])
def test_cli_gate_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "3 --fail-on-regression and a case regressed" in text and "1 a case raised an error" in text
    assert "exit status" in (cli.__doc__ or "").lower()


# -- the Markdown report ----------------------------------------------------------------------
def _images(text: str) -> list[bytes]:
    marker = "data:image/png;base64,"
    chunks = text.split(marker)[1:]
    return [base64.b64decode(c.split(")", 1)[0]) for c in chunks]


def test_report_is_self_contained_and_lists_every_case(tmp_path):
    pytest.importorskip("matplotlib")  # a dev dependency: present wherever the tests run
    old = _write(tmp_path, "old.json", _load(RISK_RUN))
    doc = _scaled(_load(RISK_RUN))
    doc["results"] += _load(VECTORS_RUN)["results"]  # two suites, a skipped case, new cases
    new = _write(tmp_path, "new.json", doc)
    report = tmp_path / "report.md"
    code, text = _main(["compare", old, new, "--report", str(report)])
    assert code == 0 and f"wrote {report}" in text
    md = report.read_text()
    for r in doc["results"]:
        assert f"| {r['name']} |" in md
    assert "## Against the baseline" in md and "**REGRESSED**" in md
    images = _images(md)
    groups = {(r["suite"], r["backend"]) for r in doc["results"]}
    assert len(images) == len(groups) + 1  # one latency plot per (suite, backend), one roofline plot
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images)
    assert "## Roofline fractions" in md


def test_report_without_matplotlib_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    doc = _load(FEATURES_RUN)
    md = render_report(doc["results"])
    assert "matplotlib is not installed" in md
    assert "data:image" not in md
    for r in doc["results"]:
        assert f"| {r['name']} |" in md
    assert "Against the baseline" not in md  # no comparison given


# -- invalid run files are refused (exit 2), never a traceback or a wrong verdict -------------
def _corrupt(mutate) -> dict:
    doc = _load(FEATURES_RUN)
    mutate(doc, next(r for r in doc["results"] if r["status"] == "ok"))
    return doc


CORRUPTIONS = {
    "nan p50": lambda d, r: r["stats"].update(p50_s=float("nan")),
    "infinite p50": lambda d, r: r["stats"].update(p50_s=float("inf")),
    "negative p50": lambda d, r: r["stats"].update(p50_s=-r["stats"]["p50_s"]),
    "zero p50": lambda d, r: r["stats"].update(p50_s=0.0),
    "string p50": lambda d, r: r["stats"].update(p50_s="0.1"),
    "bool p50": lambda d, r: r["stats"].update(p50_s=True),
    "huge int p50": lambda d, r: r["stats"].update(p50_s=10 ** 400),
    "p99 below p50": lambda d, r: r["stats"].update(p99_s=r["stats"]["p50_s"] / 2),
    "mad above p50": lambda d, r: r["stats"].update(mad_s=200 * r["stats"]["p50_s"]),
    "negative mad": lambda d, r: r["stats"].update(mad_s=-1e-6),
    "stats a list": lambda d, r: r.update(stats=[1, 2]),
    "ok without stats": lambda d, r: r.update(stats=None),
    "unknown status": lambda d, r: r.update(status="fine"),
    "suite not a string": lambda d, r: r.update(suite=3),
    "empty name": lambda d, r: r.update(name=""),
    "sizes a string": lambda d, r: r.update(sizes="big"),
    "record a list": lambda d, r: d["results"].append([1]),
    "results an object": lambda d, r: d.update(results={"a": 1}),
    "duplicate case": lambda d, r: d["results"].append(copy.deepcopy(r)),
    "deep nesting": lambda d, r: r.update(extra=json.loads("[" * 50 + "]" * 50)),  # allowed, see below
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_cli_compare_refuses_invalid_run_files(tmp_path, capsys, what):
    doc = _corrupt(CORRUPTIONS[what])
    new = _write(tmp_path, "new.json", doc)
    if what == "deep nesting":  # unknown fields are not the gate's business: loads and compares
        assert _main(["compare", str(FEATURES_RUN), new, "--fail-on-regression"])[0] == cli.EXIT_OK
        return
    for argv in (["compare", str(FEATURES_RUN), new, "--fail-on-regression"],
                 ["compare", new, str(FEATURES_RUN), "--fail-on-regression"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == cli.EXIT_BAD_ARGS
        assert "is not a gpu-trader bench JSON file" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "{", "\xff\xfe", "null", "[]", '{"results": 1}'])
def test_malformed_json_documents_are_value_errors(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match="is not a gpu-trader bench JSON file"):
        cmp.load_run(str(path))


def test_non_regular_and_oversized_files_are_refused_without_reading_them(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(ValueError, match="cannot read"):
        cmp.load_run(str(fifo))
    with pytest.raises(ValueError, match="cannot read"):
        cmp.load_run(str(tmp_path))
    monkeypatch.setattr(cmp, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(1 << 40)  # a sparse 1 TiB file
    with pytest.raises(ValueError, match="cannot read"):
        cmp.load_run(str(big))


def test_every_committed_result_file_is_valid():
    for path in RESULTS.glob("*.json"):
        assert cmp.load_run(str(path))["results"]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                  max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["p50_s", "p95_s", "p99_s", "mad_s", "stats", "status", "suite", "sizes", "dtype"]),
       value=_JSON)
def test_fuzzed_fields_are_refused_or_compare_cleanly(tmp_path, field, value):
    doc = _load(FEATURES_RUN)
    record = doc["results"][0]
    (record["stats"] if field.endswith("_s") else record)[field] = value
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(doc))
    try:
        loaded = cmp.load_run(str(path))
    except ValueError:
        return
    for c in cmp.compare(loaded["results"], _load(FEATURES_RUN)["results"]):
        assert c.ratio is None or (np.isfinite(c.ratio) and c.ratio > 0)
        assert c.threshold is None or 0 < c.threshold <= 1 + 1e-9


# -- output paths: checked before the run, JSON never lost ------------------------------------
@pytest.fixture
def counted_run(monkeypatch):
    calls = []

    def run(*a, **k):
        calls.append(1)
        return _case_results(_load(FEATURES_RUN))

    monkeypatch.setattr(gpu_trader.bench, "run", run)
    return calls


@pytest.mark.parametrize("option", ["--json", "--report"])
@pytest.mark.parametrize("target, message", [("dir", "is a directory"), ("file/sub.json", "does not exist"),
                                              ("fifo", "not a regular file")])
def test_bench_refuses_unwritable_outputs_before_running(tmp_path, capsys, counted_run, option, target, message):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--suite", "features", option, str(tmp_path / target)])
    assert exc.value.code == cli.EXIT_BAD_ARGS
    assert message in capsys.readouterr().err
    assert not counted_run, "the run started although its output could not be written"


def test_bench_refuses_the_same_file_for_json_and_report(tmp_path, capsys, counted_run):
    path = str(tmp_path / "out")
    with pytest.raises(SystemExit):
        cli.main(["bench", "--json", path, "--report", path])
    assert "different files" in capsys.readouterr().err and not counted_run


def test_failing_report_keeps_the_json_and_exits_four(tmp_path, capsys, counted_run, monkeypatch):
    from gpu_trader.bench import markdown

    def broken(*a, **k):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(markdown, "render_report", broken)
    out, rep = tmp_path / "run.json", tmp_path / "r.md"
    code, _ = _main(["bench", "--suite", "features", "--json", str(out), "--report", str(rep)])
    assert code == cli.EXIT_OUTPUT_ERROR == 4
    assert "could not write" in capsys.readouterr().err and not rep.exists()
    assert len(cmp.load_run(str(out))["results"]) == len(_load(FEATURES_RUN)["results"])


def test_failing_json_write_still_writes_the_report_and_keeps_the_old_file(tmp_path, counted_run, monkeypatch):
    from gpu_trader.bench import report

    out, rep = tmp_path / "run.json", tmp_path / "r.md"
    out.write_text("old content")
    real_dumps = json.dumps
    monkeypatch.setattr(report.json, "dumps", lambda *a, **k: real_dumps(*a, **k) if a and a[0] is None else 1 / 0)
    code, _ = _main(["bench", "--suite", "features", "--json", str(out), "--report", str(rep)])
    assert code == cli.EXIT_OUTPUT_ERROR
    assert out.read_text() == "old content" and "| " in rep.read_text()


def test_outputs_follow_links_and_keep_permissions(tmp_path, counted_run):
    real = tmp_path / "real.json"
    real.write_text("{}")
    real.chmod(0o644)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert _main(["bench", "--suite", "features", "--json", str(link)])[0] == cli.EXIT_OK
    assert link.is_symlink() and cmp.load_run(str(link))["results"]
    assert (real.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1e3", "100000", "9" * 400])
def test_bad_bench_thread_count_is_refused_before_running(monkeypatch, capsys, counted_run, value):
    monkeypatch.setenv("GPU_TRADER_BENCH_THREADS", value)
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--suite", "vectors"])
    assert exc.value.code == cli.EXIT_BAD_ARGS
    assert "GPU_TRADER_BENCH_THREADS" in capsys.readouterr().err and not counted_run


@pytest.mark.parametrize("value, threads", [("", 1), ("  ", 1), ("2", 2), (" 3 ", 3)])
def test_bench_thread_count_values(monkeypatch, value, threads):
    from gpu_trader.bench.suites.vectors import bench_threads

    monkeypatch.setenv("GPU_TRADER_BENCH_THREADS", value)
    assert bench_threads() == threads


# -- peer targets: every ratio of the CPU-speed table, PASS / FAIL / n/a on synthetic metrics -------
# target key -> (the peer's metric, the ratio it needs, a p50 that passes the key's latency checks)
PEER_TARGETS = {
    **{f"features.{n}_100": ("ratio:talib", 1.0, 1e-6) for n in ("sma", "ema", "rsi", "macd", "bollinger", "atr")},
    "features.full": ("ratio:talib", 1.0, 1e-6),
    "features.stream": ("ratio:talib_stream", 1.0, 1e-6),
    "risk.cvar": ("ratio:empyrical", 1.0, 1e-6),
    "risk.sharpe": ("ratio:empyrical", 1.0, 1e-6),
    "risk.corr_50": ("ratio:numpy", 1.0, 1e-6),
    "risk.var_historical_batch": ("ratio:numpy", 1.0, 1e-3),
    "risk.rolling_corr": ("ratio:jax", 1.0, 1e-3),
    "features.batched": ("ratio:talib", 3.0, 1e-3),
    "features.batched_sma": ("ratio:talib", 3.0, 1e-3),
}


@pytest.mark.parametrize("key", sorted(PEER_TARGETS))
def test_peer_targets_pass_fail_and_n_a(key):
    metric, need, p50 = PEER_TARGETS[key]
    checks = TARGETS[key].ours
    base = {"p50_s": p50, "x_copy": 2.0, "ratio:bottleneck": 1.0}
    assert evaluate(checks, {**base, metric: need * 1.01}, "cpu").status == "PASS"
    failed = evaluate(checks, {**base, metric: need * 0.99}, "cpu")
    assert failed.status == "FAIL" and failed.failures[0].startswith(f"{metric} = ")
    missing = evaluate(checks, {**base, metric: None}, "cpu")  # peer not installed / too old: not a FAIL
    assert missing.status == "n/a" and missing.missing == (metric,)
    gpu = evaluate(checks, {**base, "bw_fraction": 0.9, metric: need * 0.5}, "cuda")
    assert gpu.status in ("PASS", "-")  # the peer ratio is the CPU's target only


def test_batched_targets_copy_multiple_and_monte_carlo_roofline():
    batched = TARGETS["features.batched"].ours
    ok = {"ratio:talib": 3.5, "x_copy": 2.5}
    assert evaluate(batched, ok, "cpu").status == "PASS"
    assert evaluate(batched, {**ok, "x_copy": 2.6}, "cpu").status == "FAIL"
    assert evaluate(batched, {**ok, "ratio:talib": 2.9}, "cpu").status == "FAIL"  # 1.95-3.15x is not enough
    mc = TARGETS["risk.monte_carlo"].ours
    assert evaluate(mc, {"x_roofline": 1.9, "p50_s": 5.0}, "cpu").status == "PASS"
    assert evaluate(mc, {"x_roofline": 2.1, "p50_s": 5.0}, "cpu").status == "FAIL"


@pytest.mark.parametrize("size", ["quick", "standard", "full"])
def test_every_peer_is_timed_on_the_case_its_target_names(size):
    """Each peer target sits on a case that times that peer, at every size."""
    cases = {w.name: w for suite in ("features", "risk") for w in workloads(suite, size)}
    by_target: dict[str, list] = {}
    for w in cases.values():
        by_target.setdefault(w.target, []).append(w)
    for key, (metric, _, _) in PEER_TARGETS.items():
        if size != "full" and f"{key}_small" in TARGETS:  # below full size a batched case has its own target
            key = f"{key}_small"
        assert by_target.get(key), f"no case carries {key}"
        for w in by_target[key]:
            assert metric.removeprefix("ratio:") in {r.name for r in w.references}, (key, w.name)
    assert {w.name for w in by_target["features.atr_100"]} == {"atr(14) 100 bars"}
    assert {w.name for w in by_target["risk.corr_50"]} == {"corr 50 assets x 252 days"}
    assert len(by_target["risk.monte_carlo"]) == 3 and all(w.extra_metrics for w in by_target["risk.monte_carlo"])


def test_talib_stream_peer_computes_the_same_set_as_feature_stream():
    pytest.importorskip("talib.stream")
    from gpu_trader.bench.harness import SkipCase
    from gpu_trader.bench.suites import features

    try:
        peer = features._talib_stream_setup()
    except SkipCase:
        pytest.skip("TA-Lib without stream handles")
    ours = features._stream_setup(get_backend("cpu"))
    for _ in range(50):
        mine, theirs = ours(), peer()  # mine: (len(keys), 1), row k = FeatureStream.keys[k]
        assert mine.shape == (len(theirs), 1)
        np.testing.assert_allclose(mine[:, 0], theirs, rtol=1e-9, atol=1e-9)


def test_numpy_quantile_peer_is_the_same_historical_var():
    from gpu_trader.bench.suites import risk

    (wl,) = [w for w in risk.workloads("quick") if w.target == "risk.var_historical_batch"]
    (ref,) = wl.references
    ours = wl.setup(get_backend("cpu"))()
    np.testing.assert_allclose(ours, ref.setup()(), rtol=1e-12)
    assert ours.shape == (200,) and np.all(ours > 0)
