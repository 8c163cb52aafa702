"""FAISS IndexHNSWFlat vs hnswlib, interleaved (the second comparison in docs/ann_comparison.md).

Run: ``.venv/bin/pip install hnswlib && .venv/bin/python benches/ann_faiss_vs_hnswlib.py [n]``
(hnswlib builds from source: it is not a project dependency). Same data, parameters and
recall oracle as ``ann_comparison.py``; the two builds alternate (two each, 2 threads), and
each query is timed on FAISS then hnswlib in turn (1 thread, 3 passes over 500 queries), so
both see the same machine load; the last row searches with 1 % of the nodes removed (FAISS:
an ``IDSelectorBitmap`` of the live nodes, as ``VectorIndex`` does; hnswlib: ``mark_deleted``).
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_comparison import EF_CONSTRUCTION, K, M, data, exact, recall  # noqa: E402
import faiss  # noqa: E402
import hnswlib  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
dim = 384
for noise in (0.6, 1.0):
    db, q = data(n, dim, noise)
    truth = exact(db, q)
    builds = {"faiss": [], "hnswlib": []}
    for rep in range(2):
        with threadpool_limits(2):
            faiss.omp_set_num_threads(2)
            fi = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT); fi.hnsw.efConstruction = EF_CONSTRUCTION
            t0 = time.perf_counter(); fi.add(db); builds["faiss"].append(time.perf_counter() - t0)
            hi = hnswlib.Index(space="ip", dim=dim); hi.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=M)
            hi.set_num_threads(2)
            t0 = time.perf_counter(); hi.add_items(db, np.arange(n)); builds["hnswlib"].append(time.perf_counter() - t0)
    faiss.omp_set_num_threads(1)
    # deletions: 1% removed, searched with an IDSelector (FAISS) / mark_deleted (hnswlib)
    dead = np.random.default_rng(1).choice(n, n // 100, replace=False)
    print(f"\n### noise {noise}, {n} x {dim}: build s (2 runs, alternating) faiss {builds['faiss']} hnswlib {builds['hnswlib']}")
    print("| efSearch | faiss p50 us | hnswlib p50 us | ratio f/h | faiss recall | hnswlib recall |")
    for ef in (16, 32, 64, 128):
        fi.hnsw.efSearch = ef; hi.set_ef(ef)
        tf, th, of, oh = [], [], [], []
        for rep in range(3):
            for row in q:
                r = row[None]
                t0 = time.perf_counter_ns(); a = fi.search(r, K)[1][0]; tf.append(time.perf_counter_ns() - t0)
                t0 = time.perf_counter_ns(); b = hi.knn_query(r, K, num_threads=1)[0][0]; th.append(time.perf_counter_ns() - t0)
                if rep == 0: of.append(a); oh.append(b)
        pf, ph = np.median(tf) / 1e3, np.median(th) / 1e3
        print(f"| {ef} | {pf:.0f} | {ph:.0f} | {pf/ph:.2f} | {recall(np.array(of), truth):.3f} | {recall(np.array(oh), truth):.3f} |", flush=True)
    # with 1 % deleted
    keep = np.ones(n, bool); keep[dead] = False
    bitmap = np.packbits(keep, bitorder="little")
    sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
    params = faiss.SearchParametersHNSW(sel=sel, efSearch=64)
    for i in dead: hi.mark_deleted(int(i))
    hi.set_ef(64)
    s = q @ db[keep].T; alive = np.flatnonzero(keep); truth_d = alive[np.argsort(-s, axis=1)[:, :K]]
    tf, th, of, oh = [], [], [], []
    for row in q:
        r = row[None]
        t0 = time.perf_counter_ns(); a = fi.search(r, K, params=params)[1][0]; tf.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns(); b = hi.knn_query(r, K, num_threads=1)[0][0]; th.append(time.perf_counter_ns() - t0)
        of.append(a); oh.append(b)
    pf, ph = np.median(tf) / 1e3, np.median(th) / 1e3
    print(f"| 64, 1% deleted | {pf:.0f} | {ph:.0f} | {pf/ph:.2f} | {recall(np.array(of), truth_d):.3f} | {recall(np.array(oh), truth_d):.3f} |", flush=True)
