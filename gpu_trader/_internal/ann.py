"""Approximate nearest-neighbour indexes behind ``VectorIndex(kind="hnsw" | "cagra")``.

* ``hnsw``: an hnswlib graph (chosen over FAISS HNSW and usearch by the measurements in
  ``docs/ann_comparison.md``: lowest query latency at equal recall, a build within 20 % of
  FAISS's, and native deletion and labels). The graph keeps its own float32 copy of the
  vectors, labelled by the user's ids; removed ids are marked deleted.
* ``cagra``: NVIDIA cuVS's CAGRA graph on the GPU, built from the stored vectors on the
  first search after a change (CAGRA graphs are built in bulk), results re-scored exactly.

A backend declares the kinds it can build in ``Backend.ann_kinds`` (``hnsw`` on ``cpu``,
``cagra`` on ``cuda``); :func:`make` refuses the others. Both expose ``add(vectors, ids)``,
``remove(ids)``, ``search(snapshot, queries, k) -> (scores, ids)`` (scores in the public
convention: similarity for ip/cosine, squared distance for l2), ``dump() -> bytes`` and
``restore(blob, ids, vectors)``. hnswlib trusts the
graph it loads (a link out of range crashes the process), so ``restore`` first checks the
blob against hnswlib's layout and the index's own live ids and vectors (``ValueError`` says
what is wrong). The hnswlib graph is guarded
by a readers-writer lock: searches run concurrently (hnswlib releases the GIL), while an
add (which may resize the graph), a removal, a dump or a restore runs alone. CAGRA calls
are serialized (the graph may be rebuilt by a search).
"""
from __future__ import annotations

import contextlib
import math
import os
import struct
import tempfile
import threading
from typing import Any, Iterator, Mapping

import numpy as np

from ..backend import registered_backends
from . import vector_xp
from .validation import check_count

__all__ = ["APPROXIMATE_KINDS", "HNSW_DEFAULTS", "HNSW_LIMITS", "check_params", "make"]

# M (graph degree), construction beam, search beam: recall@10 >= 0.95 at 100K x 384 (docs/ann_comparison.md)
HNSW_DEFAULTS = {"M": 16, "ef_construction": 128, "ef_search": 64}
# Inclusive bounds, checked before hnswlib allocates anything: M >= 2 (hnswlib's level
# distribution divides by log M), 2 M links per element fit hnswlib's 16-bit count.
HNSW_LIMITS = {"M": (2, 2048), "ef_construction": (1, 1 << 20), "ef_search": (1, 1 << 20)}
_PARALLEL_ADD = 1024  # vectors per add from which hnswlib builds with all cores
APPROXIMATE_KINDS = ("hnsw", "cagra")  # what a backend's ``ann_kinds`` may hold


def check_params(params: Mapping[str, Any]) -> dict[str, int]:
    """The HNSW parameters ``M``, ``ef_construction``, ``ef_search`` as ints within
    :data:`HNSW_LIMITS` (NumPy integers accepted, bool not): ``TypeError`` for a non-integer,
    ``ValueError`` out of range or for a missing or unknown name, naming the parameter."""
    if set(params) != set(HNSW_LIMITS):
        raise ValueError(f"HNSW parameters must be exactly {sorted(HNSW_LIMITS)}, got {sorted(map(str, params))}")
    return {name: check_count(params[name], name, low, high) for name, (low, high) in HNSW_LIMITS.items()}


