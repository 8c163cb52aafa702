"""Bounded temporaries of the array (xp) code that the cuda and jax backends run: rolling
correlation in tiles of pairs, k-means in chunks of rows, k-means++ seeding on the device.

Run here with NumPy as the array namespace. Two measures of memory: tracemalloc's peak (NumPy
reports its buffers to it) and, through a recording NumPy namespace, the largest buffer the
code requests (every array it creates or derives is viewed as :class:`Recorder`). Oracles:
the untiled / unchunked computation, pandas' rolling correlation, scikit-learn's Lloyd k-means
from the same seeds, and NumPy's ``Generator.choice`` for the k-means++ draws.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import gpu_trader as gt
from gpu_trader import correlation as corrmod
from gpu_trader._internal import vector_xp
from gpu_trader._internal.correlation_xp import (
    MAX_WORK_BYTES, ROLLING_TEMPORARIES, WORK_BYTES, CorrelationEstimators,
)


class Recorder(np.ndarray):
    """An ndarray that records the buffer under every array derived from it (views included):
    ``Recorder.buffers`` maps the buffer's id to ``(nbytes, shape)``."""

    buffers: dict[int, tuple[int, tuple[int, ...]]] = {}

    def __array_finalize__(self, obj):
        root = self
        while isinstance(root.base, np.ndarray):
            root = root.base
        Recorder.buffers[id(root)] = (root.nbytes, root.shape)


def _recorded(r):
    if isinstance(r, np.ndarray) and not isinstance(r, Recorder):
        return r.view(Recorder)
    if isinstance(r, tuple):
        return tuple(_recorded(v) for v in r)
    return r


class RecordingNumpy:
    """NumPy as an array namespace whose functions return :class:`Recorder` arrays, so that the
    arrays the xp code builds from them (by functions, methods or operators) are recorded too."""

    def __getattr__(self, name):
        attr = getattr(np, name)
        if callable(attr) and not isinstance(attr, type):
            return lambda *a, **k: _recorded(attr(*a, **k))
        return attr


def largest_buffers(run, *inputs):
    """``run(recording namespace, *recorded inputs)`` -> (its result, the recorded buffers'
    ``(nbytes, shape)`` sorted largest first, the inputs' own buffers left out)."""
    Recorder.buffers = {}
    views = [np.asarray(a).view(Recorder) for a in inputs]
    own = {id(np.asarray(a)) for a in inputs} | {id(v) for v in views}
    res = run(RecordingNumpy(), *views)
    found = sorted((v for k, v in Recorder.buffers.items() if k not in own), key=lambda b: -b[0])
    return res, found


