"""The CPU backend's output-buffer pool (gpu_trader.cpu_fallback.output_pool): a buffer is handed
out again only once no array refers to it, whatever kind of reference the caller kept; the pool
stays within its limit; results of the public functions never share memory while alive."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

import gpu_trader
from gpu_trader.cpu_fallback import output_pool

SHAPE = (3, 200, 700)  # 3.36 MB of float64: above output_pool.MIN_BYTES


@pytest.fixture(autouse=True)
def fresh_pool():
    previous = output_pool.set_limit(64 << 20)
    output_pool.release()
    yield
    output_pool.release()
    output_pool.set_limit(previous)


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_dropped_buffer_is_handed_out_again():
    a = output_pool.empty(SHAPE, np.float64)
    address = _address(a)
    del a
    b = output_pool.empty(SHAPE, np.float64)
    assert _address(b) == address
    assert b.shape == SHAPE and b.dtype == np.float64 and b.flags.c_contiguous and b.flags.writeable


@pytest.mark.parametrize("keep", ["array", "view", "slice", "reshape", "memoryview", "frame", "transpose", "list"])
def test_a_buffer_some_object_still_refers_to_is_not_handed_out(keep):
    """Whatever the caller keeps of a result -- the array, a view or slice of it, a memoryview,
    a pandas frame built on it without a copy -- the pool hands out other memory, and writing the
    new buffer leaves the kept values as they were."""
    a = output_pool.empty(SHAPE, np.float64)
    a[...] = 7.0
    kept = {
        "array": lambda: a,
        "view": lambda: a.view(np.int64),
        "slice": lambda: a[1, 10:20],
        "reshape": lambda: a.reshape(-1),
        "memoryview": lambda: memoryview(a),
        "frame": lambda: pd.DataFrame(a[0], copy=False),
        "transpose": lambda: a.T,
        "list": lambda: [a[2]],
    }[keep]()
    address = _address(a)
    del a
    b = output_pool.empty(SHAPE, np.float64)
    assert _address(b) != address
    b[...] = -1.0
    values = {"frame": lambda: kept.to_numpy(), "list": lambda: kept[0]}.get(keep, lambda: np.asarray(kept))()
    values = values.view(np.float64)
    assert np.all(values == 7.0)
    del kept, values
    c = output_pool.empty(SHAPE, np.float64)
    assert _address(c) == address  # free again once the last reference went


def test_sizes_dtypes_and_slack():
    a = output_pool.empty(SHAPE, np.float64)
    address = _address(a)
    del a
    smaller = output_pool.empty((3, 200, 600), np.float64)  # 6/7 of the buffer: within MAX_SLACK
    assert _address(smaller) == address
    del smaller
    f32 = output_pool.empty((3, 200, 1400), np.float32)  # same bytes, other dtype
    assert _address(f32) == address and f32.dtype == np.float32 and f32.shape == (3, 200, 1400)
    del f32
    half = output_pool.empty((3, 200, 350), np.float64)  # far smaller: a buffer of its own
    assert _address(half) != address
    tiny = output_pool.empty((10,), np.float64)  # below MIN_BYTES: plain np.empty, not pooled
    assert tiny.base is None
    assert output_pool.stats()["buffers"] == 2


def test_limit_release_and_stats():
    kept = [output_pool.empty(SHAPE, np.float64) for _ in range(3)]
    stats = output_pool.stats()
    assert stats["buffers"] == 3 and stats["free_buffers"] == 0 and stats["bytes"] == 3 * kept[0].nbytes
    del kept[0]
    assert output_pool.stats()["free_buffers"] == 1
    previous = output_pool.set_limit(kept[0].nbytes)  # the oldest buffers are let go
    assert previous == 64 << 20
    assert output_pool.stats()["bytes"] <= kept[0].nbytes
    kept[1][...] = 3.0  # arrays the pool let go of stay valid
    assert np.all(kept[1] == 3.0)
    assert output_pool.release() <= kept[0].nbytes
    assert output_pool.stats()["buffers"] == 0
    output_pool.set_limit(0)
    a = output_pool.empty(SHAPE, np.float64)
    assert a.base is None and output_pool.stats()["buffers"] == 0  # off: plain np.empty


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), ("1", TypeError), (True, TypeError)])
def test_set_limit_refuses_bad_values(bad, error):
    with pytest.raises(error, match="nbytes"):
        output_pool.set_limit(bad)


def test_results_of_public_calls_never_share_memory_while_alive():
    """Two results alive at once are distinct buffers; a result dropped lends its buffer to the
    next call of the same size, which then holds exactly the new values (TA-Lib's BBANDS on each
    row: nothing of the buffer's earlier contents survives)."""
    talib = pytest.importorskip("talib")
    rng = np.random.default_rng(3)
    x = 100 + np.cumsum(rng.normal(size=(400, 600)), axis=1)
    y = x[::-1].copy()
    first = gpu_trader.bollinger(x, 20, 2.0, backend="cpu")
    before = [band.copy() for band in first]
    second = gpu_trader.bollinger(y, 20, 2.0, backend="cpu")
    for band, copy in zip(first, before):
        np.testing.assert_array_equal(band, copy)
        assert not any(np.shares_memory(band, other) for other in second)
    address = _address(first[0])
    del first, band
    third = gpu_trader.bollinger(y, 20, 2.0, backend="cpu")
    assert min(_address(b) for b in third) == address  # the dropped buffer, reused
    for row in range(0, y.shape[0], 37):
        for got, want in zip(third, talib.BBANDS(y[row], 20, 2.0, 2.0)):
            np.testing.assert_allclose(got[row], want, rtol=1e-12, atol=1e-9, equal_nan=True)


def test_threads_never_get_a_buffer_another_thread_holds():
    errors = []

    def work(k: int) -> None:
        for _ in range(30):
            a = output_pool.empty(SHAPE, np.float64)
            a.fill(k)
            b = output_pool.empty(SHAPE, np.float64)
            b.fill(-k)
            if not (np.all(a == k) and np.all(b == -k)):
                errors.append(k)
            del a, b

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert output_pool.stats()["bytes"] <= 64 << 20
