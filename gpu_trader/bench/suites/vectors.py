"""The ``vectors`` suite: pattern memory and k-NN (docs/design.md#benchmarks-and-targets).

Every case has FAISS (faiss-cpu, on the host) doing the same work as its reference, timed
in the same run (``ratio:faiss`` = FAISS p50 / ours), except the 1M-vector GPU case,
whose yardstick is the bare GEMM of the same shapes on the same device (``ratio:gemm``;
FAISS on the CPU needs ~10 s per call there, its ratio is that of the 10K batched case) and
whose GPU library reference is RAPIDS cuML's brute-force ``NearestNeighbors`` (``ratio:cuml``).

Threads: the suite pins BLAS (threadpoolctl) and FAISS's OpenMP pool to
``GPU_TRADER_BENCH_THREADS`` threads (default 1: the bench machines are small and
shared, and two pools spinning on 2 cores made calls ~10x slower); the pins stay for the
rest of the process, which is why ``vectors`` runs after the other BLAS-using suites
(numba's own pool is left alone). Our CPU code uses BLAS and serial numba loops only.

Data: unit vectors around ``n / 100`` random centres (noise 0.6; at 100K the easier
clustered set of ``docs/ann_comparison.md``), queries drawn from the same mixture; the
approximate case raises an error (status ``error``) when its recall@10 against exact
search is below 0.95.
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import os

import numpy as np

from ..data import FIELDS, random_walk_ohlcv
from ..harness import Reference, SkipCase, Workload
from ..memory import suite_cache

__all__ = ["workloads"]

THREADS_ENV = "GPU_TRADER_BENCH_THREADS"
MAX_THREADS = 1024
PAIR_DIMS = (128, 384, 768, 1536)
DIM = 384
EXACT_K = (1, 5, 10, 20)
N_QUERIES = 256  # distinct queries the single-query cases cycle through
RECALL_MIN = 0.95


def bench_threads() -> int:
    """``$GPU_TRADER_BENCH_THREADS`` as a thread count (unset or blank: 1); ``ValueError``
    naming the variable unless it is an integer from 1 to ``MAX_THREADS``. The CLI checks
    it before a run starts."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(f"{THREADS_ENV} must be an integer from 1 to {MAX_THREADS}, got {raw[:40]!r}")
    return value


def _pin_threads() -> None:
    """Pin BLAS and FAISS's OpenMP pool to :func:`bench_threads` (each where installed)."""
    threads = bench_threads()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")  # BLAS only: numba's pool is not ours to pin
    except ImportError:
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


