"""Device -> host reads per call, counted without a GPU.

On a GPU every ``bool()``/``int()``/``float()`` of a device value, ``.item()``/``.tolist()``
and every ``nonzero``-like function (its result size) waits for the device and copies to the
host. These tests run the array-namespace code with NumPy arrays of a subclass that counts
such conversions, through a namespace that refuses the size-dependent functions, and wrap
the backend's transfer function (``Backend.to_numpy``):

* ``aggregate_bars``: the ranges its checks and its bar grid need are one device vector read
  once (``market_xp.tick_ranges``: before, eight ``min``/``max`` reads, two each for ts,
  price, size and symbol), and the GPU's segmented reduction finds its segments without
  ``flatnonzero`` (before, one more read for the segment count);
* ``check_observations``: one flag read on data with NaNs (before, ``any`` then ``min``: two);
* the Monte Carlo tail merge: one read per chunk (its candidate count), never a sort of the
  whole tail (``tests/test_montecarlo.py`` counts the sorted elements);
* the k-NN L2 tile scores: one pass fewer over each ``(queries, rows)`` score tile, the
  results bit for bit those of ``2 q.x - |x|^2``.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import gpu_trader as gt
import gpu_trader.marketdata as md
from gpu_trader._internal import market_xp, montecarlo_xp, validation, vector_xp

NS = 10**9
T0 = 1_700_000_000 * NS


class _Device(np.ndarray):
    """A NumPy array standing for a device array: counts reads of its values on the host."""

    reads = 0

    def _read(self):
        type(self).reads += 1

    def __bool__(self):
        self._read()
        return super().__bool__()

    def __int__(self):
        self._read()
        return super().__int__()

    def __float__(self):
        self._read()
        return super().__float__()

    def __index__(self):
        self._read()
        return super().__index__()

    def item(self, *args):
        self._read()
        return super().item(*args)

    def tolist(self):
        self._read()
        return super().tolist()


def _device(*arrays):
    return tuple(np.asarray(a).view(_Device) for a in arrays)


class _StrictNumpy:
    """NumPy as an array namespace without the functions whose result size needs a host read."""

    FORBIDDEN = {"nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract"}

    def __getattr__(self, name):
        if name in self.FORBIDDEN:
            raise AssertionError(f"xp.{name} reads its result size on the host")
        return getattr(np, name)


@pytest.fixture
def reads():
    _Device.reads = 0
    yield _Device
    _Device.reads = 0


def _ticks(n=3000, n_sym=4, seed=0):
    rng = np.random.default_rng(seed)
    ts = T0 + rng.integers(0, 3 * 3600 * NS, n)
    price = rng.uniform(10.0, 20.0, n)
    size = rng.integers(1, 100, n).astype(float)
    sym = rng.integers(0, n_sym, n)
    return ts, price, size, sym


def test_tick_ranges_are_one_vector_read_once(reads):
    ts, price, size, sym = _ticks()
    vec = market_xp.tick_ranges(_StrictNumpy(), *_device(ts, price, size, sym))
    assert reads.reads == 0 and vec.shape == (8,)
    got = market_xp.tick_ranges_host(np.asarray(vec), ts.dtype, sym)
    assert got == (int(ts.min()), int(ts.max()), int(sym.min()), int(sym.max()),
                   price.min(), price.max(), size.min(), size.max())
    # unsigned ids and times keep their bits: 2**63 is reported, not wrapped
    big = np.array([5, 2**63], dtype=np.uint64)
    raw = market_xp.tick_ranges(np, big, np.ones(2), np.ones(2), big)
    assert market_xp.tick_ranges_host(raw, big.dtype, big)[:4] == (5, 2**63, 5, 2**63)
    nan = market_xp.tick_ranges(np, ts[:2], np.array([1.0, np.nan]), np.ones(2), None)
    assert np.isnan(market_xp.tick_ranges_host(nan, ts.dtype, None)[4])


@functools.lru_cache(maxsize=1)
def _segments_on_cpu():
    import numba

    from gpu_trader.kernels.marketdata import reduce_segment

    @numba.njit
    def run(n_slots, *args):
        for j in range(n_slots):
            reduce_segment(j, *args)

    return lambda n_slots, *args: run(n_slots, *(np.asarray(a).view(np.ndarray) for a in args))


def test_segmented_bars_find_their_segments_without_host_reads(reads):
    ts, price, size, sym = _ticks(seed=1)
    tf = 60 * NS
    first, n_bars = int(ts.min()) // tf, int(ts.max()) // tf - int(ts.min()) // tf + 1
    out = market_xp.bars_by_sort(_StrictNumpy(), _segments_on_cpu(), *_device(ts, price, size, sym), tf, first,
                                 n_bars, 4)
    assert reads.reads == 0
    ref = gt.get_backend("cpu").ops("marketdata").aggregate_bars(ts, price, size, sym, tf, first, n_bars, 4)
    for a, b in zip(out, ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, equal_nan=True)


def test_aggregate_bars_transfers_once(monkeypatch):
    """One ``to_numpy`` per call (the ranges; a bar whose VWAP needs the exact path adds its own)."""
    calls = []
    cls = type(gt.get_backend("cpu"))
    real = cls.to_numpy

    def counting(self, x):
        calls.append(np.shape(x))
        return real(self, x)

    monkeypatch.setattr(cls, "to_numpy", counting)
    ts, price, size, sym = _ticks(seed=2)
    bars = md.aggregate_bars(ts, price, size, sym, timeframe="1min", backend="cpu")
    assert calls == [(8,)]
    assert bars.count.sum() == ts.shape[0]
    with pytest.raises(ValueError, match="price must be finite"):
        md.aggregate_bars(ts, np.where(np.arange(ts.shape[0]) == 7, np.nan, price), size, sym, timeframe="1min")
    with pytest.raises(ValueError, match="symbol ids must be < n_symbols=2"):
        md.aggregate_bars(ts, price, size, sym, timeframe="1min", n_symbols=2)
    with pytest.raises(ValueError, match="ts must be < 2"):
        md.aggregate_bars(np.array([5, 2**63], np.uint64), np.ones(2), np.ones(2), timeframe="1min")
    empty = md.aggregate_bars(ts[:0], price[:0], size[:0], timeframe="1min")
    assert empty.open.shape == (0,)


def test_check_observations_reads_one_flag(reads, monkeypatch):
    flags = []
    real = validation.host_bool
    monkeypatch.setattr(validation, "host_bool", lambda v: flags.append(1) or real(v))
    x = np.random.default_rng(3).normal(size=(5, 40))
    x[1, ::3] = np.nan
    (xd,) = _device(x)
    validation.check_observations(_StrictNumpy(), xd, 20, "r", "a test")
    assert flags == [1] and reads.reads == 1  # the flag itself, nothing else
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        validation.check_observations(np, x, 30, "r", "a test")
    validation.check_observations(np, np.empty((0, 40)), 20, "r", "a test")


def test_monte_carlo_tail_merge_reads_one_count_per_chunk(reads):
    P, m, rows = 3, 50, 400
    data = np.random.default_rng(4).standard_normal((P, 5 * rows))
    vals, idx = _device(np.full((P, m), -np.inf), np.full((P, m), -1))
    for i, first in enumerate(range(0, data.shape[1], rows)):
        vals, idx = montecarlo_xp.merge_tail_candidates(_StrictNumpy(), vals, idx,
                                                        *_device(data[:, first:first + rows]), first)
        assert reads.reads == i + 1
    np.testing.assert_array_equal(np.asarray(vals), -np.sort(-data, axis=1)[:, :m])


@pytest.mark.parametrize("quantized", [False, True])
def test_knn_l2_scores_are_exactly_the_unhalved_formula(quantized):
    rng = np.random.default_rng(5)
    db = rng.normal(size=(5000, 24)).astype(np.float32)
    q = rng.normal(size=(7, 24)).astype(np.float32)
    scales = None
    if quantized:
        db, scales = vector_xp.quantize_int8(np, db)
    norms = vector_xp.row_sq_norms(np, db, scales)
    select = functools.partial(vector_xp.select_by_group_max, np)
    got_s, got_i = vector_xp.search(np, select, db, scales, norms, q, 9, True, 1 << 20)
    full = q @ db.astype(np.float32).T
    if scales is not None:
        full *= scales[None, :]
    full = full * np.float32(2.0) - norms[None, :]           # the scores as computed before the halving
    order = np.argsort(-full, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(got_s, np.take_along_axis(full, order, axis=1))
    np.testing.assert_array_equal(np.take_along_axis(full, got_i, axis=1), got_s)
