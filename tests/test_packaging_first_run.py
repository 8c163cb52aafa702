"""benches/gpu_first_run.sh, the first script a lent GPU runs: what can be checked without one.

Its syntax (``bash -n``), shellcheck where installed, the time boxes (under 10 minutes in all),
and its ``--dry`` mode: the same six steps on the cpu backend with tiny sizes, each writing
what the GPU run writes under ``$OUT``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_trader._internal import jit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benches" / "gpu_first_run.sh"
STEPS = ("env", "install", "smoke", "tests", "bench", "mc")


def test_syntax_and_time_boxes():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    limits = dict(re.findall(r"^step (\w+) (\d+) \w+$", SCRIPT.read_text(), re.M))
    assert tuple(limits) == STEPS
    assert sum(map(int, limits.values())) + 10 * len(limits) <= 600  # with each step's kill grace


def test_shellcheck_finds_nothing():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_dry_run_writes_every_output(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    if jit.cache_dir() is not None:  # reuse this session's compiled kernels (the script's default is a fresh one)
        env[jit.ENV_VAR] = os.path.dirname(jit.cache_dir())
    proc = subprocess.run(["bash", str(SCRIPT), "--dry"], env=env, capture_output=True, text=True, timeout=600)
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, summary + "".join((out / f"{s}.log").read_text()[-1500:] for s in STEPS)
    assert [line.split()[0] for line in summary.splitlines()[:-1]] == list(STEPS)
    smoke = json.loads((out / "smoke.json").read_text())
    assert smoke["backend"] == "cpu" and smoke["knn_self_match"] and smoke["ema_max_rel_err"] < 1e-9
    mc = json.loads((out / "mc-scaling.json").read_text())
    assert [r["portfolios"] for r in mc] == [1, 10] and all(r["p50_s"] > 0 for r in mc)
    bench = json.loads((out / "bench-cpu-quick.json").read_text())
    assert bench  # the bench's own JSON (tests/test_bench.py checks its schema)
    assert "<testsuite" in (out / "tests.xml").read_text()


def test_a_failing_step_is_counted_and_the_rest_still_run(tmp_path):
    """A step that fails (here: no Python at all) is recorded, the others run, the exit status counts them."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": "/nonexistent/python"}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry"], env=env, capture_output=True, text=True, timeout=120)
    summary = (out / "summary.txt").read_text()
    assert [line.split()[0] for line in summary.splitlines()[:-1]] == list(STEPS)
    assert proc.returncode == summary.count("failed (exit")
    assert proc.returncode >= 4  # smoke, tests, bench, mc need Python
