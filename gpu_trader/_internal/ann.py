"""Approximate nearest-neighbour indexes behind ``VectorIndex(kind="hnsw" | "cagra")``.

* ``hnsw``: FAISS's ``IndexHNSWFlat`` graph (chosen over hnswlib and usearch by the
  measurements in ``docs/ann_comparison.md``: the same recall at the same graph parameters,
  query latency and build time within 15 % of hnswlib's, and binary wheels for every
  CPython, which hnswlib lacks). The graph keeps its own float32 copy of the vectors, in
  insertion order; this adapter keeps each graph node's user id and whether it is live.
  Removed ids stay in the graph (FAISS cannot remove from an HNSW graph) and are filtered out
  of every search by an ``IDSelectorBitmap`` of the live nodes.
* ``cagra``: NVIDIA cuVS's CAGRA graph on the GPU, built from the stored vectors on the
  first search after a change (CAGRA graphs are built in bulk), results re-scored exactly.

A backend declares the kinds it can build in ``Backend.ann_kinds`` (``hnsw`` on ``cpu``,
``cagra`` on ``cuda``); :func:`make` refuses the others. Both expose ``add(vectors, ids)``,
``remove(ids)``, ``search(snapshot, queries, k) -> (scores, ids)`` (scores in the public
convention: similarity for ip/cosine, squared distance for l2, L1 distance for l1; ``RuntimeError`` when the
graph finds fewer than ``k`` live neighbours, which the caller answers exactly), ``dump() ->
bytes`` and ``restore(blob, ids, vectors)``. The HNSW graph is saved in this module's own
layout (:func:`check_hnsw_graph`), never through FAISS's reader: FAISS trusts a graph (a link
out of range crashes the process), so ``restore`` checks every size against the blob's
length before reading it, and every link, level, id and vector against the index's own
live ids and vectors, before FAISS sees any of it (``ValueError`` says what is wrong). The
graph is guarded by a readers-writer lock: searches run concurrently (FAISS releases the
GIL), while an add, a removal, a dump or a restore runs alone. CAGRA calls are serialized
(the graph may be rebuilt by a search).
"""
from __future__ import annotations

import contextlib
import struct
import threading
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from ..backend import registered_backends
from .validation import check_count

__all__ = ["APPROXIMATE_KINDS", "HNSW_DEFAULTS", "HNSW_LIMITS", "check_params", "make"]

