"""VectorIndex against FAISS (IndexFlatIP / IndexFlatL2) as the exact oracle, every backend present."""
from __future__ import annotations

import functools
import os
import threading
import warnings

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from gpu_trader._internal import vector_io
from gpu_trader._internal import vector_xp
from gpu_trader.vectors import VectorIndex, VectorIndexFileError

AREA = "vectors"  # the backends that implement it run these tests (conftest.py)

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)

METRICS = ("cosine", "ip", "l2")


def clustered(n, dim, seed=0, n_centres=20, noise=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim))
    return (centres[rng.integers(0, n_centres, n)] + noise * rng.standard_normal((n, dim))).astype(np.float32)


def uniform(n, dim, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _float64_pair(db, queries, metric):
    """Both sides as float64, normalized for cosine (the oracles' common preparation)."""
    db = np.asarray(db, np.float64)
    q = np.asarray(queries, np.float64)
    if metric == "cosine":
        db = db / np.linalg.norm(db, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return db, q


def faiss_search(db, queries, k, metric):
    """FAISS flat search in float32 (cosine: both sides normalized in float64 first)."""
    db, q = _float64_pair(db, queries, metric)
    faiss_metric = {"l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1}.get(metric, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexFlat(db.shape[1], faiss_metric)
    index.add(np.ascontiguousarray(db, np.float32))
    return index.search(np.ascontiguousarray(q, np.float32), k)


def true_scores(db, queries, ids, metric):
    """float64 scores of the given ids (row = id) for each query."""
    db, q = _float64_pair(db, queries, metric)
    v = db[ids]
    if metric == "l2":
        return ((v - q[:, None, :]) ** 2).sum(-1)
    if metric == "l1":
        return np.abs(v - q[:, None, :]).sum(-1)
    return np.einsum("qkd,qd->qk", v, q)


def assert_knn_matches(scores, ids, db, queries, k, metric, row_ids=None):
    """Ours vs FAISS: same score profile; every id FAISS ranks clearly inside the top k is ours;
    our reported scores are the true scores of our ids (tolerance scaled to the data)."""
    scores, ids = gt.to_numpy(scores), gt.to_numpy(ids)
    ref_s, ref_i = faiss_search(db, queries, k, metric)
    if row_ids is not None:
        ref_i = row_ids[ref_i]
    scale = 1.0 if metric == "cosine" else float(np.abs(ref_s).max() + 1.0)
    tol = 2e-5 * scale * max(1, db.shape[1]) ** 0.5
    np.testing.assert_allclose(scores, ref_s, atol=tol, rtol=0)
    rows = ids if row_ids is None else np.searchsorted(row_ids, ids)
    np.testing.assert_allclose(true_scores(db, queries, rows, metric), scores, atol=tol, rtol=0)
    for qi in range(len(ids)):
        if metric in ("l2", "l1"):
            clear = ref_i[qi][ref_s[qi] < ref_s[qi, -1] - tol]
        else:
            clear = ref_i[qi][ref_s[qi] > ref_s[qi, -1] + tol]
        assert set(clear.tolist()) <= set(ids[qi].tolist())
        assert len(set(ids[qi].tolist())) == k


def build(backend, db, metric="cosine", **kw):
    index = VectorIndex(db.shape[1], metric, backend=backend, **kw)
    index.add(db)
    return index


# -- exact search --------------------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("data", [uniform, clustered])
@pytest.mark.parametrize("k", [1, 10, 64])
def test_exact_matches_faiss(backend, metric, data, k):
    db = data(3000, 48, seed=1)
    q = data(25, 48, seed=2)
    index = build(backend, db, metric)
    scores, ids = index.search(gt.get_backend(backend).asarray(q), k)
    assert scores.shape == ids.shape == (25, k)
    assert_knn_matches(scores, ids, db, q, k, metric)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), dim=st.integers(1, 24), data=st.data(), metric=st.sampled_from(METRICS),
       seed=st.integers(0, 2**16))
def test_exact_matches_faiss_random_shapes(n, dim, data, metric, seed):
    k = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    db = rng.integers(-3, 4, (n, dim)).astype(np.float32)  # small integers: many exact ties
    db[np.abs(db).sum(1) == 0, 0] = 1.0
    q = rng.integers(-3, 4, (3, dim)).astype(np.float32)
    q[np.abs(q).sum(1) == 0, 0] = 1.0
    scores, ids = build("cpu", db, metric).search(q, k)
    assert_knn_matches(scores, ids, db, q, k, metric)


def test_single_query_shape_and_order(backend):
    db = clustered(500, 16)
    index = build(backend, db, "l2")
    scores, ids = index.search(db[7], 5)
    scores, ids = gt.to_numpy(scores), gt.to_numpy(ids)
    assert scores.shape == ids.shape == (5,)
    assert ids[0] == 7 and scores[0] == pytest.approx(0.0, abs=1e-3)
    assert np.all(np.diff(scores) >= 0)
    s_ip, _ = build(backend, db, "ip").search(db[:3], 5)
    assert np.all(np.diff(gt.to_numpy(s_ip), axis=1) <= 0)


def test_tiled_search_merges_tiles(monkeypatch):
    """Several database tiles (tiny tile budget): the running top-k merge must equal FAISS."""
    from gpu_trader.cpu_fallback import vectors as cpu

    monkeypatch.setattr(cpu, "TILE_BYTES", 1)
    db, q = clustered(5000, 32, seed=3), clustered(7, 32, seed=4)
    for metric in METRICS:
        scores, ids = build("cpu", db, metric).search(q, 20)
        assert_knn_matches(scores, ids, db, q, 20, metric)


@pytest.mark.parametrize("n,k", [(100, 5), (2049, 1), (2049, 31), (5000, 10), (130_000, 16), (4096, 64)])
def test_group_max_selection_is_exact(n, k):
    """The GPU top-k algorithm, run with xp=numpy: the selected values are the k largest, with ties."""
    rng = np.random.default_rng(n + k)
    s = rng.integers(-50, 50, (3, n)).astype(np.float32)  # many ties
    sel = vector_xp.select_by_group_max(np, s, k)
    assert sel.shape == (3, k)
    assert all(len(set(r.tolist())) == k for r in sel)
    got = np.sort(np.take_along_axis(s, sel, axis=1), axis=1)
    np.testing.assert_array_equal(got, np.sort(s, axis=1)[:, n - k:])


@pytest.mark.parametrize("k", [1, 10, 128, 129, 300, 999])
def test_cpu_selection_is_exact(k):
    """Insertion scan (k <= 128) and argpartition (above): the k largest values, best first for the scan."""
    from gpu_trader.cpu_fallback.vectors import SCAN_MAX_K, select_topk

    rng = np.random.default_rng(k)
    s = rng.integers(-30, 30, (4, 1000)).astype(np.float32)
    s[1] = np.arange(1000)  # ascending: every entry enters the buffer
    sel = select_topk(s, k)
    vals = np.take_along_axis(s, sel, axis=1)
    np.testing.assert_array_equal(np.sort(vals, axis=1), np.sort(s, axis=1)[:, 1000 - k:])
    assert all(len(set(r.tolist())) == k for r in sel)
    if k <= SCAN_MAX_K:
        assert np.all(np.diff(vals, axis=1) <= 0)


@pytest.mark.parametrize("metric", METRICS)
def test_gpu_search_algorithm_on_numpy(metric):
    """kernels.vectors' search (group-max top-k, tiled) instantiated with NumPy equals FAISS."""
    db, q = uniform(9000, 24, seed=5), uniform(6, 24, seed=6)
    index = build("cpu", db, metric)
    snap = index._snap
    select = functools.partial(vector_xp.select_by_group_max, np)
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    s, rows = vector_xp.search(np, select, snap.vectors, snap.scales, snap.norms, qq, 10, metric == "l2", 1 << 16)
    if metric == "l2":
        s = (qq * qq).sum(1)[:, None] - s
    assert_knn_matches(s, rows, db, q, 10, metric)


def test_inputs_not_mutated_and_dtypes(backend):
    rng = np.random.default_rng(0)
    db64 = rng.standard_normal((200, 40))[:, ::2]  # float64, non-contiguous
    before = db64.copy()
    index = VectorIndex(20, "cosine", backend=backend)
    index.add(db64)
    q = db64[:4].copy()
    index.search(q, 3)
    np.testing.assert_array_equal(db64, before)
    np.testing.assert_array_equal(q, before[:4])
    scores, ids = index.search(q, 3)
    assert gt.to_numpy(ids)[:, 0].tolist() == [0, 1, 2, 3]
    assert gt.to_numpy(scores).dtype == np.float32 and gt.to_numpy(ids).dtype == np.int64
    ints = VectorIndex(3, "ip", backend=backend)
    ints.add(np.array([[1, 0, 0], [0, 2, 0]]))
    assert gt.to_numpy(ints.search(np.array([0, 1, 0]), 1)[1]).tolist() == [1]


# -- errors --------------------------------------------------------------------------------
def test_clear_errors(backend):
    with pytest.raises(ValueError, match="int8.*float32 copy"):
        VectorIndex(8, kind="hnsw", dtype="int8")
    index = build(backend, clustered(20, 8))
    with pytest.raises(ValueError, match="dimension"):
        index.add(np.ones((2, 9)))
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones(9))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full(8, np.nan))
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.array([np.inf] + [0.0] * 7))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.ones(8), k=0)
    with pytest.raises(ValueError, match="exceeds"):
        index.search(np.ones(8), k=21)
    with pytest.raises(TypeError, match="k must be an int"):
        index.search(np.ones(8), k=2.0)
    with pytest.raises(ValueError, match="all-zero"):
        index.add(np.zeros(8))
    with pytest.raises(ValueError, match="already stored"):
        index.add(np.ones(8), ids=3)
    with pytest.raises(ValueError, match="non-negative"):
        index.add(np.ones(8), ids=-2)
    with pytest.raises(ValueError, match="unique"):
        index.add(np.ones((2, 8)), ids=[50, 50])
    with pytest.raises(ValueError, match="entries"):
        index.add(np.ones((2, 8)), metadata=[{"a": 1}])
    with pytest.raises(TypeError, match="numeric"):
        index.add(np.array(["a"] * 8))
    with pytest.raises(ValueError, match="shape"):
        index.add(np.ones((2, 2, 8)))
    with pytest.raises(KeyError, match="999"):
        index.remove([1, 999])
    assert len(index) == 20  # nothing was added or removed by the failed calls
    for bad in ({"dim": 0}, {"dim": 4, "metric": "dot"}, {"dim": 4, "kind": "ivf"}, {"dim": 4, "dtype": "float16"}):
        with pytest.raises(ValueError):
            VectorIndex(**bad, backend=backend)
    with pytest.raises(ValueError, match="exceeds the 0"):
        VectorIndex(4, backend=backend).search(np.ones(4), 1)


