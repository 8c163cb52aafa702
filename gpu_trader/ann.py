"""Approximate nearest-neighbour indexes behind ``VectorIndex(kind="hnsw" | "cagra")``.

* ``hnsw``: an hnswlib graph (chosen over FAISS HNSW and usearch by the measurements in
  ``docs/ann_comparison.md``: lowest query latency at equal recall, a build within 20 % of
  FAISS's, and native deletion and labels). The graph keeps its own float32 copy of the
  vectors, labelled by the user's ids; removed ids are marked deleted.
* ``cagra``: NVIDIA cuVS's CAGRA graph on the GPU, built from the stored vectors on the
  first search after a change (CAGRA graphs are built in bulk), results re-scored exactly.

Both expose ``add(vectors, ids)``, ``remove(ids)``, ``search(snapshot, queries, k) ->
(scores, ids)`` (scores in the public convention: similarity for ip/cosine, squared
distance for l2), ``dump() -> bytes`` and ``restore(bytes)``. The hnswlib graph is guarded
by a readers-writer lock: searches run concurrently (hnswlib releases the GIL), while an
add (which may resize the graph), a removal, a dump or a restore runs alone. CAGRA calls
are serialized (the graph may be rebuilt by a search).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Any, Iterator

import numpy as np

__all__ = ["HNSW_DEFAULTS", "make"]

# M (graph degree), construction beam, search beam: recall@10 >= 0.95 at 100K x 384 (docs/ann_comparison.md)
HNSW_DEFAULTS = {"M": 16, "ef_construction": 128, "ef_search": 64}
_MIN_CAPACITY = 1024
_PARALLEL_ADD = 1024  # vectors per add from which hnswlib builds with all cores


def make(kind: str, be, dim: int, metric: str, params: dict[str, int]):
    """The approximate index for ``kind`` (None for ``"exact"``); ImportError/ValueError say what is missing."""
    if kind == "exact":
        return None
    if kind == "hnsw":
        if be.name != "cpu":
            raise ValueError(f"kind='hnsw' runs on the cpu backend; on {be.name!r} use 'exact' or 'cagra'")
        return _Hnsw(dim, metric, params)
    if kind == "cagra":
        return _Cagra(be, metric)
    raise ValueError(f"kind must be 'exact', 'hnsw' or 'cagra', got {kind!r}")


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class _Hnsw:
    def __init__(self, dim: int, metric: str, params: dict[str, int]):
        try:
            import hnswlib
        except ImportError as exc:
            raise ImportError("kind='hnsw' needs hnswlib: pip install 'gpu-trader[ann]'") from exc
        self._hnswlib = hnswlib
        self._space = "l2" if metric == "l2" else "ip"
        self._dim = dim
        self._params = params
        self._lock = _ReadWriteLock()
        self._index = hnswlib.Index(space=self._space, dim=dim)
        self._index.init_index(max_elements=_MIN_CAPACITY, ef_construction=params["ef_construction"], M=params["M"])
        self._index.set_ef(params["ef_search"])

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        with self._lock.write():
            need = self._index.element_count + len(ids)
            cap = self._index.get_max_elements()
            if need > cap:
                self._index.resize_index(max(need, 2 * cap))
            # hnswlib's own threads (all cores) pay off for bulk inserts only
            self._index.add_items(vectors, ids, num_threads=-1 if len(ids) >= _PARALLEL_ADD else 1)

    def remove(self, ids: np.ndarray) -> None:
        with self._lock.write():
            for i in ids.tolist():
                self._index.mark_deleted(i)

    def search(self, snapshot, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.read():
            labels, dist = self._index.knn_query(queries, k=k, num_threads=1)
        scores = dist if self._space == "l2" else 1.0 - dist
        return scores.astype(np.float32), labels.astype(np.int64)

    def dump(self) -> bytes:
        with self._lock.write(), tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "hnsw.bin")
            self._index.save_index(path)
            with open(path, "rb") as fh:
                return fh.read()

    def restore(self, blob: bytes) -> None:
        with self._lock.write(), tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "hnsw.bin")
            with open(path, "wb") as fh:
                fh.write(blob)
            index = self._hnswlib.Index(space=self._space, dim=self._dim)
            index.load_index(path)
            index.set_ef(self._params["ef_search"])
            self._index = index


class _Cagra:
    def __init__(self, be, metric: str):
        if be.name != "cuda":
            raise ValueError(f"kind='cagra' runs on the cuda backend, not {be.name!r}")
        try:
            from cuvs.neighbors import cagra
        except ImportError as exc:
            raise ImportError("kind='cagra' needs NVIDIA cuVS: pip install cuvs-cu12 (or cuvs-cu13)") from exc
        self._cagra = cagra
        self._metric = "sqeuclidean" if metric == "l2" else "inner_product"
        self._lock = threading.Lock()
        self._built: tuple[Any, Any] | None = None  # (snapshot it was built from, index)

    def add(self, vectors, ids) -> None:
        """Nothing to do: the graph is rebuilt from the next search's snapshot."""

    def remove(self, ids) -> None:
        """Nothing to do: the graph is rebuilt from the next search's snapshot."""

    def search(self, snapshot, queries, k: int):
        import cupy as cp

        with self._lock:
            if self._built is None or self._built[0] is not snapshot:
                data = snapshot.dequantized()
                params = self._cagra.IndexParams(metric=self._metric)
                self._built = (snapshot, self._cagra.build(params, data))
            index = self._built[1]
            out = [cp.asarray(a) for a in self._cagra.search(self._cagra.SearchParams(), index, queries, k)]
        # (distances, neighbours); told apart by dtype, as cuVS's documentation shows both orders
        rows = next(a for a in out if a.dtype.kind in "iu").astype(cp.int64)
        return snapshot.rescore(queries, rows)

    def dump(self) -> bytes:
        return b""

    def restore(self, blob: bytes) -> None:
        """Nothing to do: the graph is rebuilt on the first search."""