def traced_peak(run) -> int:
    """Peak bytes tracemalloc sees while ``run()`` runs (after one warm-up call)."""
    run()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def returns(shape, seed: int, nan_frac: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = 0.01 * rng.standard_normal(shape) + 0.005 * rng.standard_normal(shape[-1])
    r[rng.random(shape) < nan_frac] = np.nan
    r[..., 0, 3:9] = 0.002  # a constant stretch (NaN correlations there)
    return r


# -- rolling correlation ------------------------------------------------------------------------
@pytest.mark.parametrize("shape, window, min_periods", [((5, 40), 5, 3), ((2, 3, 4, 30), 7, 7), ((1, 12), 2, 2)])
def test_rolling_tiles_give_the_untiled_numbers_bit_for_bit(shape, window, min_periods):
    x = returns(shape, seed=len(shape))
    n, t = shape[-2], shape[-1]
    whole = CorrelationEstimators(np, MAX_WORK_BYTES)
    pair = ROLLING_TEMPORARIES * 8 * t
    with np.errstate(all="ignore"):
        ref = whole.rolling_corr(x, window, min_periods)
        assert whole.rolling_tile(int(np.prod(shape[:-2])), n, t) == (int(np.prod(shape[:-2])), n, n)
        frozen = np.asfortranarray(x)  # non-contiguous over time, read-only
        frozen.flags.writeable = False
        ref_frozen = whole.rolling_corr(frozen, window, min_periods)  # NumPy's means sum in another order
        np.testing.assert_allclose(ref_frozen, ref, rtol=1e-12, atol=1e-13, equal_nan=True)
        for work_bytes in (1, pair, 3 * pair, n * pair + pair, n * n * pair + 1):
            est = CorrelationEstimators(np, work_bytes)
            np.testing.assert_array_equal(est.rolling_corr(x, window, min_periods), ref)
            np.testing.assert_array_equal(est.rolling_corr(frozen, window, min_periods), ref_frozen)
    np.testing.assert_array_equal(frozen, x)
    frame = pd.DataFrame(x.reshape(-1, n, t)[0].T)  # pandas' rolling correlation, first batch element
    want = frame.rolling(window, min_periods=min_periods).corr().to_numpy().reshape(t, n, n).transpose(1, 2, 0)
    np.testing.assert_allclose(ref.reshape(-1, n, n, t)[0], want, rtol=1e-7, atol=1e-8, equal_nan=True)


def test_rolling_tile_policy():
    est = CorrelationEstimators(np, 10 * ROLLING_TEMPORARIES * 8 * 100)  # 10 pair paths of T = 100
    assert est.rolling_tile(4, 3, 100) == (1, 3, 3)      # 9 pairs: one matrix
    assert est.rolling_tile(4, 2, 100) == (2, 2, 2)      # 4 pairs per matrix: two matrices
    assert est.rolling_tile(1, 4, 100) == (1, 2, 4)      # whole rows first
    assert est.rolling_tile(1, 50, 100) == (1, 1, 10)    # part of a row
    assert est.rolling_tile(1, 50, 10**6) == (1, 1, 1)   # never less than one pair
    # the planned peak: the result, one tile's temporaries, the per-series arrays
    assert est.rolling_corr_bytes((1, 50, 100)) == 8 * (50 * 50 * 100 + ROLLING_TEMPORARIES * 10 * 100 + 4 * 50 * 100)


def test_rolling_peak_is_the_result_plus_one_tile():
    n, t, work_bytes = 40, 600, 1 << 20
    x = returns((n, t), seed=3)
    result = 8 * n * n * t
    with np.errstate(all="ignore"):
        tiled = CorrelationEstimators(np, work_bytes)
        whole = CorrelationEstimators(np, MAX_WORK_BYTES)
        peak_tiled = traced_peak(lambda: tiled.rolling_corr(x, 20, 10))
        peak_whole = traced_peak(lambda: whole.rolling_corr(x, 20, 10))
        per_series = 8 * 6 * n * t
        assert peak_tiled <= result + work_bytes + per_series
        assert peak_tiled <= tiled.rolling_corr_bytes(x.shape) + per_series
        assert peak_whole > 8 * result  # what the untiled formulation holds (the old cost)
        # besides the result, buffers are one tile's (within the budget) or one series array's
        res, buffers = largest_buffers(lambda xp, v: CorrelationEstimators(xp, work_bytes).rolling_corr(v, 20, 10), x)
    assert buffers[0] == (result, (1, n, n, t))  # the result (batch axis flattened)
    bb, bi, bj = tiled.rolling_tile(1, n, t)
    tile = 8 * bb * bi * bj * t
    assert tile <= work_bytes // ROLLING_TEMPORARIES
    assert max(nbytes for nbytes, shape in buffers[1:] if len(shape) == 4) == tile
    assert all(nbytes <= max(tile, 8 * n * t) for nbytes, _ in buffers[1:])
    np.testing.assert_array_equal(res, whole.rolling_corr(x, 20, 10))


def test_public_rolling_corr_plans_the_result_not_ten_copies():
    """A result of a quarter of the working-memory limit is planned (result + tile), where ten
    copies of it would have been refused; one past the limit is refused before allocating."""
    from gpu_trader._internal.validation import WORK_MEMORY_LIMIT

    cpu = corrmod._Call.formulas_of(gt.get_backend("cpu"))
    shape = (1000, WORK_MEMORY_LIMIT // (4 * 8 * 1000 * 1000))
    assert cpu.rolling_corr_bytes(shape) < WORK_MEMORY_LIMIT < 10 * 8 * shape[0] ** 2 * shape[1]
    assert CorrelationEstimators(np).rolling_corr_bytes((3000, shape[1])) > WORK_MEMORY_LIMIT
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="working memory"):
            corrmod.rolling_corr(np.zeros((3000, shape[1])), 5)
        assert tracemalloc.get_traced_memory()[1] < 256 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-5, ValueError), (MAX_WORK_BYTES + 1, ValueError),
                                        (True, TypeError), (1.5e6, TypeError), ("1MB", TypeError)])
def test_work_bytes_is_validated(bad, error):
    with pytest.raises(error, match="work_bytes"):
        CorrelationEstimators(np, bad)
    with pytest.raises(error, match="work_bytes"):
        vector_xp.kmeans_chunk_rows(10, 2, 8, bad)
    assert CorrelationEstimators(np, np.int64(4096)).work_bytes == 4096
    assert CorrelationEstimators(np).work_bytes == WORK_BYTES


def test_rolling_tiles_on_jax_equal_numpy():
    jnp = pytest.importorskip("jax.numpy")
    import jax

    if not jax.config.read("jax_enable_x64"):
        pytest.skip("needs JAX's 64-bit mode")
    x = returns((2, 3, 25), seed=7)
    with np.errstate(all="ignore"):
        ref = CorrelationEstimators(np).rolling_corr(x, 6, 4)
    est = CorrelationEstimators(jnp, 6 * ROLLING_TEMPORARIES * 8 * 25)  # two rows of a matrix per tile
    got = jax.jit(est.rolling_corr, static_argnums=(1, 2))(jnp.asarray(x), 6, 4)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-13, equal_nan=True)


# -- k-means ------------------------------------------------------------------------------------
def clustered(n: int, dim: int, k: int, seed: int, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((k, dim))
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, dim))).astype(dtype)


