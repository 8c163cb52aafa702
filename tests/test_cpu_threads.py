"""The CPU thread policy (docs/design.md#cpu-threads): the OpenMP wait policy gpu_trader picks,
the thread cap, the helper threads, and the batched indicator driver's chunk claiming, whose
results must not depend on the thread count or the chunking."""
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
    for group in (1, ind.SERIES_PER_ITEM):
        n_items = ind._n_items(ins, rows, group)
        for threads in (1, 2, 5):  # more workers than helper threads: the extra ones may never start
            for chunk in sorted({1, 3, 7, n_items, n_items + 5}):
                got = np.full_like(expected, -1.0)
                ind._run_threads(rows, plan_params, ins, got, group, threads, chunk)
                np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8),
                                              err_msg=f"{group=} {threads=} {chunk=}")


@pytest.mark.parametrize("cap", ["cpus", "numba"])
def test_a_call_capped_to_one_thread_runs_on_the_caller(monkeypatch, cap):
    """One usable CPU, or numba.set_num_threads(1) on the calling thread: no helper thread
    is asked, and the results do not change."""
    x = random_ohlcv(50, 500, 1)[2]
    expected = gt.sma(x, 10)

    def no_helpers(*args):
        raise AssertionError("helper threads used")

    monkeypatch.setattr(ind, "run_on_threads", no_helpers)
    if cap == "cpus":
        monkeypatch.setattr(ind, "usable_cpus", lambda: 1)
        np.testing.assert_array_equal(gt.sma(x, 10), expected)
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        np.testing.assert_array_equal(gt.sma(x, 10), expected)
    finally:
        numba.set_num_threads(before)


def test_run_on_threads_never_waits_for_a_helper_that_has_not_started():
    """The caller's kernel does all the work when the helpers are busy; their queued calls are
    cancelled, so the call returns as soon as the caller is done."""
    import threading

    release = threading.Event()
    blockers = [cpu_fallback._helpers().submit(release.wait) for _ in range(cpu_fallback._helpers()._max_workers)]
    calls = []
    try:
        cpu_fallback.run_on_threads(lambda k: calls.append(k), 3)
        assert calls == [0]
    finally:
        release.set()
        for f in blockers:
            f.result()


def test_run_on_threads_propagates_a_kernel_error():
    def kernel(k):
        if k == 0:
            raise ValueError("caller")

    with pytest.raises(ValueError, match="caller"):
        cpu_fallback.run_on_threads(kernel, 2)


@pytest.mark.parametrize("helpers_busy", [True, False])
def test_run_on_threads_keeps_no_reference_to_its_arguments(helpers_busy):
    """Once the call returns, nothing of the pool holds its arguments: not a queued helper call
    that was cancelled, not a helper that has returned but not yet let go of its queue entry. (A
    batched call's output buffer kept alive that way outlives the caller's last reference, and
    the next call's buffer is allocated beside it: the peak memory of a chunked sweep grows.)"""
    import threading
    import weakref

    release = threading.Event()
    n_blockers = cpu_fallback._helpers()._max_workers if helpers_busy else 0
    blockers = [cpu_fallback._helpers().submit(release.wait) for _ in range(n_blockers)]
    try:
        for _ in range(20):
            payload = np.empty(8)
            ref = weakref.ref(payload)
            cpu_fallback.run_on_threads(lambda buffer, k: buffer.fill(k), 3, payload)
            del payload
            assert ref() is None
    finally:
        release.set()
        for f in blockers:
            f.result()


@pytest.mark.parametrize("n_series, group", [(3, 1), (7, 1), (8, ind.SERIES_PER_ITEM), (400, ind.SERIES_PER_ITEM)])
def test_series_are_grouped_only_when_every_thread_gets_a_group(monkeypatch, n_series, group):
    """Few long series keep one series an item (both threads busy); enough series go four an
    item (the interleaved bodies); the results are the same either way."""
    monkeypatch.setattr(ind, "usable_cpus", lambda: 2)
    if numba.get_num_threads() < 2:
        pytest.skip("numba runs on one thread here")
    x = random_ohlcv(n_series, 30_000 // n_series + 50, 2)[2]
    seen = []
    run_threads = ind._run_threads
    monkeypatch.setattr(ind, "_run_threads", lambda *a: seen.append(a[4]) or run_threads(*a))
    got = gt.ema(x, 9)
    assert seen == [group]
    np.testing.assert_array_equal(got, np.stack([gt.ema(row, 9) for row in x]))