@suite_cache(maxsize=4)
def _mixture(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` database vectors and ``N_QUERIES`` queries (unit float32, read-only, cached), all
    drawn around the same ``n / 100`` random centres (at least 1) with noise 0.6."""
    rng = np.random.default_rng(n + dim)
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32)
    m = n + N_QUERIES
    x = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.standard_normal((m, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x.flags.writeable = False
    return x[:n], x[n:]


def _call(fn):
    return fn()


def _cycle(fn, items):
    nxt = itertools.cycle(items).__next__
    return lambda: fn(nxt())


def _index(be, db: np.ndarray, **kw):
    from gpu_trader.vectors import VectorIndex

    index = VectorIndex(db.shape[1], "cosine", backend=be.name, **kw)
    index.add(be.asarray(db))
    return index


def _faiss_flat(db: np.ndarray):
    import faiss

    _pin_threads()
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    return index


def _ref(setup) -> tuple[Reference, ...]:
    return (Reference("faiss", setup, _call, requires="faiss"),)


# -- normalize / cosine ------------------------------------------------------------------
def _pair(kind: str, dim: int) -> Workload:
    a, b = _mixture(2, dim)[0] * 3.0

    def setup(be):
        import gpu_trader.vectors as gv

        _pin_threads()
        x, y = be.asarray(a), be.asarray(b)
        if kind == "normalize":
            return functools.partial(gv.normalize, x, backend=be.name)
        return functools.partial(gv.cosine, x, y, backend=be.name)

    def ref_setup():
        import faiss

        _pin_threads()
        if kind == "normalize":
            def run():
                v = a[None].copy()  # normalize_L2 works in place
                faiss.normalize_L2(v)
                return v
            return run

        def run():
            v = np.stack([a, b])
            faiss.normalize_L2(v)
            return faiss.pairwise_distances(v[:1], v[1:], faiss.METRIC_INNER_PRODUCT)
        return run

    target = f"vectors.{kind}" + ("_384" if dim == DIM else "")
    return Workload(name=f"{kind} one vector{' pair' if kind == 'cosine' else ''} dim {dim}", sizes={"dim": dim},
                    setup=setup, run=_call, items=1, unit="vector", dtype="float32", target=target,
                    references=_ref(ref_setup))


# -- insert ------------------------------------------------------------------------------
RESET_EVERY = 20_000  # vectors per index before the insert cases start a fresh one


def _insert(batch: int) -> Workload:
    rows = _mixture(4096, DIM)[0]

    def setup(be):
        from gpu_trader.vectors import VectorIndex

        _pin_threads()
        chunks = [be.asarray(rows[i:i + batch] if batch > 1 else rows[i]) for i in range(0, 4096 - batch + 1, batch)]
        state = {"index": VectorIndex(DIM, "cosine", backend=be.name)}
        nxt = itertools.cycle(chunks).__next__

        def run():
            index = state["index"]
            if len(index) >= RESET_EVERY:
                index = state["index"] = VectorIndex(DIM, "cosine", backend=be.name)
            index.add(nxt())
        return run

    def ref_setup():
        import faiss

        _pin_threads()
        chunks = [rows[i:i + batch] for i in range(0, 4096 - batch + 1, batch)]
        state = {"index": faiss.IndexFlatIP(DIM)}
        nxt = itertools.cycle(chunks).__next__

        def run():
            if state["index"].ntotal >= RESET_EVERY:
                state["index"] = faiss.IndexFlatIP(DIM)
            v = nxt().copy()  # what a FAISS user does for cosine: normalize a copy, then add
            faiss.normalize_L2(v)
            state["index"].add(v)
        return run

    return Workload(name=f"insert {'one' if batch == 1 else f'batch of {batch}'} dim {DIM}",
                    sizes={"batch": batch, "dim": DIM}, setup=setup, run=_call, items=batch, unit="vector",
                    dtype="float32", target="vectors.insert_one" if batch == 1 else "vectors.insert_batch",
                    references=_ref(ref_setup))


# -- exact k-NN --------------------------------------------------------------------------
def _exact_single(n: int, k: int) -> Workload:
    def setup(be):
        _pin_threads()
        db, queries = _mixture(n, DIM)
        index = _index(be, db)
        qs = [be.asarray(q) for q in queries]
        return _cycle(lambda q: index.search(q, k), qs)

    def ref_setup():
        db, queries = _mixture(n, DIM)
        index = _faiss_flat(db)
        return _cycle(lambda q: index.search(q, k), [q[None] for q in queries])

    return Workload(name=f"exact k-NN k={k} 1 query x {n} x {DIM}", sizes={"queries": 1, "vectors": n, "dim": DIM, "k": k},
                    setup=setup, run=_call, items=1, unit="query", dtype="float32", target="vectors.exact",
                    references=_ref(ref_setup))


def _exact_batched_cpu(n_queries: int, n: int) -> Workload:
    def setup(be):
        _pin_threads()
        index = _index(be, _mixture(n, DIM)[0])
        q = be.asarray(_mixture(n_queries, DIM)[0])
        return lambda: index.search(q, 10)

    def ref_setup():
        index = _faiss_flat(_mixture(n, DIM)[0])
        q = _mixture(n_queries, DIM)[0]
        return lambda: index.search(q, 10)

    return Workload(name=f"batched exact k-NN k=10 {n_queries} queries x {n} x {DIM}",
                    sizes={"queries": n_queries, "vectors": n, "dim": DIM, "k": 10}, setup=setup, run=_call,
                    items=n_queries, unit="query", dtype="float32", target="vectors.batched_exact_cpu",
                    references=_ref(ref_setup))


def _exact_batched_gpu(n_queries: int, n: int) -> Workload:
    """The 1M-vector case: GPU only; the yardstick is the bare GEMM of the same shapes (cuBLAS),
    and RAPIDS cuML's brute-force ``NearestNeighbors`` (inner product, k = 10) is the GPU k-NN
    reference (``ratio:cuml``; n/a with the reason where cuML is not installed)."""

    def setup(be):
        if be.name == "cpu":
            raise SkipCase("GPU case (FAISS-sized CPU comparison: the batched 10K case)")
        from gpu_trader.vectors import VectorIndex

        xp = be.xp
        index = VectorIndex(DIM, "ip", backend=be.name)
        index.add(xp.random.standard_normal((n, DIM), dtype=xp.float32))
        q = xp.random.standard_normal((n_queries, DIM), dtype=xp.float32)
        return lambda: index.search(q, 10)

    def gemm_setup():
        import cupy as cp

        db = cp.random.standard_normal((n, DIM), dtype=cp.float32)
        q = cp.random.standard_normal((n_queries, DIM), dtype=cp.float32)

        def run():
            out = q @ db.T
            cp.cuda.get_current_stream().synchronize()
            return out
        return run

    def cuml_setup():
        import cupy as cp
        from cuml.neighbors import NearestNeighbors

        db = cp.random.standard_normal((n, DIM), dtype=cp.float32)
        q = cp.random.standard_normal((n_queries, DIM), dtype=cp.float32)
        model = NearestNeighbors(n_neighbors=10, algorithm="brute", metric="inner_product", output_type="cupy")
        model.fit(db)

        def run():
            out = model.kneighbors(q)
            cp.cuda.get_current_stream().synchronize()
            return out
        try:
            run()  # a cuML without brute-force inner product says so here, not in the timed calls
        except (ValueError, NotImplementedError) as exc:
            raise SkipCase(f"cuML NearestNeighbors: {exc}") from None
        return run

    return Workload(name=f"batched exact k-NN k=10 {n_queries} queries x {n} x {DIM}",
                    sizes={"queries": n_queries, "vectors": n, "dim": DIM, "k": 10}, setup=setup, run=_call,
                    items=n_queries, unit="query", dtype="float32", target="vectors.batched_exact",
                    references=(Reference("gemm", gemm_setup, _call, requires="cupy"),
                                Reference("cuml", cuml_setup, _call, requires="cuml")))


# -- L1 k-NN and pairwise distances ------------------------------------------------------
L1_DIM = 128


def _exact_l1(n_queries: int, n: int) -> Workload:
    """Batched exact k-NN under L1 (Manhattan), against FAISS's ``IndexFlat(dim, METRIC_L1)``."""
    def setup(be):
        from gpu_trader.vectors import VectorIndex

        _pin_threads()
        index = VectorIndex(L1_DIM, "l1", backend=be.name)
        index.add(be.asarray(_mixture(n, L1_DIM)[0]))
        q = be.asarray(_mixture(n_queries, L1_DIM)[0])
        return lambda: index.search(q, 10)

    def ref_setup():
        import faiss

        _pin_threads()
        index = faiss.IndexFlat(L1_DIM, faiss.METRIC_L1)
        index.add(_mixture(n, L1_DIM)[0])
        q = _mixture(n_queries, L1_DIM)[0]
        return lambda: index.search(q, 10)

    return Workload(name=f"batched exact L1 k-NN k=10 {n_queries} queries x {n} x {L1_DIM}",
                    sizes={"queries": n_queries, "vectors": n, "dim": L1_DIM, "k": 10}, setup=setup, run=_call,
                    items=n_queries, unit="query", dtype="float32", target="vectors.l1_exact",
                    references=_ref(ref_setup))


def _pairwise(metric: str, n_queries: int, n: int) -> Workload:
    """``gpu_trader.distances.pairwise_distances`` (``l1`` or ``sqeuclidean``) against
    ``faiss.pairwise_distances`` with ``METRIC_L1`` / ``METRIC_L2`` (squared)."""
    def setup(be):
        from gpu_trader.distances import pairwise_distances

        _pin_threads()
        q, db = be.asarray(_mixture(n_queries, L1_DIM)[0]), be.asarray(_mixture(n, L1_DIM)[0])
        return functools.partial(pairwise_distances, q, db, metric, backend=be.name)

    def ref_setup():
        import faiss

        _pin_threads()
        q, db = _mixture(n_queries, L1_DIM)[0], _mixture(n, L1_DIM)[0]
        return functools.partial(faiss.pairwise_distances, q, db,
                                 faiss.METRIC_L1 if metric == "l1" else faiss.METRIC_L2)

    return Workload(name=f"pairwise {metric} distances {n_queries} x {n} x {L1_DIM}",
                    sizes={"queries": n_queries, "vectors": n, "dim": L1_DIM}, setup=setup, run=_call,
                    items=n_queries * n, unit="distance", dtype="float32", target="vectors.pairwise",
                    references=_ref(ref_setup))


# -- compressed storage ------------------------------------------------------------------
COMPRESSED_DTYPES = ("int8", "pq16", "binary", "pq32")
COMPRESSED_STORE = {"quick": 1000, "standard": 10_000, "full": 10_000}  # vectors of the L1 and compressed cases


def _compressed(dtype: str, n: int) -> Workload:
    """Batched exact k-NN (cosine, k = 10, ``N_QUERIES`` queries) over ``dtype`` storage; extra
    metrics ``recall10`` (against float32 exact search) and ``x_smaller`` (float32 bytes / stored
    bytes, codebooks and scales included). Reference: FAISS on the same codes' kind
    (``IndexPQ`` trained on the same vectors; ``IndexScalarQuantizer`` QT_8bit for int8;
    ``IndexBinaryFlat`` Hamming search on the sign bits for binary)."""
    def setup(be):
        from gpu_trader.vectors import VectorIndex

        _pin_threads()
        db, qs = _mixture(n, L1_DIM)
        index = VectorIndex(L1_DIM, "cosine", backend=be.name, dtype=dtype)
        index.add(be.asarray(db))
        q = be.asarray(qs)
        truth = np.argsort(-(qs @ db.T), axis=1)[:, :10]

        def run():
            return index.search(q, 10)
        run.recall = _recall(be.to_numpy(run()[1]), truth)
        run.smaller = db.nbytes / index.nbytes
        return run

    def ref_setup():
        import faiss

        _pin_threads()
        db, qs = _mixture(n, L1_DIM)
        if dtype == "binary":
            index = faiss.IndexBinaryFlat(L1_DIM)
            index.add(np.packbits(db > 0, axis=1))
            bits = np.packbits(qs > 0, axis=1)
            return lambda: index.search(bits, 10)
        if dtype == "int8":
            index = faiss.IndexScalarQuantizer(L1_DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexPQ(L1_DIM, L1_DIM // {"pq16": 4, "pq32": 8}[dtype], 8, faiss.METRIC_INNER_PRODUCT)
        index.train(db)
        index.add(db)
        return lambda: index.search(qs, 10)

    return Workload(name=f"compressed {dtype} exact k-NN k=10 {N_QUERIES} queries x {n} x {L1_DIM}",
                    sizes={"queries": N_QUERIES, "vectors": n, "dim": L1_DIM, "k": 10}, setup=setup, run=_call,
                    items=N_QUERIES, unit="query", dtype="float32", target="vectors.compressed",
                    references=_ref(ref_setup),
                    extra_metrics=lambda run, be, policy, metrics: {"recall10": run.recall, "x_smaller": run.smaller})


# -- approximate k-NN --------------------------------------------------------------------
def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def _approx(n: int) -> Workload:
    def setup(be):
        if be.name != "cpu":
            raise SkipCase("kind='hnsw' runs on the cpu backend (the GPU's approximate index is cagra)")
        if importlib.util.find_spec("faiss") is None:
            raise SkipCase("FAISS (faiss-cpu), which kind='hnsw' needs, is not installed")
        _pin_threads()
        db, qs = _mixture(n, DIM)
        index = _index(be, db, kind="hnsw")
        truth = np.argsort(-(qs @ db.T), axis=1)[:, :10]
        found = np.stack([index.search(q, 10)[1] for q in qs])
        r = _recall(found, truth)
        if r < RECALL_MIN:
            raise RuntimeError(f"recall@10 = {r:.3f} < {RECALL_MIN} at the default ef_search")
        return _cycle(lambda q: index.search(q, 10), list(qs))

    def ref_setup():
        import faiss

        from gpu_trader._internal.ann import HNSW_DEFAULTS

        _pin_threads()
        index = faiss.IndexHNSWFlat(DIM, HNSW_DEFAULTS["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_DEFAULTS["ef_construction"]
        db, queries = _mixture(n, DIM)
        index.add(db)
        index.hnsw.efSearch = HNSW_DEFAULTS["ef_search"]
        return _cycle(lambda q: index.search(q, 10), [q[None] for q in queries])

    return Workload(name=f"approximate k-NN (hnsw) k=10 1 query x {n} x {DIM}",
                    sizes={"queries": 1, "vectors": n, "dim": DIM, "k": 10}, setup=setup, run=_call, items=1,
                    unit="query", dtype="float32", target="vectors.approx", references=_ref(ref_setup))


# -- pattern memory ----------------------------------------------------------------------
N_SYMBOLS = 10


@suite_cache(maxsize=2)
def _pattern_data(n_patterns: int):
    """Patterns of ``N_SYMBOLS`` random-walk symbols (about ``n_patterns`` in all): embedded
    float32 vectors, their outcomes and symbols (host)."""
    from gpu_trader.patterns import PatternMemory

    bars = n_patterns // N_SYMBOLS + 40
    data = random_walk_ohlcv((N_SYMBOLS, bars), seed=4)
    pm = PatternMemory(20)
    vecs, outs, syms = [], [], []
    for s in range(N_SYMBOLS):
        ends, pats = pm.embed_history({f: data[f][s] for f in FIELDS})
        keep = ends + 1 < bars
        ends, pats = ends[keep], pats[keep]
        vecs.append(pats.astype(np.float32))
        outs.append(data["close"][s][ends + 1] / data["close"][s][ends] - 1)
        syms += [f"S{s}"] * len(ends)
    return np.concatenate(vecs), np.concatenate(outs), np.array(syms)


def _filtered(n_patterns: int) -> Workload:
    def setup(be):
        from gpu_trader.patterns import PatternMemory

        _pin_threads()
        vecs, outs, syms = _pattern_data(n_patterns)
        pm = PatternMemory(20, backend=be.name)
        pm.add(be.asarray(vecs), outs, metadata={"symbol": syms})
        qs = [be.asarray(v) for v in vecs[:: max(1, len(vecs) // N_QUERIES)]]
        return _cycle(lambda q: pm.query(q, 10, filter={"symbol": "S3"}), qs)

    def ref_setup():
        import faiss

        vecs, _, syms = _pattern_data(n_patterns)
        unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        index = _faiss_flat(np.ascontiguousarray(unit))
        qs = [q[None] for q in unit[:: max(1, len(vecs) // N_QUERIES)]]

        def run(q):  # the user's side table: the symbol's ids, then an id selector
            sel = faiss.IDSelectorBatch(np.flatnonzero(syms == "S3").astype(np.int64))
            return index.search(q, 10, params=faiss.SearchParameters(sel=sel))
        return _cycle(run, qs)

    return Workload(name=f"pattern retrieval k=10 with symbol filter, {n_patterns} patterns",
                    sizes={"patterns": n_patterns, "window": 20, "k": 10}, setup=setup, run=_call, items=1,
                    unit="query", dtype="float32", target="vectors.filtered", references=_ref(ref_setup))


def _distill(n_patterns: int, n_clusters: int) -> Workload:
    def setup(be):
        from gpu_trader.patterns import PatternMemory

        _pin_threads()
        vecs, outs, _ = _pattern_data(1000)
        pm = PatternMemory(20, backend=be.name)
        pm.add(be.asarray(vecs[:n_patterns]), outs[:n_patterns])
        return lambda: pm.distill(n_clusters)

    def ref_setup():
        import faiss

        _pin_threads()
        vecs = _pattern_data(1000)[0][:n_patterns]
        x = np.ascontiguousarray(vecs / np.linalg.norm(vecs, axis=1, keepdims=True))

        def run():
            km = faiss.Kmeans(x.shape[1], n_clusters, niter=50, seed=0)
            km.cp.min_points_per_centroid = 1
            km.train(x)
            return km.centroids
        return run

    return Workload(name=f"distill {n_patterns} patterns into {n_clusters} centroids",
                    sizes={"patterns": n_patterns, "clusters": n_clusters}, setup=setup, run=_call, items=n_patterns,
                    unit="pattern", dtype="float32", target="vectors.distill", references=_ref(ref_setup))


def _embed_cached(bars: int) -> Workload:
    """A rolling query's embedding of an unchanged window (``PatternMemory.embed`` with an
    :class:`~gpu_trader.patterns.EmbeddingCache`: a hit skips the indicators) against the same
    call without a cache, which recomputes them."""
    def setup_with(cache: bool):
        from gpu_trader.patterns import EmbeddingCache, PatternMemory

        data = random_walk_ohlcv((1, bars), seed=5)
        ohlcv = {f: np.ascontiguousarray(data[f][0]) for f in FIELDS}
        pm = PatternMemory(20, backend="cpu", cache=EmbeddingCache(max_entries=1024) if cache else None)
        pm.embed(ohlcv, symbol="S0")  # the first call fills the cache
        return lambda: pm.embed(ohlcv, symbol="S0")

    return Workload(name=f"embed a cached window, {bars} bars history", sizes={"bars": bars, "window": 20},
                    setup=lambda be: setup_with(True), run=_call, items=1, unit="pattern", dtype="float64",
                    target="vectors.embed_cache",
                    references=(Reference("uncached", lambda: setup_with(False), _call),))


# size -> batched queries, the GPU case's database, the approximate case's database
STORES = {"quick": (100, 100_000, 5_000), "standard": (1000, 1_000_000, 10_000), "full": (1000, 1_000_000, 100_000)}


def workloads(size: str) -> list[Workload]:
    """All cases of the suite; ``size`` picks the batched and approximate stores (``STORES``:
    building the 100K-vector HNSW indexes, ours and FAISS's, is most of a full run's minute)."""
    n_queries, gpu_db, approx_db = STORES[size]
    out = [_pair(kind, d) for kind in ("normalize", "cosine") for d in PAIR_DIMS]
    out += [_insert(1), _insert(100)]
    out += [_exact_single(10_000, k) for k in EXACT_K]
    out.append(_exact_batched_cpu(n_queries, 10_000))
    out.append(_exact_batched_gpu(n_queries, gpu_db))
    out.append(_exact_l1(100, COMPRESSED_STORE[size]))
    out += [_pairwise(metric, 100, COMPRESSED_STORE[size]) for metric in ("l1", "sqeuclidean")]
    out += [_compressed(dtype, COMPRESSED_STORE[size]) for dtype in COMPRESSED_DTYPES]
    out.append(_approx(approx_db))
    out.append(_filtered(10_000))
    out.append(_distill(100, 8))
    out.append(_embed_cached(2520))
    return out
