"""Measure FAISS HNSW vs usearch vs hnswlib at 100K x 384 (cosine); writes a Markdown table.

Run: ``.venv/bin/python benches/ann_comparison.py [hnsw|int8] [n] [dim]`` (``int8``: the recall
cost of ``VectorIndex(dtype="int8")`` exact search instead). Data: unit vectors drawn
around 1000 random centres (Gaussian mixtures, like clustered market patterns; two noise
levels) plus uniform-on-sphere data as the structureless worst case; recall@10 is
against exact brute force.
Build uses 2 threads in every library; queries are timed one at a time, 1 thread.
"""
from __future__ import annotations

import sys
import time

import numpy as np

K = 10
N_QUERIES = 500
M = 16
EF_CONSTRUCTION = 128
EF_SEARCH = (16, 32, 64, 128, 256)
BUILD_THREADS = 2


# noise scale of each data set; None: uniform on the sphere (no structure: the worst case for any graph index)
DATASETS = (0.6, 1.0, None)


def data(n: int, dim: int, noise: float | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` base vectors and the queries, unit norm, float32; ``noise`` as in :data:`DATASETS`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + N_QUERIES, dim)).astype(np.float32)
    if noise is not None:
        centres = rng.standard_normal((1000, dim)).astype(np.float32)
        x = centres[rng.integers(0, 1000, n + N_QUERIES)] + noise * x
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


def exact(db: np.ndarray, q: np.ndarray) -> np.ndarray:
    s = q @ db.T
    return np.argsort(-s, axis=1)[:, :K]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def time_queries(fn, q: np.ndarray) -> tuple[float, np.ndarray]:
    out, times = [], []
    for row in q:
        t0 = time.perf_counter_ns()
        out.append(fn(row))
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3, np.asarray(out)


def faiss_runs(db, q):
    import faiss

    faiss.omp_set_num_threads(BUILD_THREADS)
    idx = faiss.IndexHNSWFlat(db.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = EF_CONSTRUCTION
    t0 = time.perf_counter()
    idx.add(db)
    build = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for ef in EF_SEARCH:
        idx.hnsw.efSearch = ef
        yield build, ef, *time_queries(lambda r: idx.search(r[None], K)[1][0], q)


def usearch_runs(db, q):
    from usearch.index import Index

    idx = Index(ndim=db.shape[1], metric="ip", dtype="f32", connectivity=M, expansion_add=EF_CONSTRUCTION)
    t0 = time.perf_counter()
    idx.add(np.arange(len(db)), db, threads=BUILD_THREADS)
    build = time.perf_counter() - t0
    for ef in EF_SEARCH:
        idx.expansion_search = ef
        yield build, ef, *time_queries(lambda r: idx.search(r, K, threads=1).keys, q)


def hnswlib_runs(db, q):
    import hnswlib

    idx = hnswlib.Index(space="ip", dim=db.shape[1])
    idx.init_index(max_elements=len(db), ef_construction=EF_CONSTRUCTION, M=M)
    idx.set_num_threads(BUILD_THREADS)
    t0 = time.perf_counter()
    idx.add_items(db, np.arange(len(db)))
    build = time.perf_counter() - t0
    idx.set_num_threads(1)
    for ef in EF_SEARCH:
        idx.set_ef(ef)
        yield build, ef, *time_queries(lambda r: idx.knn_query(r, K, num_threads=1)[0][0], q)


def main(n: int = 100_000, dim: int = 384) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(BUILD_THREADS):
        for noise in DATASETS:
            db, q = data(n, dim, noise)
            truth = exact(db, q)
            label = "uniform on the sphere" if noise is None else f"1000 clusters, noise {noise}"
            print(f"\n### {label}, {n} x {dim}, M={M}, "
                  f"efConstruction={EF_CONSTRUCTION}\n")
            print("| library | build s | efSearch | p50 us/query | recall@10 |\n|---|---|---|---|---|")
            for name, runs in (("faiss", faiss_runs), ("usearch", usearch_runs), ("hnswlib", hnswlib_runs)):
                for build, ef, p50_us, found in runs(db, q):
                    print(f"| {name} | {build:.1f} | {ef} | {p50_us:.0f} | {recall(found, truth):.3f} |", flush=True)


def int8_main(n: int = 100_000, dim: int = 384) -> None:
    """Recall@10 and memory of int8 exact search vs float32 exact search, same data sets."""
    from threadpoolctl import threadpool_limits

    from gpu_trader.vectors import VectorIndex

    print("| data | recall@10 int8 vs exact | bytes/vector float32 | bytes/vector int8 | p50 us/query float32 | p50 us/query int8 |")
    print("|---|---|---|---|---|---|")
    with threadpool_limits(1):
        for noise in DATASETS:
            db, q = data(n, dim, noise)
            truth = exact(db, q)
            row = []
            for dtype in ("float32", "int8"):
                index = VectorIndex(dim, "cosine", dtype=dtype)
                index.add(db)
                p50, found = time_queries(lambda r: index.search(r, K)[1], q[:100])
                row.append((index.nbytes / n, p50, recall(found, truth[:100])))
            label = "uniform" if noise is None else f"clusters, noise {noise}"
            print(f"| {label} | {row[1][2]:.3f} | {row[0][0]:.0f} | {row[1][0]:.0f} | {row[0][1]:.0f} | {row[1][1]:.0f} |",
                  flush=True)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "hnsw"
    (int8_main if mode == "int8" else main)(*(int(a) for a in sys.argv[2:]))