def test_cagra_needs_cuda_and_cuvs(backend):
    if backend != "cuda":
        with pytest.raises(ValueError, match="cuda backend"):
            VectorIndex(8, kind="cagra", backend=backend)
        return
    pytest.importorskip("cuvs", reason="cuVS is not installed")
    db, q = clustered(4000, 32), clustered(10, 32, seed=9)
    index = build(backend, db, "cosine", kind="cagra")
    scores, ids = index.search(gt.get_backend(backend).asarray(q), 10)
    exact = build(backend, db, "cosine").search(gt.get_backend(backend).asarray(q), 10)[1]
    assert recall(gt.to_numpy(ids), gt.to_numpy(exact)) >= 0.9


# -- int8 ----------------------------------------------------------------------------------
def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.mark.parametrize("metric", METRICS)
def test_int8_storage_recall_and_memory(backend, metric):
    db, q = clustered(4000, 64, seed=7, noise=0.5), clustered(50, 64, seed=8, noise=0.5)
    exact = build(backend, db, metric)
    quant = build(backend, db, metric, dtype="int8")
    assert quant.nbytes <= exact.nbytes / 4 + 4 * len(db)
    _, truth = faiss_search(db, q, 10, metric)
    s8, i8 = quant.search(gt.get_backend(backend).asarray(q), 10)
    assert recall(gt.to_numpy(i8), truth) >= 0.9
    # the reported scores are those of the dequantized vectors: close to the true ones
    np.testing.assert_allclose(gt.to_numpy(s8), true_scores(db, q, gt.to_numpy(i8), metric),
                               atol=0.02 * (1 if metric == "cosine" else np.abs(gt.to_numpy(s8)).max()))


def test_quantize_int8_error_bound():
    x = np.random.default_rng(0).standard_normal((100, 33)).astype(np.float32)
    codes, scales = vector_xp.quantize_int8(np, x)
    assert codes.dtype == np.int8 and scales.shape == (100,)
    assert np.all(np.abs(codes.astype(np.float32) * scales[:, None] - x) <= scales[:, None] / 2 + 1e-6)


# -- metadata filters ----------------------------------------------------------------------
def test_filters_never_return_non_matching_ids(backend):
    rng = np.random.default_rng(3)
    n = 2000
    db = clustered(n, 16, seed=3)
    symbols = rng.choice(["AAPL", "MSFT", "NVDA", "TSLA"], n)
    regime = rng.integers(0, 3, n)
    index = VectorIndex(16, "l2", backend=backend)
    index.add(db, ids=np.arange(n) * 3 + 1, metadata={"symbol": symbols, "regime": regime})
    assert index._snap.meta["symbol"].dtype.kind == "U"  # typed columns stay typed (fast comparisons)
    q = clustered(8, 16, seed=4)
    ids_all = np.arange(n) * 3 + 1
    cases = [
        ({"symbol": "MSFT"}, symbols == "MSFT"),
        ({"symbol": ["AAPL", "TSLA"], "regime": 2}, np.isin(symbols, ["AAPL", "TSLA"]) & (regime == 2)),
        (lambda m: (m["regime"] == 1) & (m["symbol"] != "NVDA"), (regime == 1) & (symbols != "NVDA")),
    ]
    for flt, mask in cases:
        scores, ids = index.search(gt.get_backend(backend).asarray(q), 10, filter=flt)
        ids = gt.to_numpy(ids)
        assert np.isin(ids, ids_all[mask]).all()
        assert_knn_matches(scores, ids, db[mask], q, 10, "l2", row_ids=ids_all[mask])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 120), k=st.integers(1, 15), seed=st.integers(0, 2**16),
       want=st.sets(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=3), regime=st.none() | st.integers(0, 2))
def test_filters_property(n, k, seed, want, regime):
    """Random metadata and filters: results are exactly the brute-force top-k of the matching rows."""
    rng = np.random.default_rng(seed)
    db = rng.standard_normal((n, 6)).astype(np.float32)
    sym = rng.choice(["a", "b", "c", "d"], n)
    reg = rng.integers(0, 3, n)
    index = VectorIndex(6, "ip")
    index.add(db, metadata=[{"sym": s, "regime": int(r)} for s, r in zip(sym, reg)])
    flt = {"sym": sorted(want)} if regime is None else {"sym": sorted(want), "regime": regime}
    mask = np.isin(sym, sorted(want)) & (True if regime is None else reg == regime)
    q = rng.standard_normal(6).astype(np.float32)
    scores, ids = index.search(q, k, filter=flt)
    m = int(mask.sum())
    assert (ids[min(k, m):] == -1).all() and np.isneginf(scores[min(k, m):]).all()
    hit = ids[:min(k, m)]
    assert mask[hit].all()
    ref = np.sort(db[mask] @ q)[::-1][:k]
    np.testing.assert_allclose(scores[:min(k, m)], ref, rtol=1e-5, atol=1e-5)