def host_kmeanspp(x: np.ndarray, k: int, seed: int) -> list[int]:
    """k-means++ as a host loop: one ``Generator.choice`` per centre (the oracle of the draws)."""
    rng = np.random.default_rng(seed)
    x_sq = np.einsum("ij,ij->i", x, x)
    picks = [int(rng.integers(len(x)))]
    d2 = np.maximum(x_sq - 2.0 * (x @ x[picks[0]]) + x_sq[picks[0]], 0.0)
    for _ in range(1, k):
        p = d2.astype(np.float64)
        picks.append(int(rng.choice(len(x), p=p / p.sum())))
        d2 = np.minimum(d2, np.maximum(x_sq - 2.0 * (x @ x[picks[-1]]) + x_sq[picks[-1]], 0.0))
    return picks


class NoHostRead(np.ndarray):
    """An array that refuses every conversion to a host scalar (a device-to-host round trip)."""

    def _refuse(self, *args):
        raise AssertionError("a device value was read on the host")

    __float__ = __int__ = __bool__ = __index__ = item = tolist = _refuse


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeanspp_seeds_are_the_host_loops_draws_without_host_reads(seed, dtype):
    x = clustered(400, 6, 9, seed, dtype)
    x_sq = np.einsum("ij,ij->i", x, x)
    seeds = vector_xp.kmeanspp_seeds(np, x.view(NoHostRead), x_sq.view(NoHostRead), 12, seed)
    assert np.asarray(seeds).tolist() == host_kmeanspp(x, 12, seed)
    # fewer distinct rows than clusters: every later draw has zero weight; still valid rows
    dup = np.repeat(x[:3], 5, axis=0)
    picks = np.asarray(vector_xp.kmeanspp_seeds(np, dup, np.einsum("ij,ij->i", dup, dup), 6, seed))
    assert picks.dtype == np.int64 and ((0 <= picks) & (picks < len(dup))).all()
    assert len({tuple(r) for r in dup[picks]}) == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_kmeans_equals_unchunked_and_sklearns_lloyd(seed):
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x = clustered(1200, 5, 7, seed)
    whole = vector_xp.kmeans(np, x, 7, 300, seed, 0.0, np.asarray, work_bytes=vector_xp.MAX_KMEANS_WORK_BYTES)
    rows = 37  # chunks of 37 rows, the last one short
    chunked = vector_xp.kmeans(np, x, 7, 300, seed, 0.0, np.asarray, work_bytes=rows * 7 * 8 * 3)
    assert vector_xp.kmeans_chunk_rows(1200, 7, 8, rows * 7 * 8 * 3) == rows
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-13, atol=1e-13)
    assert chunked[2] == pytest.approx(whole[2], rel=1e-13)
    init = x[vector_xp.kmeanspp_seeds(np, x, np.einsum("ij,ij->i", x, x), 7, seed)]
    km = sklearn_cluster.KMeans(7, init=init, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x)
    np.testing.assert_array_equal(chunked[1], km.labels_)
    np.testing.assert_allclose(chunked[0], km.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert chunked[2] == pytest.approx(km.inertia_, rel=1e-12)


def test_kmeans_float32_chunked_matches_unchunked_labels():
    x = clustered(3000, 16, 10, 4, np.float32)
    whole = vector_xp.kmeans(np, x, 10, 100, 4, 0.0, np.asarray)
    chunked = vector_xp.kmeans(np, x, 10, 100, 4, 0.0, np.asarray, work_bytes=10 * 4 * 3 * 64)
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-5, atol=1e-5)
    assert chunked[0].dtype == np.float32 and chunked[1].dtype == np.int64


def test_kmeans_temporaries_stay_within_the_budget():
    n, dim, k, work_bytes = 10_000, 8, 100, 1 << 18
    x = np.random.default_rng(5).standard_normal((n, dim)).astype(np.float32)
    per_row = 8 * 4 * n  # labels, norms, distances of the final pass: O(n), not O(n k)
    peak_chunked = traced_peak(lambda: vector_xp.kmeans(np, x, k, 3, 0, 0.0, np.asarray, work_bytes=work_bytes))
    peak_whole = traced_peak(lambda: vector_xp.kmeans(np, x, k, 3, 0, 0.0, np.asarray,
                                                      work_bytes=vector_xp.MAX_KMEANS_WORK_BYTES))
    assert peak_chunked <= work_bytes + per_row
    assert peak_whole > 4 * n * k  # an (n, k) matrix when unchunked
    _, buffers = largest_buffers(lambda xp, v: vector_xp.kmeans(xp, v, k, 3, 0, 0.0, np.asarray,
                                                                work_bytes=work_bytes), x)
    rows = vector_xp.kmeans_chunk_rows(n, k, 4, work_bytes)
    assert all(nbytes <= max(4 * rows * k, 8 * n) for nbytes, _ in buffers)
    assert not any(len(shape) == 2 and n in shape and k in shape for _, shape in buffers)