def make(kind: str, be, dim: int, metric: str, params: dict[str, int]):
    """The approximate index for ``kind`` on the backend ``be`` (None for ``"exact"``).

    ``ValueError`` for an unknown kind, or one ``be`` cannot build (not in its
    ``ann_kinds``: the message names the backends that can and the kinds ``be`` can);
    ``ImportError`` when the kind's library is missing."""
    if kind == "exact":
        return None
    if kind not in APPROXIMATE_KINDS:
        raise ValueError(f"kind must be 'exact', 'hnsw' or 'cagra', got {kind!r}")
    if kind not in be.ann_kinds:
        hosts = " or ".join(other.name for other in registered_backends() if kind in other.ann_kinds)
        usable = " or ".join(repr(k) for k in ("exact", *sorted(be.ann_kinds)))
        raise ValueError(f"kind={kind!r} runs on the {hosts} backend; on {be.name!r} use {usable}")
    if kind == "hnsw":
        return _Hnsw(dim, metric, params)
    return _Cagra(metric)


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
        element_bytes = 4 * dim + 8 * params["M"] + 12  # level-0 record: links, vector, label
        self._index.init_index(max_elements=vector_xp.initial_rows(element_bytes),
                               ef_construction=params["ef_construction"], M=params["M"])
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

    def restore(self, blob: bytes, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Load a graph saved by :meth:`dump` of an index holding exactly these live ``ids``
        (int64 ``(n,)``) and float32 ``vectors`` ``(n, dim)``; ``ValueError`` (nothing
        loaded) unless :func:`check_hnsw_graph` accepts it."""
        count = check_hnsw_graph(blob, self._dim, self._params, ids, vectors)
        with self._lock.write(), tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "hnsw.bin")
            with open(path, "wb") as fh:
                fh.write(blob)
            index = self._hnswlib.Index(space=self._space, dim=self._dim)
            index.load_index(path, max_elements=max(count, 1))  # not the file's capacity
            index.set_ef(self._params["ef_search"])
            self._index = index


class _Cagra:
    def __init__(self, metric: str):
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

    def restore(self, blob: bytes, ids, vectors) -> None:
        """Nothing to load (the graph is rebuilt on the first search); a non-empty ``blob`` is a ``ValueError``."""
        if blob:
            raise ValueError("a CAGRA index saves no graph, but the file holds one")


# -- hnswlib's file layout (hnswlib 0.8 HierarchicalNSW::saveIndex, native byte order) ------
# offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset,
# offsetData (size_t each), maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M
# (size_t), mult (double), ef_construction (size_t); then cur_element_count level-0
# records; then per element a uint32 byte count and its upper-level link lists.
_HNSW_HEAD = struct.Struct("=QQQQQQiIQQQdQ")
_NO_ENTRY = 0xFFFFFFFF


def _level0_dtype(dim: int, m: int) -> np.dtype:
    """One level-0 record: link count (16 bits), delete mark, a spare byte, 2 M links, the vector, the label."""
    return np.dtype([("count", "=u2"), ("deleted", "u1"), ("spare", "u1"), ("links", "=u4", (2 * m,)),
                     ("vector", "=f4", (dim,)), ("label", "=u8")])


def check_hnsw_graph(blob: bytes, dim: int, params: Mapping[str, int], ids: np.ndarray, vectors: np.ndarray) -> int:
    """Check that ``blob`` is an hnswlib graph of ``dim``-dimensional vectors built with
    ``params`` whose live (not deleted) elements are exactly ``ids`` with exactly ``vectors``
    (float32 ``(n, dim)`` rows in the order of ``ids``), and whose every link, level and
    entry point is in range. Returns the number of elements (live and deleted); ``ValueError``
    says what is wrong. Reads only ``blob`` (no allocation beyond a few of its sizes)."""
    if len(blob) < _HNSW_HEAD.size:
        raise ValueError("the HNSW graph is truncated")
    (offset0, _capacity, count, record, label_at, vector_at, max_level, entry,
     max_m, max_m0, m, mult, ef_construction) = _HNSW_HEAD.unpack_from(blob)
    links0 = 4 + 8 * params["M"]
    layout = (offset0, record, label_at, vector_at, max_m, max_m0, m, ef_construction)
    if layout != (0, links0 + 4 * dim + 8, links0 + 4 * dim, links0, params["M"], 2 * params["M"], params["M"],
                  max(params["ef_construction"], params["M"])) or not math.isclose(mult, 1.0 / math.log(params["M"])):
        raise ValueError("the HNSW graph's layout does not match the index (dim, M, ef_construction)")
    level0_end = _HNSW_HEAD.size + count * record
    if level0_end > len(blob) or (len(blob) - level0_end) % 4:
        raise ValueError("the HNSW graph is truncated")
    level0 = np.frombuffer(blob, _level0_dtype(dim, m), count, _HNSW_HEAD.size)
    _check_level0(level0, count, m)
    _check_live(level0, ids, vectors)
    words = np.frombuffer(blob, "=u4", offset=level0_end)
    levels, starts = _upper_levels(words, count, m)
    if count == 0:
        ok = max_level == -1 and entry == _NO_ENTRY
    else:
        ok = entry < count and max_level == levels[entry] == levels.max()
    if not ok:
        raise ValueError("the HNSW graph's entry point or top level is out of range")
    _check_upper_links(words, levels, starts, m)
    return count


def _check_level0(level0: np.ndarray, count: int, m: int) -> None:
    """Link counts within 2 M, flags 0 or deleted, links to existing elements, finite vectors."""
    if ((level0["count"] > 2 * m) | (level0["deleted"] > 1) | (level0["spare"] != 0)).any():
        raise ValueError("the HNSW graph has a malformed level-0 record")
    used = np.arange(2 * m) < level0["count"][:, None]
    if (level0["links"][used] >= count).any():
        raise ValueError("the HNSW graph links to an element it does not have")
    if not np.isfinite(level0["vector"]).all():
        raise ValueError("the HNSW graph holds NaN or infinite vectors")


def _check_live(level0: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Labels unique; the live elements are exactly ``ids`` with exactly ``vectors``."""
    labels = level0["label"]
    if np.unique(labels).size != labels.size:
        raise ValueError("the HNSW graph has duplicate labels")
    live = level0["deleted"] == 0
    by_label = np.argsort(labels[live], kind="stable")
    by_id = np.argsort(ids, kind="stable")
    if (by_label.size != ids.size or not np.array_equal(labels[live][by_label], ids[by_id].astype(np.uint64))
            or not np.array_equal(level0["vector"][live][by_label], vectors[by_id])):
        raise ValueError("the HNSW graph's live elements are not the index's ids and vectors")


def _upper_levels(words: np.ndarray, count: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each element's number of upper levels and where (in words) its link lists start."""
    per_level = m + 1  # a count word and M links
    levels = np.zeros(count, np.int64)
    starts = np.zeros(count, np.int64)
    view = memoryview(words)  # Python-level indexing of a memoryview is several times faster than NumPy's
    pos, end = 0, len(view)
    for i in range(count):
        if pos >= end:
            raise ValueError("the HNSW graph is truncated")
        nbytes = view[pos]
        pos += 1
        if nbytes:
            if nbytes % (4 * per_level):
                raise ValueError("the HNSW graph has a malformed upper-level record")
            levels[i] = nbytes // (4 * per_level)
            starts[i] = pos
            pos += nbytes // 4
    if pos != end:
        raise ValueError("the HNSW graph is truncated or has trailing bytes")
    return levels, starts


def _check_upper_links(words: np.ndarray, levels: np.ndarray, starts: np.ndarray, m: int) -> None:
    """Every upper-level list holds at most M links, to elements that reach that level."""
    owners = np.flatnonzero(levels)
    if not owners.size:
        return
    n_lists = levels[owners]
    first = np.repeat(np.cumsum(n_lists) - n_lists, n_lists)
    level = np.arange(int(n_lists.sum())) - first + 1  # 1 .. L for each owner
    at = np.repeat(starts[owners], n_lists) + (level - 1) * (m + 1)
    lists = words[at[:, None] + np.arange(m + 1)]
    if (lists[:, 0] > m).any():
        raise ValueError("the HNSW graph has an upper-level list longer than M")
    used = np.arange(m) < lists[:, :1]
    targets = lists[:, 1:][used]
    if (targets >= levels.size).any() or (levels[targets] < np.repeat(level, lists[:, 0])).any():
        raise ValueError("the HNSW graph links to an element above its level")