def test_filter_with_few_matches_pads(backend):
    index = VectorIndex(4, "cosine", backend=backend)
    index.add(np.eye(4) + 0.1, metadata=[{"s": "a"}, {"s": "b"}, {"s": "a"}, {}])
    scores, ids = index.search(np.ones(4), 3, filter={"s": "a"})
    ids, scores = gt.to_numpy(ids), gt.to_numpy(scores)
    assert sorted(ids[:2].tolist()) == [0, 2] and ids[2] == -1 and scores[2] == -np.inf
    _, none = index.search(np.ones(4), 2, filter={"s": "zzz"})
    assert gt.to_numpy(none).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="not in the metadata"):
        index.search(np.ones(4), 1, filter={"sector": "x"})
    with pytest.raises(ValueError, match="boolean mask"):
        index.search(np.ones(4), 1, filter=lambda m: [True])
    with pytest.raises(TypeError, match="filter"):
        index.search(np.ones(4), 1, filter="s")
    # a vector added without metadata has None in every field; a later field reads None for earlier rows
    index.add(np.ones(4), metadata={"t": 5})
    _, ids = index.search(np.ones(4), 5, filter={"t": 5})
    assert gt.to_numpy(ids)[0] == 4 and (gt.to_numpy(ids)[1:] == -1).all()


# -- remove --------------------------------------------------------------------------------
def test_remove(backend):
    db = clustered(1000, 12, seed=5)
    index = build(backend, db, "ip")
    gone = np.arange(0, 1000, 3)
    assert index.remove(gone) == len(gone)
    assert len(index) == 1000 - len(gone)
    q = db[:20]
    scores, ids = index.search(q, 10)
    assert not np.isin(gt.to_numpy(ids), gone).any()
    left = np.setdiff1d(np.arange(1000), gone)
    assert_knn_matches(scores, ids, db[left], q, 10, "ip", row_ids=left)
    new = index.add(db[:2])
    assert new.tolist() == [1000, 1001]  # ids keep counting up


# -- persistence ---------------------------------------------------------------------------
@pytest.mark.parametrize("metric,dtype", [("cosine", "float32"), ("l2", "int8"), ("ip", "float32")])
def test_save_load_round_trip(backend, tmp_path, metric, dtype):
    db = clustered(700, 20, seed=6)
    index = VectorIndex(20, metric, backend=backend, dtype=dtype)
    index.add(db, metadata={"sym": np.array(["x", "y"] * 350), "w": np.arange(700.0)})
    index.remove([5, 6])
    path = tmp_path / "idx.gtv"
    index.save(path)
    assert os.listdir(tmp_path) == ["idx.gtv"]  # no temporary file left behind
    q = clustered(5, 20, seed=7)
    want = index.search(gt.get_backend(backend).asarray(q), 7, filter={"sym": "y"})
    for mmap in (False, True) if backend == "cpu" else (False,):
        loaded = VectorIndex.load(path, backend=backend, mmap=mmap)
        assert (loaded.dim, loaded.metric, loaded.dtype, len(loaded)) == (20, metric, dtype, 698)
        if mmap:
            assert isinstance(loaded._snap.vectors, np.memmap)
        got = loaded.search(gt.get_backend(backend).asarray(q), 7, filter={"sym": "y"})
        np.testing.assert_array_equal(gt.to_numpy(got[1]), gt.to_numpy(want[1]))
        np.testing.assert_allclose(gt.to_numpy(got[0]), gt.to_numpy(want[0]), rtol=1e-6)
        assert loaded.add(db[0]).tolist() == [700]  # adding after a (memory-mapped) load works


def _saved(tmp_path):
    path = tmp_path / "idx.gtv"
    build("cpu", clustered(300, 16)).save(path)
    return path


