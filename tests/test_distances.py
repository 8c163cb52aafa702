"""gpu_trader.distances against scipy.spatial.distance.cdist and sklearn's pairwise kernels."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

import gpu_trader as gt
from gpu_trader import distances
from gpu_trader._internal import vector_xp

AREA = "vectors"  # the backends that implement it run these tests (conftest.py)

CDIST = {"cosine": "cosine", "l2": "euclidean", "sqeuclidean": "sqeuclidean", "l1": "cityblock"}


def oracle(q, db, metric):
    q, db = np.asarray(q, np.float64), np.asarray(db, np.float64)
    return q @ db.T if metric == "ip" else cdist(q, db, CDIST[metric])


def tolerance(q, db, metric, eps):
    """Absolute error bound of the float computation: GEMM forms err by about eps times the
    squared norms (l2: the square root of that), l1 by eps times the sum of magnitudes."""
    q, db = np.abs(np.asarray(q, np.float64)), np.abs(np.asarray(db, np.float64))
    dim = max(1, q.shape[1])
    if metric == "cosine":
        return 10 * dim * eps
    sq = (q * q).sum(1)[:, None] + (db * db).sum(1)[None, :]
    if metric == "l2":
        return np.sqrt(10 * dim * eps * sq) + 1e-300
    if metric == "l1":
        return 4 * dim * eps * (q.sum(1)[:, None] + db.sum(1)[None, :]) + 1e-300
    return 10 * dim * eps * sq + 1e-300


@pytest.mark.parametrize("metric", distances.METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_cdist(backend, metric, dtype):
    rng = np.random.default_rng(1)
    q, db = rng.standard_normal((37, 19)).astype(dtype), rng.standard_normal((53, 19)).astype(dtype)
    be = gt.get_backend(backend)
    got = distances.pairwise_distances(be.asarray(q), be.asarray(db), metric, backend=backend)
    assert got.shape == (37, 53) and got.dtype == dtype
    want = oracle(q, db, metric)
    assert np.all(np.abs(gt.to_numpy(got) - want) <= tolerance(q, db, metric, np.finfo(dtype).eps))


def test_shorthands_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics.pairwise")
    rng = np.random.default_rng(2)
    q, db = rng.standard_normal((8, 5)), rng.standard_normal((11, 5))
    np.testing.assert_allclose(distances.cosine(q, db), sk.cosine_distances(q, db), atol=1e-12)
    np.testing.assert_allclose(distances.l2(q, db), sk.euclidean_distances(q, db), atol=1e-12)
    np.testing.assert_allclose(distances.l2(q, db, squared=True), sk.euclidean_distances(q, db, squared=True),
                               atol=1e-12)
    np.testing.assert_allclose(distances.l1(q, db), sk.manhattan_distances(q, db), atol=1e-12)
    np.testing.assert_allclose(distances.ip(q, db), sk.linear_kernel(q, db), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(0, 12), n=st.integers(0, 12), dim=st.integers(1, 9), metric=st.sampled_from(distances.METRICS),
       dt=st.sampled_from(["<f4", ">f8", "<i2", "<f2"]), seed=st.integers(0, 2**16), strided=st.booleans(),
       nan=st.booleans())
def test_random_shapes_dtypes_nan_and_views(m, n, dim, metric, dt, seed, strided, nan):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((m, 2 * dim)) * 3).astype(dt)[:, ::2 if strided else 1][:, :dim]
    db = (rng.standard_normal((n, dim)) * 3).astype(dt)
    if nan and m and dt[1] == "f":
        q[0, 0] = np.nan
    q.flags.writeable = False
    before = q.copy()
    got = distances.pairwise_distances(q, db, metric, backend="cpu")
    assert got.shape == (m, n)
    assert got.dtype == (np.float32 if dt == "<f4" else np.float64)
    np.testing.assert_array_equal(q, before)
    want = oracle(q, db, metric)
    eps = np.finfo(got.dtype).eps
    ok = np.isnan(want) == np.isnan(got)
    ok &= np.isnan(want) | (np.abs(got - want) <= tolerance(q, db, metric, eps))
    assert ok.all()


def test_l1_blocks_and_the_gpu_module_on_numpy():
    """l1 in many blocks (a tiny work budget) and the cuda ops module's code with NumPy as CuPy
    give the same results as one block."""
    rng = np.random.default_rng(3)
    q, db = rng.standard_normal((9, 6)), rng.standard_normal((7, 6))
    whole = vector_xp.l1_distances(np, q, db, 1 << 30)
    np.testing.assert_array_equal(vector_xp.l1_distances(np, q, db, 1), whole)
    np.testing.assert_allclose(whole, cdist(q, db, "cityblock"), rtol=1e-13)
    for metric in distances.METRICS:
        np.testing.assert_allclose(vector_xp.pairwise(np, q, db, metric, 8), oracle(q, db, metric), atol=1e-12)


def test_zero_rows_give_nan_cosine():
    q = np.array([[0.0, 0.0], [1.0, 0.0]])
    got = distances.cosine(q, np.array([[0.0, 2.0]]))
    assert np.isnan(got[0, 0]) and got[1, 0] == pytest.approx(1.0)


def test_clear_errors():
    q = np.ones((3, 4))
    with pytest.raises(ValueError, match="metric must be one of"):
        distances.pairwise_distances(q, q, "cityblock")
    with pytest.raises(TypeError, match="metric"):
        distances.pairwise_distances(q, q, 1)
    with pytest.raises(ValueError, match="dimension"):
        distances.l1(q, np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"db must have shape \(rows, dim\)"):
        distances.l1(q, np.ones(4))
    with pytest.raises(TypeError, match="q"):
        distances.l2(np.ones((3, 4), complex), q)
    with pytest.raises(TypeError, match="q"):
        distances.l2(np.ma.masked_array(q), q)
    with pytest.raises(ValueError, match="max_bytes=100"):
        distances.ip(np.ones((10, 4)), np.ones((10, 4)), max_bytes=100)
    with pytest.raises(TypeError, match="max_bytes"):
        distances.ip(q, q, max_bytes=1.5)
    with pytest.raises(TypeError, match="squared"):
        distances.l2(q, q, squared=1)
    huge = np.broadcast_to(np.float32(1), (200_000, 4))  # a 200000 x 200000 result: refused before allocating
    with pytest.raises(ValueError, match="max_bytes"):
        distances.l1(huge, huge)
    assert distances.ip(np.ones((10, 4)), np.ones((10, 4)), max_bytes=800).shape == (10, 10)


def test_the_jax_backend_has_no_vectors_area():
    if "jax" not in gt.available_backends():
        pytest.skip("jax is not installed")
    with pytest.raises(ValueError, match="vectors"):
        distances.l1(np.ones((2, 2)), np.ones((2, 2)), backend="jax")
