"""The bench regression gate (``--baseline``, ``--fail-on-regression``, ``gpu-trader compare``)
and the Markdown report, on the real bench JSON files of benches/results.

Oracle: the new runs are copies of a real run with p50s scaled by known factors (and noise
set to known values), so every case's expected verdict follows from the factor applied.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import gpu_trader.bench
from gpu_trader import cli
from gpu_trader.bench import compare as cmp
from gpu_trader.bench.harness import CaseResult, Stats
from gpu_trader.bench.markdown import render_report

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
        if r.get("stats"):
            r["stats"]["p50_s"] *= factors[i % len(factors)]
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