def test_load_refuses_truncated_file(tmp_path):
    path = _saved(tmp_path)
    data = path.read_bytes()
    for cut in (4, 30, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(VectorIndexFileError, match="truncated"):
            VectorIndex.load(path)


def test_load_refuses_corrupt_file(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    for pos, what in ((len(data) // 2, "corrupt section"), (30, "corrupt header"), (0, "not a gpu-trader")):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        path.write_bytes(bytes(bad))
        with pytest.raises(VectorIndexFileError, match=what):
            VectorIndex.load(path)


def test_load_refuses_every_single_byte_flip_in_the_prefix_and_header(tmp_path):
    """Any corrupted byte of the fixed prefix (magic, header length, header checksum) or of the
    header is a VectorIndexFileError, never a MemoryError/OverflowError from trusting a length."""
    path = _saved(tmp_path)
    data = path.read_bytes()
    for pos in range(vector_io._PREFIX.size + 8):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        path.write_bytes(bytes(bad))
        with pytest.raises(VectorIndexFileError):
            VectorIndex.load(path)


def test_load_refuses_other_format_version(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_io, "FORMAT_VERSION", 99)
    path = _saved(tmp_path)
    monkeypatch.setattr(vector_io, "FORMAT_VERSION", 1)
    with pytest.raises(VectorIndexFileError, match="version 99"):
        VectorIndex.load(path)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(vector_io.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        build("cpu", clustered(50, 16, seed=3)).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["idx.gtv"]
    index = build("cpu", clustered(5, 16))
    index.add(np.ones(16), metadata={"obj": object()})
    with pytest.raises(TypeError, match="JSON"):
        index.save(tmp_path / "other.gtv")


# -- approximate ---------------------------------------------------------------------------
def low_rank(n, dim, seed, rank=8):
    """Vectors on a random ``rank``-dimensional subspace (real embeddings have low intrinsic dimension)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((rank, dim))
    return (rng.standard_normal((n, rank)) @ basis).astype(np.float32)


def test_hnsw_recall_remove_save(tmp_path):
    pytest.importorskip("faiss")
    db, q = low_rank(5000, 64, seed=11), low_rank(100, 64, seed=12)
    index = build("cpu", db, "cosine", kind="hnsw")
    _, truth = faiss_search(db, q, 10, "cosine")
    scores, ids = index.search(q, 10)
    assert recall(ids, truth) >= 0.95
    np.testing.assert_allclose(scores, true_scores(db, q, ids, "cosine"), atol=1e-4)
    index.remove(truth[:, 0])
    _, ids2 = index.search(q, 10)
    assert not np.isin(ids2, truth[:, 0]).any()
    path = tmp_path / "h.gtv"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert loaded.kind == "hnsw"
    np.testing.assert_array_equal(loaded.search(q, 10)[1], ids2)


def test_hnsw_removed_id_added_again_saves_and_loads(tmp_path):
    """A removed id added again is a new graph node (the old one stays, dead): the index saves,
    loads and finds the new vector under that id, as an exact search of the live vectors does."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    db = rng.standard_normal((50, 16)).astype(np.float32)
    index = VectorIndex(16, metric="l2", kind="hnsw")
    index.add(db, ids=np.arange(50))
    gone = rng.choice(50, 5, replace=False)
    index.remove(gone)
    fresh = rng.standard_normal((5, 16)).astype(np.float32) + 10.0
    index.add(fresh, ids=gone)
    path = tmp_path / "again.gtv"
    index.save(path)
    loaded = VectorIndex.load(path)
    live = db.copy()
    live[gone] = fresh
    truth = np.argsort(((fresh[:, None, :] - live[None, :, :]) ** 2).sum(-1), axis=1)[:, 0]
    np.testing.assert_array_equal(truth, gone)
    for got in (index, loaded):
        np.testing.assert_array_equal(got.search(fresh, 1)[1][:, 0], gone)


def test_hnsw_many_small_adds_and_removes_keep_ids_and_filter(tmp_path):
    """Ids stay attached to their vectors across many small adds (the node tables grow in
    place) with removals in between: every live vector finds itself under its id, no removed
    id is ever returned, and a save/load round trip keeps both."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(21)
    index = VectorIndex(8, metric="l2", kind="hnsw")
    vectors, removed = {}, set()
    for step in range(40):
        new_ids = np.arange(step * 7, step * 7 + 7)
        batch = rng.standard_normal((7, 8)).astype(np.float32) * 10
        index.add(batch, ids=new_ids)
        vectors.update(zip(new_ids.tolist(), batch))
        if step % 3 == 2:
            gone = rng.choice(sorted(set(vectors) - removed), 4, replace=False)
            index.remove(gone)
            removed.update(gone.tolist())
    live = np.array(sorted(set(vectors) - removed))
    queries = np.stack([vectors[i] for i in live])
    index.save(tmp_path / "grown.gtv")
    for got in (index, VectorIndex.load(tmp_path / "grown.gtv")):
        _, ids = got.search(queries, 3)
        np.testing.assert_array_equal(ids[:, 0], live)
        assert not np.isin(ids, list(removed)).any()


def test_hnsw_l2_and_filter_is_exact():
    pytest.importorskip("faiss")
    db = clustered(3000, 32, seed=13)
    side = np.where(np.arange(3000) % 2 == 0, "even", "odd")
    index = VectorIndex(32, "l2", kind="hnsw")
    index.add(db, metadata={"side": side})
    q = clustered(20, 32, seed=14)
    scores, ids = index.search(q, 10)
    np.testing.assert_allclose(scores, true_scores(db, q, ids, "l2"), rtol=1e-4, atol=1e-3)
    scores, ids = index.search(q, 10, filter={"side": "odd"})
    odd = np.flatnonzero(side == "odd")
    assert_knn_matches(scores, ids, db[odd], q, 10, "l2", row_ids=odd)


# -- concurrency ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_concurrent_search_while_adding_and_removing(kind):
    if kind == "hnsw":
        pytest.importorskip("faiss")
    dim, batches = 16, 60
    data = clustered(50 * batches + 200, dim, seed=15)
    index = VectorIndex(dim, "ip", kind=kind)
    index.add(data[:200])
    started = set(range(200))
    removed: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer():
        try:
            for b in range(batches):
                ids = np.arange(200 + 50 * b, 250 + 50 * b)
                started.update(ids.tolist())  # recorded before the add starts
                index.add(data[ids], ids=ids)
                if b % 5 == 4:
                    index.remove(ids[:10])
                    removed.update(ids[:10].tolist())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader(seed):
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                q = data[rng.integers(0, len(data), 4)]
                scores, ids = index.search(q, 8)
                assert set(ids.ravel().tolist()) <= started, "an id that no add had started"
                np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", data[ids].astype(np.float64), q),
                                           rtol=1e-4, atol=1e-4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert len(index) == len(data) - len(removed)
    assert not set(index.search(data[:50], 8)[1].ravel().tolist()) & removed


# -- normalize / cosine --------------------------------------------------------------------
def test_normalize_and_cosine_match_scipy(backend):
    from scipy.spatial.distance import cosine as scipy_cosine

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((6, 384)).astype(dtype)
        b = rng.standard_normal((6, 384)).astype(dtype)
        got = gt.to_numpy(gt.vectors.cosine(*on(backend, a, b)))
        want = [1 - scipy_cosine(x.astype(np.float64), y.astype(np.float64)) for x, y in zip(a, b)]
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)
        assert gt.vectors.cosine(a[0], b[0], backend=backend) == pytest.approx(want[0], rel=1e-5)
        n = gt.to_numpy(gt.vectors.normalize(on(backend, a)))
        assert n.dtype == dtype
        np.testing.assert_allclose(n, a / np.linalg.norm(a.astype(np.float64), axis=1, keepdims=True), rtol=1e-5)
    z = gt.to_numpy(gt.vectors.normalize(np.zeros((2, 3)), backend=backend))
    assert (z == 0).all()
    assert np.isnan(gt.vectors.cosine(np.zeros(3), np.ones(3), backend=backend))
    with pytest.raises(ValueError, match="must match"):
        gt.vectors.cosine(np.ones(3), np.ones(4), backend=backend)


def on(backend, *arrays):
    be = gt.get_backend(backend)
    out = tuple(be.asarray(a) for a in arrays)
    return out if len(out) > 1 else out[0]


# -- the GPU module's code, run with NumPy standing in for CuPy -----------------------------
@pytest.fixture
def kernels_on_numpy(monkeypatch):
    """``gpu_trader.kernels.vectors`` imported against a NumPy shim named ``cupy``."""
    import importlib
    import sys
    import types

    shim = types.ModuleType("cupy")
    shim.__getattr__ = lambda name: getattr(np, name)
    shim.asnumpy = np.asarray
    monkeypatch.setitem(sys.modules, "cupy", shim)
    monkeypatch.delitem(sys.modules, "gpu_trader.kernels.vectors", raising=False)
    yield importlib.import_module("gpu_trader.kernels.vectors")
    sys.modules.pop("gpu_trader.kernels.vectors", None)


def test_gpu_module_runs_on_a_numpy_shim(kernels_on_numpy):
    from scipy.spatial.distance import cosine as scipy_cosine

    from gpu_trader.cpu_fallback import vectors as cpu

    gpu = kernels_on_numpy
    assert sorted(gpu.__all__) == sorted(cpu.__all__)
    db, q = uniform(5000, 32, seed=21), uniform(9, 32, seed=22)
    for metric in METRICS:
        index = build("cpu", db, metric)
        snap = index._snap
        qq = gpu.normalize_rows(q)[0] if metric == "cosine" else q
        s, rows = gpu.search(snap.vectors, snap.scales, snap.norms, qq, 12, metric == "l2")
        if metric == "l2":
            s = (qq * qq).sum(1)[:, None] - s
        assert_knn_matches(s, rows, db, q, 12, metric)
    snap = build("cpu", db, "l1")._snap
    s, rows = gpu.search(snap.vectors, snap.scales, snap.norms, q, 12, False, None, True)
    assert_knn_matches(-s, rows, db, q, 12, "l1")
    np.testing.assert_allclose(gpu.pairwise(q, db[:50], "l1"), cpu.pairwise(q, db[:50], "l1"), rtol=1e-5)
    np.testing.assert_array_equal(gpu.encode_binary(db[:30])[0], cpu.encode_binary(db[:30])[0])
    books = gpu.pq_train(db[:300], 8, 0)
    np.testing.assert_allclose(books, cpu.pq_train(db[:300], 8, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gpu.pq_encode(db[:30], books), cpu.pq_encode(db[:30], books))
    a, b = uniform(4, 16, seed=1), uniform(4, 16, seed=2)
    want = [1 - scipy_cosine(x, y) for x, y in zip(a.astype(np.float64), b.astype(np.float64))]
    np.testing.assert_allclose(gpu.cosine_rows(a, b), want, rtol=1e-5)
    assert gpu.cosine_pair(a[0], b[0]) == pytest.approx(want[0], rel=1e-5)
    np.testing.assert_allclose(gpu.normalize_vector(a[0]), a[0] / np.linalg.norm(a[0]), rtol=1e-6)
    codes, scales = gpu.quantize_int8(a)
    np.testing.assert_array_equal(codes, cpu.quantize_int8(a)[0])
    x = clustered(300, 8, seed=3, n_centres=5).astype(np.float64)
    _, labels, inertia = gpu.kmeans(x, 5, 50, 0, 0.0)
    from sklearn.cluster import KMeans

    assert inertia <= 1.001 * KMeans(5, n_init=10, random_state=0).fit(x).inertia_


def test_read_write_lock():
    """Readers share the lock (both get inside at once); a writer waits for them and runs alone."""
    from gpu_trader._internal.ann import _ReadWriteLock

    lock = _ReadWriteLock()
    inside = threading.Barrier(2, timeout=5)
    log: list[str] = []

    def reader():
        with lock.read():
            inside.wait()  # times out (BrokenBarrierError) unless both readers are inside together
            log.append("read")

    def writer():
        with lock.write():
            log.append("write")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    with lock.write():
        for t in readers:
            t.start()
        w = threading.Thread(target=writer)
        w.start()
        assert not log  # everyone waits for the writer holding the lock
    for t in readers + [w]:
        t.join(5)
    assert sorted(log) == ["read", "read", "write"]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_cagra_adapter_with_a_stand_in_cuvs(monkeypatch, kernels_on_numpy, metric):
    """The CAGRA glue (build per snapshot, neighbour pick, exact re-scoring) against a brute-force
    stand-in for cuVS, NumPy standing in for CuPy: the real cuVS runs only on a GPU machine."""
    import sys
    import types

    from gpu_trader._internal import ann

    builds = []

    def build_graph(params, data):
        builds.append((params.metric, len(data)))
        return np.asarray(data)

    def search(params, graph, queries, k):
        d = ((queries[:, None, :] - graph[None]) ** 2).sum(-1) if metric == "l2" else -(queries @ graph.T)
        nb = np.argsort(d, axis=1)[:, :k]
        return np.take_along_axis(d, nb, axis=1).astype(np.float32), nb.astype(np.uint32)

    cagra = types.SimpleNamespace(IndexParams=lambda metric: types.SimpleNamespace(metric=metric),
                                  SearchParams=lambda: None, build=build_graph, search=search)
    monkeypatch.setitem(sys.modules, "cuvs", types.ModuleType("cuvs"))
    monkeypatch.setitem(sys.modules, "cuvs.neighbors", types.SimpleNamespace(cagra=cagra))
    adapter = ann.make("cagra", types.SimpleNamespace(name="cuda", ann_kinds=frozenset({"cagra"})), 24, metric, {})
    db, q = clustered(800, 24, seed=31), clustered(6, 24, seed=32)
    index = build("cpu", db, metric, dtype="int8" if metric == "l2" else "float32")
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    scores, ids = adapter.search(index._snap, qq, 10)
    adapter.search(index._snap, qq, 10)
    assert builds == [("sqeuclidean" if metric == "l2" else "inner_product", 800)]  # one build per snapshot
    if metric == "cosine":
        assert_knn_matches(scores, ids, db, q, 10, metric)
    else:  # int8 storage: exact scores of the dequantized vectors, best first
        np.testing.assert_allclose(scores, true_scores(index.vectors()[1], q, ids, "l2"), rtol=1e-4)
        assert np.all(np.diff(scores, axis=1) >= 0)
    index.add(db[:5])
    adapter.search(index._snap, qq, 10)
    assert builds[-1][1] == 805  # a new snapshot rebuilds the graph


# -- empty indexes on disk -------------------------------------------------------------------
@pytest.mark.parametrize("metric,dtype,kind", [("cosine", "float32", "exact"), ("l2", "int8", "exact"),
                                               ("ip", "float32", "hnsw")])
def test_empty_index_saves_and_loads(backend, tmp_path, metric, dtype, kind):
    if kind == "hnsw" and backend != "cpu":
        pytest.skip("hnsw runs on the cpu backend")
    if kind == "hnsw":
        pytest.importorskip("faiss")
    path = tmp_path / "empty.gtv"
    VectorIndex(6, metric, kind=kind, backend=backend, dtype=dtype).save(path)
    loaded = VectorIndex.load(path, backend=backend, mmap=backend == "cpu")
    assert (len(loaded), loaded.dim, loaded.metric, loaded.kind, loaded.dtype) == (0, 6, metric, kind, dtype)
    with pytest.raises(ValueError, match="exceeds the 0"):
        loaded.search(np.ones(6), 1)
    db, q = clustered(300, 6, seed=4), clustered(4, 6, seed=5)
    fresh = VectorIndex(6, metric, kind=kind, backend=backend, dtype=dtype)
    assert loaded.add(db).tolist() == fresh.add(db).tolist() == list(range(300))
    got, want = loaded.search(on(backend, q), 5), fresh.search(on(backend, q), 5)
    np.testing.assert_array_equal(gt.to_numpy(got[1]), gt.to_numpy(want[1]))
    if kind == "exact" and dtype == "float32":
        assert_knn_matches(*got, db, q, 5, metric)


def test_removing_every_vector_then_saving_replaces_the_old_file(backend, tmp_path):
    path = tmp_path / "idx.gtv"
    index = VectorIndex(5, "l2", backend=backend)
    index.add(clustered(40, 5, seed=2), metadata={"n": np.arange(40), "s": ["a"] * 40})
    index.save(path)
    index.remove(np.arange(40))
    index.save(path)
    loaded = VectorIndex.load(path, backend=backend)
    assert len(loaded) == 0 and gt.to_numpy(loaded.vectors()[0]).size == 0
    assert loaded.add(np.ones(5), metadata={"n": 7}).tolist() == [40]  # ids keep counting up
    with pytest.raises(TypeError, match="'n'"):  # the column types survive the empty file
        loaded.add(np.ones(5), metadata={"n": "seven"})


# -- metadata column types ---------------------------------------------------------------------
def _columns(index) -> dict[str, list]:
    """Each metadata column as a list of (type, value) pairs (True == 1 in Python: compare types too)."""
    return {f: [(type(v), v) for v in c.tolist()] for f, c in index._snap.meta.items()}


def test_metadata_column_types_are_fixed_at_first_insertion():
    index = VectorIndex(3, "ip")
    index.add(np.ones((2, 3)), metadata={"n": [1, 2], "f": [0.5, 1.5], "b": [True, False], "s": ["x", "y"]})
    before = _columns(index)
    for field, value in (("n", 2.5), ("n", True), ("n", "3"), ("f", "x"), ("f", False), ("b", 1), ("b", 1.0),
                         ("s", 3), ("n", np.float64(1.0)), ("b", np.int8(1))):
        with pytest.raises(TypeError, match=f"'{field}'"):
            index.add(np.ones(3), metadata={field: value})
    with pytest.raises(TypeError, match="'mixed'"):
        index.add(np.ones((2, 3)), metadata=[{"mixed": True}, {"mixed": 2}])  # bool + int in one batch
    with pytest.raises(ValueError, match="'f'"):
        index.add(np.ones(3), metadata={"f": 2**53 + 1})  # no exact float64
    assert len(index) == 2 and _columns(index) == before  # refused adds changed nothing
    index.add(np.ones((2, 3)), metadata={"f": [3, np.int16(-4)], "n": np.array([5, 6], np.uint8)})
    assert _columns(index)["f"] == [(float, 0.5), (float, 1.5), (float, 3.0), (float, -4.0)]
    assert index._snap.meta["n"].dtype == np.int64 and index._snap.meta["f"].dtype == np.float64
    assert _columns(index)["b"][2:] == [(type(None), None)] * 2  # missing values read None


def test_numpy_scalars_are_stored_as_python_scalars_and_save(tmp_path):
    index = VectorIndex(3, "ip")
    values = {"f32": np.float32(1.1), "f16": np.float16(0.5), "i": np.int64(-3), "u": np.uint32(7),
              "b": np.bool_(True), "s": np.str_("sym"), "big": np.uint64(2**63 - 1)}
    index.add(np.ones(3), metadata=values)
    index.add(np.ones((2, 3)), metadata={"f32": np.array([2.5, 3.5], np.float32), "i": np.array([1, 2], ">i4"),
                                         "s": np.array(["a", "bb"], ">U2"), "b": np.array([False, True])})
    want = {f: float(v) if isinstance(v, np.floating) else bool(v) if isinstance(v, np.bool_) else
            str(v) if isinstance(v, str) else int(v) for f, v in values.items()}
    cols = _columns(index)
    for field, value in want.items():
        assert cols[field][0] == (type(value), value)
    index.save(tmp_path / "m.gtv")
    loaded = VectorIndex.load(tmp_path / "m.gtv")
    assert _columns(loaded) == cols
    assert loaded._snap.meta["s"].tolist() == ["sym", "a", "bb"]
    assert loaded.search(np.ones(3), 3, filter={"i": 2, "b": True})[1][0] == 2


def test_metadata_values_of_other_kinds_are_kept_but_not_saved(tmp_path):
    index = VectorIndex(3, "ip")
    index.add(np.ones((2, 3)), metadata=[{"tags": ["a", "b"]}, {"tags": None}])
    index.add(np.ones(3), metadata={"tags": 5})  # an object column takes anything
    assert index._snap.meta["tags"].tolist() == [["a", "b"], None, 5]
    with pytest.raises(TypeError, match="JSON.*'tags'"):
        index.save(tmp_path / "o.gtv")
    assert not os.listdir(tmp_path)


metadata_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2**62, 2**62), st.floats(allow_nan=False, width=64),
    st.text(max_size=3), st.integers(-100, 100).map(np.int32), st.floats(width=32, allow_nan=False).map(np.float32),
    st.booleans().map(np.bool_), st.text(max_size=2).map(np.str_))


def _kind(v):
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    return "int" if isinstance(v, (int, np.integer)) else "float" if isinstance(v, (float, np.floating)) else "str"


def _python(v, kind):
    return None if v is None else {"bool": bool, "int": int, "float": float, "str": str}[kind](v)


def _model_add(types: dict, columns: dict, n: int, rows: list[dict]):
    """What add should do with these rows: the new (types, columns), or the set of exception
    types it may raise (one per offending field: which field is checked first is not specified)."""
    types, columns = dict(types), {f: list(c) for f, c in columns.items()}
    errors = set()
    for field in dict.fromkeys([*columns, *(f for r in rows for f in r)]):
        batch = [r.get(field) for r in rows]
        kinds = {_kind(v) for v in batch} - {None}
        kind = "float" if kinds == {"int", "float"} else next(iter(kinds)) if len(kinds) == 1 else None
        if len(kinds) > 1 and kind is None:
            errors.add(TypeError)
            continue
        if kind == "float" and any(_kind(v) == "int" and abs(int(v)) > 2**53 for v in batch):
            errors.add(ValueError)  # the batch's own int/float mix is checked before the column's type
            continue
        declared = types.get(field)
        if kind is not None and declared not in (None, kind) and not (declared == "float" and kind == "int"):
            errors.add(TypeError)
            continue
        kind = declared or kind
        if kind == "float" and any(_kind(v) == "int" and abs(int(v)) > 2**53 for v in batch):
            errors.add(ValueError)
            continue
        types[field] = kind
        columns[field] = columns.get(field, [None] * n) + [_python(v, kind) for v in batch]
    return frozenset(errors) if errors else (types, columns)


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(st.dictionaries(st.sampled_from("abc"), metadata_values, max_size=3),
                                 min_size=1, max_size=3), min_size=1, max_size=5))
def test_metadata_types_property(batches):
    """Random adds against a model of the column rules; the columns and a save/load round trip agree with it."""
    import tempfile

    index = VectorIndex(2, "ip")
    types: dict = {}
    columns: dict = {}
    for rows in batches:
        outcome = _model_add(types, columns, len(index), rows)
        refused = isinstance(outcome, frozenset)
        event(" or ".join(sorted(e.__name__ for e in outcome)) if refused else "accepted")
        if refused:
            with pytest.raises(tuple(outcome)):
                index.add(np.ones((len(rows), 2)), metadata=rows)
        else:
            index.add(np.ones((len(rows), 2)), metadata=rows)
            types, columns = outcome
        assert _columns(index) == {f: [(type(v), v) for v in c] for f, c in columns.items()}
        assert index._meta_types == types
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.gtv")
        index.save(path)
        loaded = VectorIndex.load(path)
    assert _columns(loaded) == _columns(index) and loaded._meta_types == index._meta_types


def test_metadata_columns_are_copies_and_read_only():
    index = VectorIndex(3, "ip")
    col = np.arange(4)
    index.add(np.ones((4, 3)), metadata={"n": col})
    col[:] = 99  # the caller's array is not the column
    assert index._snap.meta["n"].tolist() == [0, 1, 2, 3]

    def vandal(meta):
        meta["n"][:] = 0
        return meta["n"] == 0

    with pytest.raises(ValueError, match="read-only"):
        index.search(np.ones(3), 2, filter=vandal)
    assert index._snap.meta["n"].tolist() == [0, 1, 2, 3]


def test_one_long_string_does_not_pad_a_string_column():
    index = VectorIndex(2, "ip")
    index.add(np.ones((20_000, 2)), metadata={"s": ["ab"] * 20_000})
    assert index._snap.meta["s"].dtype.kind == "U"
    long = "x" * 100_000
    index.add(np.ones((2, 2)), metadata={"s": [long, "ends in NUL\0"]})
    col = index._snap.meta["s"]
    assert col.nbytes < 1 << 20  # not 20002 x 100000 x 4 bytes
    assert col[-2] == long and col[-1] == "ends in NUL\0" and col[0] == "ab"
    assert index.search(np.ones(2), 1, filter={"s": long})[1][0] == 20_000


# -- array inputs: read-only, mixed, any real dtype and byte order ----------------------------
def _read_only(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def test_read_only_and_mixed_inputs(tmp_path):
    """Read-only inputs (pandas copy-on-write hands them out), memory maps and broadcasts, alone or
    mixed with writable ones: the same answers as writable copies; nothing is written into them."""
    rng = np.random.default_rng(5)
    db, q = rng.standard_normal((50, 8)), rng.standard_normal((3, 8))
    np.save(tmp_path / "db.npy", db)
    mapped = np.load(tmp_path / "db.npy", mmap_mode="r")
    inputs = {"read-only": _read_only(db), "memmap": mapped, "writable": db.copy()}
    answers = []
    for name, arr in inputs.items():
        before = np.array(arr)
        index = VectorIndex(8, "cosine")
        index.add(arr, ids=_read_only(np.arange(50) * 2), metadata={"k": _read_only(np.arange(50) % 3)})
        answers.append(index.search(_read_only(q), 5, filter={"k": _read_only([0, 1])}))
        index.remove(_read_only([0, 2]))
        np.testing.assert_array_equal(np.asarray(arr), before)
    kept = np.flatnonzero(np.arange(50) % 3 != 2)  # the rows the filter lets through
    assert_knn_matches(*answers[0], db[kept], q, 5, "cosine", row_ids=kept * 2)  # FAISS on those rows
    for got in answers[1:]:
        np.testing.assert_array_equal(got[1], answers[0][1])
        np.testing.assert_allclose(got[0], answers[0][0], rtol=1e-6)
    a, b = _read_only(q[0]), q[1].copy()
    pairs = [(a, b), (b, a), (a, np.broadcast_to(q[1], (8,))), (_read_only(q), q[::-1].copy()), (q, _read_only(q))]
    for x, y in pairs:
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        want = (x64 * y64).sum(-1) / np.linalg.norm(x64, axis=-1) / np.linalg.norm(y64, axis=-1)
        np.testing.assert_allclose(gt.vectors.cosine(x, y), want, rtol=1e-12)
    np.testing.assert_allclose(gt.vectors.normalize(_read_only(q)), q / np.linalg.norm(q, axis=1, keepdims=True))
    np.testing.assert_allclose(gt.vectors.normalize(mapped[0]), db[0] / np.linalg.norm(db[0]))


REAL_DTYPES = ["<f2", "<f4", "<f8", ">f4", ">f8", "<i4", ">i8", "<u2", "|i1", "longdouble"]


@settings(max_examples=40, deadline=None)
@given(da=st.sampled_from(REAL_DTYPES), db_=st.sampled_from(REAL_DTYPES), ro=st.tuples(st.booleans(), st.booleans()),
       rows=st.sampled_from([None, 1, 3]), seed=st.integers(0, 2**16))
def test_cosine_and_normalize_take_any_real_dtype(da, db_, ro, rows, seed):
    """Any real dtype and byte order, read-only or not (never a numba TypingError): equal to
    float64 NumPy on the values as given."""
    rng = np.random.default_rng(seed)
    shape = (7,) if rows is None else (rows, 7)
    a = (rng.integers(1, 50, shape) * rng.choice([-1, 1], shape)).astype(da)
    b = (rng.integers(1, 50, shape)).astype(db_)
    a_in, b_in = (_read_only(a) if ro[0] else a), (_read_only(b) if ro[1] else b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = (a64 * b64).sum(-1) / np.sqrt((a64 * a64).sum(-1) * (b64 * b64).sum(-1))
    tol = 1e-3 if "f2" in (da + db_) else 1e-6
    np.testing.assert_allclose(gt.vectors.cosine(a_in, b_in), want, rtol=tol)
    n = gt.vectors.normalize(a_in)
    assert n.dtype == (np.float32 if np.dtype(da).kind == "f" and np.dtype(da).itemsize <= 4 else np.float64)
    np.testing.assert_allclose(n, a64 / np.linalg.norm(a64, axis=-1, keepdims=True), rtol=tol, atol=tol)
    np.testing.assert_array_equal(a_in, a)


@pytest.mark.parametrize("dtype", [">f4", ">f8", "<f2", "longdouble", ">i2"])
def test_index_takes_any_real_dtype(dtype):
    db = np.random.default_rng(1).integers(-20, 20, (60, 5)).astype(dtype)
    db[np.all(db == 0, axis=1), 0] = 1
    for metric in METRICS:
        index = VectorIndex(5, metric)
        index.add(db)
        scores, ids = index.search(db[:4], 6)
        assert_knn_matches(scores, ids, db.astype(np.float64), db[:4].astype(np.float64), 6, metric)


def test_non_real_inputs_are_type_errors():
    index = VectorIndex(2, "ip")
    index.add(np.ones((3, 2)))
    for bad in (np.ones(2, bool), np.ones(2, complex), np.array(["1", "2"]), np.array([1, None]), [[1, 2], [3]]):
        with pytest.raises(TypeError, match="vectors"):
            index.add(bad)
        with pytest.raises(TypeError, match="queries"):
            index.search(bad, 1)
        with pytest.raises(TypeError, match="^x must"):
            gt.vectors.normalize(bad)
        with pytest.raises(TypeError, match="^a must"):
            gt.vectors.cosine(bad, np.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow is the ValueError, never a RuntimeWarning
        with pytest.raises(ValueError, match="squared norm"):
            index.add(np.full(2, 1e30))
        for metric in ("ip", "l2"):
            other = VectorIndex(2, metric)
            other.add(np.ones((3, 2)))
            with pytest.raises(ValueError, match="squared norm"):
                other.search(np.full(2, 1e30), 1)
            with pytest.raises(ValueError, match="NaN or infinite"):
                other.search(np.array([[1.0, 1.0], [np.nan, 1.0]]), 1)
    assert len(index) == 3


# -- integer parameters: bounded before any allocation or compiled code ----------------------
def test_integer_parameters_are_bounded():
    from gpu_trader.vectors import MAX_DIM, MAX_ID, MAX_PADDED_K

    assert VectorIndex(np.int32(4), M=np.uint8(8), ef_search=np.int64(9)).dim == 4
    for kwargs, error in (({"dim": MAX_DIM + 1}, ValueError), ({"dim": 2**70}, ValueError), ({"dim": True}, TypeError),
                          ({"dim": 4.0}, TypeError), ({"M": 1}, ValueError), ({"M": 2**70}, ValueError),
                          ({"ef_search": 2**64}, ValueError), ({"ef_construction": 0}, ValueError),
                          ({"ef_construction": np.uint64(2**64 - 1)}, ValueError), ({"M": np.bool_(True)}, TypeError),
                          ({"metric": ["ip"]}, TypeError), ({"dtype": object()}, TypeError)):
        name = next(iter(kwargs))
        with pytest.raises(error, match=name):
            VectorIndex(**{"dim": 4, **kwargs})
    index = VectorIndex(3, "ip")
    index.add(np.eye(3), metadata={"s": ["a", "b", "a"]})
    assert index.search(np.ones(3), np.uint16(2))[1].shape == (2,)
    assert index.search(np.ones(3), MAX_PADDED_K, filter={"s": "a"})[1].shape == (MAX_PADDED_K,)
    for k, error in ((MAX_PADDED_K + 1, ValueError), (2**64, ValueError), (np.bool_(True), TypeError),
                     (2.0, TypeError)):
        with pytest.raises(error, match="k"):
            index.search(np.ones(3), k, filter={"s": "a"})
    for ids, error in (([MAX_ID + 1], ValueError), ([2**63], ValueError), ([2**64], ValueError), ([True], TypeError),
                       ([[5]], TypeError), (np.array([[5]]), ValueError), ([1.0], TypeError)):
        with pytest.raises(error, match="ids"):
            index.add(np.ones(3), ids=ids)
    with pytest.raises(ValueError, match="1-D"):
        index.remove(np.array([[0, 1]]))
    index.add(np.ones(3), ids=MAX_ID)
    with pytest.raises(ValueError, match="used up"):
        index.add(np.ones(3))
    assert len(index) == 4


def test_buffers_start_small_for_wide_vectors():
    from gpu_trader._internal import vector_xp
    from gpu_trader.vectors import MAX_DIM

    index = VectorIndex(MAX_DIM, "ip")
    index.add(np.ones(MAX_DIM))
    assert index._vec.nbytes <= vector_xp.MIN_CAPACITY_BYTES  # not 1024 rows of 256 KiB
    small = VectorIndex(8, "ip")
    small.add(np.ones(8))
    assert small._vec.shape[0] == vector_xp.MIN_CAPACITY
    pytest.importorskip("faiss")
    graph = VectorIndex(16_384, "ip", kind="hnsw")
    assert graph._ann._index.ntotal == 0  # FAISS reserves no rows ahead


# -- L1 (Manhattan) ------------------------------------------------------------------------
def brute_l1(db, queries, k):
    """float64 brute force: the ``k`` smallest L1 distances per query, ties broken by id."""
    d = np.abs(np.asarray(queries, np.float64)[:, None, :] - np.asarray(db, np.float64)[None]).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(d.shape[1]), d.shape), d), axis=1)[:, :k]
    return np.take_along_axis(d, order, axis=1), order


@pytest.mark.parametrize("data", [uniform, clustered])
def test_l1_exact_matches_faiss_and_float64(backend, data):
    db, q = data(2500, 20, seed=7), data(9, 20, seed=8)
    index = build(backend, db, "l1")
    scores, ids = index.search(gt.get_backend(backend).asarray(q), 10)
    assert_knn_matches(scores, ids, db, q, 10, "l1")
    ref_d, _ = brute_l1(db, q, 10)
    np.testing.assert_allclose(gt.to_numpy(scores), ref_d, rtol=2e-6, atol=1e-5)
    assert np.all(np.diff(gt.to_numpy(scores), axis=1) >= 0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), dim=st.integers(1, 16), data=st.data(), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float32", "int8"]))
def test_l1_integer_data_equals_brute_force_with_ties_by_id(n, dim, data, seed, dtype):
    """Small integers: every L1 distance is exact in float32, so the scores equal the float64
    brute force exactly and the ids are a valid top-k (FAISS's and ours may break ties apart).
    int8 storage: scores are those of the dequantized vectors (within float32 rounding)."""
    k = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    db = rng.integers(-3, 4, (n, dim)).astype(np.float32)
    q = rng.integers(-3, 4, (4, dim)).astype(np.float32)
    index = build("cpu", db, "l1", dtype=dtype)
    scores, ids = index.search(q, k)
    db = index.vectors()[1]  # the dequantized rows for int8 (the rows themselves for float32)
    ref_d, _ = brute_l1(db, q, k)
    tol = 0 if dtype == "float32" else 1e-5 * dim
    np.testing.assert_allclose(scores, ref_d, atol=tol, rtol=0)
    np.testing.assert_allclose(true_scores(db, q, ids, "l1"), scores, atol=tol, rtol=0)
    assert all(len(set(r.tolist())) == k for r in ids)
    fs, _ = faiss_search(db, q, k, "l1")
    np.testing.assert_allclose(scores, fs, atol=tol, rtol=0)


def test_l1_tiled_gpu_algorithm_filter_padding_and_save(tmp_path, monkeypatch):
    """The GPU search (group-max top-k) on NumPy with tiny tiles, a filter that pads, and a
    save/load round trip, all for L1."""
    from gpu_trader.cpu_fallback import vectors as cpu

    db, q = uniform(9000, 12, seed=9), uniform(5, 12, seed=10)
    index = build("cpu", db, "l1")
    snap = index._snap
    select = functools.partial(vector_xp.select_by_group_max, np)
    l1 = functools.partial(vector_xp.l1_distances, np)
    s, rows = vector_xp.search(np, select, snap.vectors, snap.scales, snap.norms, q, 10, False, 1 << 16, None, l1)
    assert_knn_matches(-s, rows, db, q, 10, "l1")
    monkeypatch.setattr(cpu, "TILE_BYTES", 1)
    assert_knn_matches(*index.search(q, 10), db, q, 10, "l1")
    small = build("cpu", db[:6], "l1")
    small.remove([0, 1])
    ps, pi = small.search(q[0], 8, filter=lambda m: np.ones(4, bool))
    assert pi.tolist()[4:] == [-1] * 4 and np.all(np.isposinf(ps[4:])) and np.all(np.diff(ps[:4]) >= 0)
    index.save(tmp_path / "l1.gtvi")
    back = VectorIndex.load(tmp_path / "l1.gtvi")
    assert back.metric == "l1"
    np.testing.assert_array_equal(back.search(q, 10)[1], index.search(q, 10)[1])


def test_l1_hnsw_recall_and_cagra_refuses():
    db, q = clustered(3000, 16, seed=11), clustered(50, 16, seed=12)
    index = build("cpu", db, "l1", kind="hnsw")
    scores, ids = index.search(q, 10)
    _, ref = brute_l1(db, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), ref.tolist())])
    assert recall >= 0.95
    np.testing.assert_allclose(true_scores(db, q, ids, "l1"), scores, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="metric='l1'.*CAGRA"):
        VectorIndex(8, "l1", kind="cagra")


# -- compressed storage (binary, product quantization) ----------------------------------------
def _recall(found, truth):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(np.asarray(found).tolist(),
                                                                          np.asarray(truth).tolist())]))


@pytest.mark.parametrize("dtype,metric", [("pq16", "l2"), ("pq32", "ip"), ("pq16", "cosine")])
def test_pq_codes_and_scores_match_faiss_index_pq(dtype, metric):
    """Given our codebooks, FAISS's ProductQuantizer picks the same codes and its IndexPQ
    (asymmetric distances) reports the same scores; the ids are the best of the decoded rows."""
    dim = 16
    db, q = clustered(600, dim, seed=31), clustered(7, dim, seed=32)
    index = build("cpu", db, metric, dtype=dtype)
    snap = index._snap
    n_sub = dim // {"pq16": 4, "pq32": 8}[dtype]
    assert snap.vectors.shape == (600, n_sub) and snap.vectors.dtype == np.uint8
    assert snap.codebooks.shape == (n_sub, 256, dim // n_sub)
    x, qq = _float64_pair(db, q, metric)
    x, qq = x.astype(np.float32), qq.astype(np.float32)
    fpq = faiss.IndexPQ(dim, n_sub, 8, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.ascontiguousarray(snap.codebooks).ravel(), fpq.pq.centroids)
    fpq.is_trained = True
    fpq.add(x)
    np.testing.assert_array_equal(faiss.vector_to_array(fpq.codes).reshape(600, n_sub), snap.vectors)
    scores, ids = index.search(q, 10)
    ref_s, _ = fpq.search(qq, 10)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-4)
    decoded = index.vectors()[1].astype(np.float64)
    full = ((decoded[None] - qq[:, None]) ** 2).sum(-1) if metric == "l2" else qq @ decoded.T
    best = np.sort(full, axis=1)[:, :10] if metric == "l2" else -np.sort(-full, axis=1)[:, :10]
    np.testing.assert_allclose(np.take_along_axis(full, ids, axis=1), best, rtol=1e-5, atol=1e-4)


def test_pq_training_is_close_to_faiss():
    """Our codebooks reconstruct about as well as FAISS's own PQ training (mean squared error)."""
    db = clustered(2000, 16, seed=33, n_centres=40, noise=0.6)
    index = build("cpu", db, "l2", dtype="pq16")
    ours = ((index.vectors()[1] - db) ** 2).sum(1).mean()
    pq = faiss.ProductQuantizer(16, 4, 8)
    pq.verbose = False
    pq.cp.verbose = False
    pq.train(db)
    theirs = ((pq.decode(pq.compute_codes(db)) - db) ** 2).sum(1).mean()
    assert ours <= 1.1 * theirs


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 40), dim=st.integers(1, 20), seed=st.integers(0, 2**16),
       metric=st.sampled_from(["ip", "l2", "l1"]))
def test_binary_codes_scales_and_scores_equal_numpy(n, dim, seed, metric):
    """Sign bits as numpy.packbits packs them, scales mean |x|, and scores of the decoded
    vectors (scale times +-1) equal a float64 brute force."""
    rng = np.random.default_rng(seed)
    db, q = rng.standard_normal((n, dim)).astype(np.float32), rng.standard_normal((3, dim)).astype(np.float32)
    index = build("cpu", db, metric, dtype="binary")
    snap = index._snap
    np.testing.assert_array_equal(snap.vectors, np.packbits(db > 0, axis=1))
    np.testing.assert_allclose(snap.scales, np.abs(db.astype(np.float64)).mean(1), rtol=1e-6)
    decoded = np.where(db > 0, 1.0, -1.0) * snap.scales[:, None].astype(np.float64)
    np.testing.assert_allclose(index.vectors()[1], decoded, rtol=1e-6)
    scores, ids = index.search(q, n)
    tol = 1e-4 * (1 + np.abs(decoded).sum() + np.abs(q).sum())
    np.testing.assert_allclose(true_scores(decoded, q, ids, metric), scores, atol=tol, rtol=0)
    np.testing.assert_allclose(np.sort(scores, axis=1), np.sort(true_scores(decoded, q, np.broadcast_to(
        np.arange(n), (3, n)), metric), axis=1), atol=tol, rtol=0)


def test_compressed_storage_remove_filter_save_load(tmp_path):
    db = clustered(400, 16, seed=34)
    meta = {"even": (np.arange(400) % 2 == 0)}
    for dtype in ("binary", "pq16", "pq32"):
        index = VectorIndex(16, "l2", dtype=dtype)
        if dtype != "binary":
            with pytest.raises(ValueError, match="at least 256"):
                index.add(db[:100])
            assert len(index) == 0 and index._codebooks is None
        index.add(db[:300], metadata={"even": meta["even"][:300]})
        index.add(db[300:], metadata={"even": meta["even"][300:]})  # encoded with the first add's codebooks
        index.remove([0, 5, 7])
        s, i = index.search(db[:4], 5, filter={"even": True})
        assert np.all(i % 2 == 0) and np.all(np.diff(s, axis=1) >= 0)
        index.save(tmp_path / f"{dtype}.gtvi")
        back = VectorIndex.load(tmp_path / f"{dtype}.gtvi")
        assert back.dtype == dtype and len(back) == 397 and back.nbytes == index.nbytes
        for got, want in zip(back.search(db[:4], 5, filter={"even": True}), (s, i)):
            np.testing.assert_array_equal(got, want)
        back.add(db[5], ids=5)  # encoded with the loaded codebooks: as the first index encoded it
        ref = VectorIndex(16, "l2", dtype=dtype)
        ref.add(db[:300])
        np.testing.assert_array_equal(back.vectors()[1][-1], ref.vectors()[1][5])
        empty = VectorIndex(16, "cosine", dtype=dtype)
        empty.save(tmp_path / "empty.gtvi")
        assert len(VectorIndex.load(tmp_path / "empty.gtvi")) == 0
    assert VectorIndex(384, "l2", dtype="binary").nbytes == 0


def test_compressed_storage_refusals():
    with pytest.raises(ValueError, match="multiple of 8"):
        VectorIndex(20, dtype="pq32")
    with pytest.raises(ValueError, match="multiple of 4"):
        VectorIndex(10, dtype="pq16")
    for dtype in ("binary", "pq16", "pq32"):
        with pytest.raises(ValueError, match="kind='exact'"):
            VectorIndex(16, kind="hnsw", dtype=dtype)
        with pytest.raises(ValueError, match="kind='exact'"):
            VectorIndex(16, kind="cagra", dtype=dtype)
    with pytest.raises(ValueError, match="dtype must be one of"):
        VectorIndex(16, dtype="pq8")


def test_compression_levels_recall_and_memory():
    """recall@10 against exact search falls with the compression level; the bytes per vector
    are those of COMPRESSION (plus the binary scale)."""
    from gpu_trader.vectors import COMPRESSION

    db, q = clustered(1500, 32, seed=35, n_centres=30, noise=0.6), clustered(40, 32, seed=36, n_centres=30, noise=0.6)
    _, truth = build("cpu", db, "l2").search(q, 10)
    recall = {}
    for dtype in ("int8", "pq16", "binary", "pq32"):
        index = build("cpu", db, "l2", dtype=dtype)
        recall[dtype] = _recall(index.search(q, 10)[1], truth)
        codes = index._snap.vectors.nbytes
        assert codes == db.nbytes // COMPRESSION[dtype]
    assert recall["int8"] >= 0.9 and recall["pq16"] >= 0.5 and recall["pq32"] >= 0.3 and recall["binary"] >= 0.2
    assert recall["int8"] >= recall["pq16"] >= recall["pq32"]