# M (graph degree), construction beam, search beam: recall@10 >= 0.95 at 100K x 384 (docs/ann_comparison.md)
HNSW_DEFAULTS = {"M": 16, "ef_construction": 128, "ef_search": 64}
# Inclusive bounds, checked before FAISS allocates anything: M >= 2 (the level distribution
# divides by log M), at most 2048 (2 M links per node on level 0).
HNSW_LIMITS = {"M": (2, 2048), "ef_construction": (1, 1 << 20), "ef_search": (1, 1 << 20)}
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
            import faiss
        except ImportError as exc:
            raise ImportError("kind='hnsw' needs FAISS: pip install 'gpu-trader[ann]' (faiss-cpu)") from exc
        self._faiss = faiss
        self._metric = {"l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1}.get(metric, faiss.METRIC_INNER_PRODUCT)
        self._dim = dim
        self._params = params
        self._lock = _ReadWriteLock()
        self._index = self._new_index()
        # graph node -> user id and -> not removed, in buffers grown geometrically (an add copies
        # O(len(ids)) amortized, not the whole index); the first ``_n`` entries are in use
        self._labels_buf = np.empty(0, np.int64)
        self._live_buf = np.empty(0, bool)
        self._n = 0
        self._n_removed = 0
        self._search_params = None            # FAISS's search parameters, with the live filter if any node is removed

    def _new_index(self):
        index = self._faiss.IndexHNSWFlat(self._dim, self._params["M"], self._metric)
        index.hnsw.efConstruction = self._params["ef_construction"]
        index.hnsw.efSearch = self._params["ef_search"]
        return index

    @property
    def _labels(self) -> np.ndarray:
        return self._labels_buf[:self._n]

    @property
    def _live(self) -> np.ndarray:
        return self._live_buf[:self._n]

    def _set_nodes(self, labels: np.ndarray, live: np.ndarray) -> None:
        self._labels_buf, self._live_buf, self._n = labels, live, labels.size
        self._n_removed = int(labels.size - np.count_nonzero(live))

    def _append_nodes(self, ids: np.ndarray) -> None:
        n, m = self._n, len(ids)
        if n + m > self._labels_buf.size:
            capacity = max(n + m, 2 * self._labels_buf.size, 1024)
            labels, live = np.empty(capacity, np.int64), np.empty(capacity, bool)
            labels[:n], live[:n] = self._labels, self._live
            self._labels_buf, self._live_buf = labels, live
        self._labels_buf[n:n + m] = ids
        self._live_buf[n:n + m] = True
        self._n = n + m

    def _refresh_filter(self) -> None:
        """The search parameters: the live nodes as a bitmap selector once a node is removed."""
        faiss = self._faiss
        if not self._n_removed:
            self._search_params = None
            return
        bitmap = np.packbits(self._live, bitorder="little")
        selector = faiss.IDSelectorBitmap(self._n, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=self._params["ef_search"])
        params._keep = (bitmap, selector)  # FAISS holds raw pointers to both
        self._search_params = params

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        with self._lock.write():
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            self._append_nodes(np.asarray(ids, np.int64))
            if self._n_removed:  # the bitmap covers the new nodes too
                self._refresh_filter()

    def remove(self, ids: np.ndarray) -> None:
        with self._lock.write():
            live = self._live
            live &= ~np.isin(self._labels, ids)
            self._n_removed = int(self._n - np.count_nonzero(live))
            self._refresh_filter()

    def search(self, snapshot, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.read():
            scores, nodes = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k,
                                               params=self._search_params)
            if (nodes < 0).any():
                raise RuntimeError(f"the HNSW graph found fewer than k={k} live neighbours")
            ids = self._labels[nodes]
        return scores.astype(np.float32), ids

    def dump(self) -> bytes:
        """The graph in :func:`check_hnsw_graph`'s layout (every node, removed ones too)."""
        faiss = self._faiss
        with self._lock.write():
            hnsw, n = self._index.hnsw, self._index.ntotal
            vectors = faiss.vector_to_array(faiss.downcast_index(self._index.storage).codes)
            neighbors = faiss.vector_to_array(hnsw.neighbors).astype("<i4")
            head = _HEAD.pack(_MAGIC, n, self._dim, self._params["M"], hnsw.entry_point, hnsw.max_level,
                              neighbors.size)
            parts = (self._labels.astype("<i8"), self._live.astype(np.uint8), vectors.view(np.float32).astype("<f4"),
                     faiss.vector_to_array(hnsw.levels).astype("<i4"),
                     faiss.vector_to_array(hnsw.offsets).astype("<u8"), neighbors)
            return head + b"".join(p.tobytes() for p in parts)

    def restore(self, blob: bytes, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Load a graph saved by :meth:`dump` of an index holding exactly these live ``ids``
        (int64 ``(n,)``) and float32 ``vectors`` ``(n, dim)``; ``ValueError`` (nothing
        loaded) unless :func:`check_hnsw_graph` accepts it."""
        faiss = self._faiss
        graph = check_hnsw_graph(blob, self._dim, self._params, ids, vectors)
        index = self._new_index()
        index.storage.add(np.ascontiguousarray(graph.vectors, dtype=np.float32))
        for name in ("levels", "offsets", "neighbors"):
            faiss.copy_array_to_vector(getattr(graph, name), getattr(index.hnsw, name))
        index.hnsw.entry_point, index.hnsw.max_level = graph.entry_point, graph.max_level
        index.ntotal = graph.labels.size
        with self._lock.write():
            self._index = index
            self._set_nodes(graph.labels, graph.live)
            self._refresh_filter()


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


# -- the saved HNSW graph ---------------------------------------------------------------------
# little-endian: magic, node count n, dim, M, entry point, top level, link count; then labels
# int64 (n,), live uint8 (n,), vectors float32 (n, dim), levels int32 (n,) (levels each node is
# on, >= 1), offsets uint64 (n + 1,) (where each node's link lists start), links int32 (-1: none)
_MAGIC = b"GTHNSW01"
_HEAD = struct.Struct("<8sQIIiiQ")


class HnswGraph(NamedTuple):
    labels: np.ndarray     # int64 (n,): each node's id
    live: np.ndarray       # bool (n,): not removed
    vectors: np.ndarray    # float32 (n, dim)
    levels: np.ndarray     # int32 (n,)
    offsets: np.ndarray    # uint64 (n + 1,)
    neighbors: np.ndarray  # int32 (links,)
    entry_point: int
    max_level: int


def _links_per_level(m: int) -> np.ndarray:
    """FAISS's cumulative link-list sizes per level for degree ``m`` (2 m on level 0, m above)."""
    import faiss

    index = faiss.IndexHNSWFlat(1, m)  # kept alive while its vector is read
    return faiss.vector_to_array(index.hnsw.cum_nneighbor_per_level).astype(np.int64)


def check_hnsw_graph(blob: bytes, dim: int, params: Mapping[str, int], ids: np.ndarray,
                     vectors: np.ndarray) -> HnswGraph:
    """The graph :meth:`_Hnsw.dump` wrote, checked: ``dim`` and ``M`` as the index's; every
    section's size against the blob's length before it is read (no allocation beyond the
    blob's own size); live nodes exactly ``ids`` with exactly ``vectors`` (float32 ``(n, dim)``
    rows in the order of ``ids``), labels unique, vectors finite; each node's level count
    within what ``M`` allows and its link lists where the offsets say; every link -1 or to a
    node that reaches that level; the entry point on the top level. ``ValueError`` says what
    is wrong."""
    if len(blob) < _HEAD.size:
        raise ValueError("the HNSW graph is truncated")
    magic, n, g_dim, m, entry, max_level, n_links = _HEAD.unpack_from(blob)
    if magic != _MAGIC:
        raise ValueError("the HNSW graph is not in gpu-trader's layout")
    if (g_dim, m) != (dim, params["M"]):
        raise ValueError("the HNSW graph's layout does not match the index (dim, M)")
    sizes = (8 * n, n, 4 * n * dim, 4 * n, 8 * (n + 1), 4 * n_links)
    if _HEAD.size + sum(sizes) != len(blob):
        raise ValueError("the HNSW graph is truncated or has trailing bytes")
    starts = np.cumsum((_HEAD.size, *sizes[:-1])).tolist()
    labels, live, vecs, levels, offsets, links = (
        np.frombuffer(blob, dt, count, at) for dt, count, at in
        zip(("<i8", "u1", "<f4", "<i4", "<u8", "<i4"), (n, n, n * dim, n, n + 1, n_links), starts))
    if live.size and live.max() > 1:
        raise ValueError("the HNSW graph has a malformed live flag")
    vecs = vecs.reshape(n, dim)
    if not np.isfinite(vecs).all():
        raise ValueError("the HNSW graph holds NaN or infinite vectors")
    _check_live(labels, live.astype(bool), vecs, ids, vectors)
    _check_links(levels, offsets, links, _links_per_level(m))
    if n == 0:
        ok = entry == -1 and max_level == -1
    else:
        ok = 0 <= entry < n and max_level == levels[entry] - 1 == levels.max() - 1
    if not ok:
        raise ValueError("the HNSW graph's entry point or top level is out of range")
    return HnswGraph(labels.astype(np.int64), live.astype(bool), vecs, levels.astype(np.int32),
                     offsets.astype(np.uint64), links.astype(np.int32), entry, max_level)


def _check_live(labels: np.ndarray, live: np.ndarray, vecs: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Live labels unique (a removed id may come back as a new node: its old node stays in the
    graph, dead); the live nodes are exactly ``ids`` with exactly ``vectors``."""
    if np.unique(labels[live]).size != int(live.sum()):
        raise ValueError("the HNSW graph has duplicate live labels")
    by_label = np.argsort(labels[live], kind="stable")
    by_id = np.argsort(ids, kind="stable")
    if (by_label.size != ids.size or not np.array_equal(labels[live][by_label], ids[by_id])
            or not np.array_equal(vecs[live][by_label], vectors[by_id])):
        raise ValueError("the HNSW graph's live nodes are not the index's ids and vectors")


def _check_links(levels: np.ndarray, offsets: np.ndarray, links: np.ndarray, cum: np.ndarray) -> None:
    """Levels in ``[1, len(cum) - 1]``; offsets start at 0 and step by each node's list sizes up to
    the link count; every link -1 or a node on at least the level of the list holding it."""
    n = levels.size
    if n and (levels.min() < 1 or levels.max() > cum.size - 1):
        raise ValueError("the HNSW graph has a node on more levels than M allows")
    sizes = cum[levels]
    if offsets[0] != 0 or not np.array_equal(np.diff(offsets.astype(np.int64)), sizes) or offsets[-1] != links.size:
        raise ValueError("the HNSW graph's link lists are not where its offsets say")
    if links.size and (links.min() < -1 or links.max() >= n):
        raise ValueError("the HNSW graph links to a node it does not have")
    used = np.flatnonzero(links >= 0)
    owner = np.repeat(np.arange(n), sizes)[used]
    level = np.searchsorted(cum, used - offsets[owner].astype(np.int64), side="right") - 1
    if (levels[links[used]] <= level).any():
        raise ValueError("the HNSW graph links to a node above its level")
