"""The CPU thread policy (docs/design.md#cpu-threads): the OpenMP wait policy gpu_trader picks,
the thread cap, and the batched indicator driver's chunk claiming, whose results must not depend
on the thread count or the chunking."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from conftest import random_ohlcv

import gpu_trader as gt
from gpu_trader import cpu_fallback
from gpu_trader.cpu_fallback import indicators as ind

ROOT = Path(__file__).resolve().parents[1]


def _wait_policy_after_import(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != cpu_fallback.WAIT_POLICY_VAR}
    if env_value is not None:
        env[cpu_fallback.WAIT_POLICY_VAR] = env_value
    code = "import os, gpu_trader.cpu_fallback; print(repr(os.environ.get('OMP_WAIT_POLICY')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_first_use_of_the_cpu_backend_makes_openmp_workers_sleep():
    assert _wait_policy_after_import(None) == "'PASSIVE'"


@pytest.mark.parametrize("value", ["ACTIVE", "passive", ""])
def test_a_wait_policy_the_user_set_is_kept(value):
    assert _wait_policy_after_import(value) == repr(value)


def test_configure_process_applies_the_cpu_policy(monkeypatch):
    monkeypatch.delenv(cpu_fallback.WAIT_POLICY_VAR, raising=False)
    gt.get_backend("cpu").configure_process()  # the package is imported already: not by its import
    assert os.environ[cpu_fallback.WAIT_POLICY_VAR] == "PASSIVE"


def test_usable_cpus_follows_the_affinity(monkeypatch):
    assert 1 <= cpu_fallback.usable_cpus() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
        assert cpu_fallback.usable_cpus() == 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cpu_fallback.usable_cpus() == 1


@pytest.mark.parametrize("n_items, threads, item_elements", [
    (1, 2, 10), (2, 2, 10), (31, 2, 10), (2000, 2, 2520), (2000, 16, 2520), (64, 4, 1), (5, 2, 10**9),
])
def test_chunks_are_many_and_bounded(n_items, threads, item_elements):
    chunk = ind._chunk_items(n_items, threads, item_elements)
    assert chunk >= 1
    if chunk > 1:
        assert -(-n_items // chunk) >= ind.CHUNKS_PER_THREAD * threads
        assert chunk * item_elements <= ind.CHUNK_ELEMENTS


CASES = [("sma", "c", (20,)), ("ema", "c", (5,)), ("macd", "c", (12, 26, 9)), ("bollinger", "c", (20, 2.0)),
         ("atr", "hlc", (14,)), ("stoch", "hlc", (5, 3, 3)), ("obv", "cv", ()), ("vwap", "hlcv", (10,))]


def _plan_inputs(n_series, n_bars, dtype):
    h, l, c, v = random_ohlcv(n_series, n_bars, 3, dtype)
    c = c.copy()
    c[n_series // 2, :7] = np.nan  # a late listing
    c[n_series - 1, n_bars // 2] = np.nan  # an interior NaN
    fields = {"high": h, "low": l, "close": c, "volume": v}
    names = [name for name, _, _ in CASES]
    params = [np.array([p if p else (0.0,)], dtype=np.float64) for _, _, p in CASES]
    return names, params, tuple(fields[f] for f in ind._FIELD_INDEX)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_series", [1, 3, 37])
def test_parallel_driver_equals_serial_whatever_the_threads_and_chunks(dtype, n_series):
    """Every work item is computed exactly once, into its own place, however the items are
    chunked and shared out (one chunk, uneven chunks, one item a chunk, more threads than items)."""
    names, params, ins = _plan_inputs(n_series, 120, dtype)
    (rows, plan_params), _, n_rows_out = ind._prepare(names, params)
    expected = np.full((n_rows_out,) + ins[0].shape, -1.0, dtype=dtype)
    ind._run_plan_serial(rows, plan_params, ins, expected)
    n_items = n_series * rows.shape[0]
    for threads in sorted({1, min(2, numba.get_num_threads())}):
        for chunk in sorted({1, 3, 7, n_items, n_items + 5}):
            got = np.full_like(expected, -1.0)
            ind._run_plan_parallel(rows, plan_params, ins, got, threads, chunk)
            np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8), err_msg=f"{threads=} {chunk=}")


def test_a_capped_call_restores_the_callers_thread_count(monkeypatch):
    """With fewer usable CPUs than numba threads a call runs on fewer threads (serially on one)
    and leaves the calling thread's numba setting as it was; the results do not change."""
    x = random_ohlcv(50, 500, 1)[2]
    expected = gt.sma(x, 10)
    before = numba.get_num_threads()
    monkeypatch.setattr(ind, "usable_cpus", lambda: 1)
    np.testing.assert_array_equal(gt.sma(x, 10), expected)
    assert numba.get_num_threads() == before
