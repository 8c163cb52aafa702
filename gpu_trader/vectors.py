"""Vector store with exact and approximate k-NN search, metadata filters and persistence.

``VectorIndex(dim, metric, kind, backend, dtype)`` keeps vectors on one backend's device
(NumPy on ``cpu``, CuPy on ``cuda``) with a user id and optional metadata per vector.

Scores (``search`` returns ``(scores, ids)``, best first, on the backend's device):

* ``metric="cosine"``: cosine similarity (vectors and queries are normalized on the way in);
* ``"ip"``: inner product; ``"l2"``: squared Euclidean distance (ascending), as FAISS's
  ``IndexFlatIP`` / ``IndexFlatL2`` report them.

Exact search (``kind="exact"``, the default on every backend) is a GEMM per database tile
plus a top-k selection (see :mod:`gpu_trader.vector_math`). ``kind="hnsw"`` (cpu backend)
answers unfiltered queries from an hnswlib graph; ``kind="cagra"`` (cuda backend) from a
cuVS CAGRA graph; both fall back to exact search for filtered queries (see :mod:`gpu_trader.ann`).
``dtype="int8"`` stores per-vector scalar-quantized codes (4x less memory; scores are
those of the dequantized vectors) for exact and CAGRA search; with ``kind="hnsw"`` it is a
``ValueError`` (hnswlib stores float32 vectors itself).

Rules: ``k`` must be an int in ``[1, len(index)]`` (``ValueError`` otherwise). With a
``filter`` fewer than ``k`` vectors may match: the rows are then padded with id ``-1``
and score ``-inf`` (``+inf`` for l2). Ids are non-negative int64 and unique; by default
they count up from 0. Vectors and queries holding NaN or inf, of the wrong dimension, or
(for cosine) all zero raise ``ValueError``.

Thread safety: any number of threads may ``search`` while other threads ``add`` or
``remove``. Writers take a lock; every search works on the immutable snapshot published
by the last completed write (an add writes only rows past the snapshot's end; a remove
builds new arrays), so a search never crashes, never sees a torn row and never returns an
id that no ``add`` has (at least) started to insert; it sees either all or none of a
concurrent add's vectors (approximate indexes may already see some of them).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import ann as _ann
from . import vector_io
from .backend import Backend, get_backend, select_backend
from .profiling import annotate, annotate_methods

__all__ = ["VectorIndex", "VectorIndexFileError", "normalize", "cosine"]

METRICS = ("cosine", "ip", "l2")
KINDS = ("exact", "hnsw", "cagra")
DTYPES = ("float32", "int8")
VectorIndexFileError = vector_io.VectorIndexFileError
_MIN_CAPACITY = 1024

Filter = Mapping[str, Any] | Callable[[Mapping[str, np.ndarray]], Any]


# -- free functions -----------------------------------------------------------------------
def _rows_2d(be: Backend, x, name: str):
    arr = be.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (dim,) or (n, dim), got {arr.shape}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr.reshape(-1, arr.shape[-1]), arr.ndim == 1


@annotate
def normalize(x, *, backend=None):
    """``x`` ``(dim,)`` or ``(n, dim)`` scaled to unit L2 norm along the last axis, same float
    dtype (integers become float64). Zero vectors stay zero; NaN propagates. Returns the
    backend's array type."""
    be = select_backend(x, backend)
    arr = be.asarray(x)
    ops = be.ops("vectors")
    if arr.ndim == 1 and arr.dtype.kind == "f":  # the one-vector latency path
        return ops.normalize_vector(arr)
    rows, _ = _rows_2d(be, arr, "x")
    out, _ = ops.normalize_rows(be.xp.ascontiguousarray(rows))
    return out.reshape(arr.shape)


@annotate
def cosine(a, b, *, backend=None):
    """Cosine similarity of ``a`` and ``b`` along the last axis (shapes ``(dim,)`` or ``(n, dim)``,
    equal). Returns a float for 1-D inputs, else an ``(n,)`` array (float64 on the cpu; the
    input's float dtype on cuda); NaN where a vector is all zero. Accumulates in float64 on the cpu."""
    be = select_backend(a, backend)
    xa, xb = be.asarray(a), be.asarray(b)
    ops = be.ops("vectors")
    if xa.ndim == 1 and xa.shape == xb.shape and xa.dtype == xb.dtype and xa.dtype.kind == "f":
        return ops.cosine_pair(xa, xb)  # the one-pair latency path
    ra, single = _rows_2d(be, xa, "a")
    rb, _ = _rows_2d(be, xb, "b")
    if ra.shape != rb.shape:
        raise ValueError(f"a has shape {ra.shape} but b has shape {rb.shape}; they must match")
    if ra.dtype != rb.dtype:
        ra, rb = ra.astype(np.float64), rb.astype(np.float64)
    xp = be.xp
    out = ops.cosine_rows(xp.ascontiguousarray(ra), xp.ascontiguousarray(rb))
    return float(out[0]) if single else out


# -- snapshot -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Snapshot:
    """An immutable view of the store: what one search works on."""

    n: int
    vectors: Any  # (n, dim) float32 or int8 codes
    scales: Any  # (n,) float32 for int8 storage, else None
    norms: Any  # (n,) float32 squared norms of the stored (dequantized) rows
    ids: Any  # (n,) int64 on the backend
    meta: Mapping[str, np.ndarray]  # host columns of length n
    l2: bool
    xp: Any  # the backend's array module

    def dequantized(self):
        """A new float32 ``(n, dim)`` array of the stored vectors (int8 codes times their scales)."""
        v = self.vectors.astype(np.float32)
        if self.scales is not None:
            v *= self.scales[:, None]
        return v

    def rescore(self, queries, rows):
        """Exact public scores of candidate ``rows`` (nq, k), sorted best first, and their ids."""
        xp = self.xp
        v = self.vectors[rows].astype(np.float32)
        s = xp.einsum("qkd,qd->qk", v, queries)
        if self.scales is not None:
            s *= self.scales[rows]
        if self.l2:
            s = xp.maximum((queries * queries).sum(axis=1)[:, None] - 2.0 * s + self.norms[rows], 0.0)
        order = xp.argsort(s if self.l2 else -s, axis=1)
        return xp.take_along_axis(s, order, axis=1), self.ids[xp.take_along_axis(rows, order, axis=1)]


# -- the index ----------------------------------------------------------------------------
@annotate_methods
class VectorIndex:
    """A k-NN store of ``dim``-dimensional vectors (see the module docstring).

    ``M``, ``ef_construction``, ``ef_search``: the HNSW graph's degree and beam widths
    (``kind="hnsw"`` only; defaults reach recall@10 >= 0.95 on clustered data at 100K x 384, see
    ``docs/ann_comparison.md``).
    """

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "exact", backend: str | None = None,
                 dtype: str | type = "float32", *, M: int = 16, ef_construction: int = 128, ef_search: int = 64):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        dtype_name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if dtype_name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if kind == "hnsw" and dtype_name == "int8":
            raise ValueError("dtype='int8' is for kind='exact' or 'cagra': hnswlib keeps its own float32 copy of "
                             "every vector, so int8 would save no memory and its scores would not be the codes'")
        params = {"M": M, "ef_construction": ef_construction, "ef_search": ef_search}
        for name, value in params.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.dim, self.metric, self.kind, self.dtype = int(dim), metric, kind, dtype_name
        self._be = get_backend(backend)
        self._ops = self._be.ops("vectors")
        self._xp = self._be.xp
        self._params = {k: int(v) for k, v in params.items()}
        self._ann = _ann.make(kind, self._be, self.dim, metric, self._params)
        self._lock = threading.Lock()
        self._row_of: dict[int, int] = {}
        self._next_id = 0
        xp = self._xp
        self._install(xp.empty((0, self.dim), np.int8 if dtype_name == "int8" else np.float32),
                      xp.empty(0, np.float32) if dtype_name == "int8" else None,
                      xp.empty(0, np.float32), xp.empty(0, np.int64), {})

    # -- properties ---------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._be.name

    def __len__(self) -> int:
        return self._snap.n

    def __repr__(self) -> str:
        return (f"VectorIndex(dim={self.dim}, metric={self.metric!r}, kind={self.kind!r}, "
                f"backend={self.backend!r}, dtype={self.dtype!r}, n={len(self)})")

    @property
    def nbytes(self) -> int:
        """Bytes of the stored vectors (and int8 scales), excluding ids, metadata and graphs."""
        s = self._snap
        return int(s.vectors.nbytes) + (0 if s.scales is None else int(s.scales.nbytes))

    def vectors(self):
        """``(ids, vectors)``: copies of the stored ids (int64 ``(n,)``) and vectors (float32
        ``(n, dim)``: normalized for cosine, dequantized for int8), in storage order, on the
        backend's device."""
        snap = self._snap
        return snap.ids.copy(), snap.dequantized()

    # -- writes -------------------------------------------------------------------------
    def add(self, vectors, ids=None, metadata=None) -> np.ndarray:
        """Store ``vectors`` ``(dim,)`` or ``(n, dim)``; return their ids (host int64 ``(n,)``).

        ``ids``: int or ``(n,)`` non-negative ints not already stored (default: the next free
        ones). ``metadata``: for one vector a mapping ``field -> value``; for a batch a
        sequence of ``n`` mappings, or a mapping ``field -> (n,) values`` (a scalar applies
        to all ``n``). Fields a vector lacks read as ``None``. Inputs are never modified.
        """
        x, single = _rows_2d(self._be, vectors, "vectors")
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {x.shape[1]}, the index has dim={self.dim}")
        xp = self._xp
        x = xp.ascontiguousarray(x, dtype=np.float32)
        if not bool(xp.isfinite(x).all()):
            raise ValueError("vectors contain NaN or infinite values")
        m = x.shape[0]
        if m == 0:
            return np.empty(0, np.int64)
        if self.metric == "cosine":
            x, lengths = self._ops.normalize_rows(x)
            if bool((lengths == 0).any()):
                raise ValueError("vectors contain an all-zero vector, which has no cosine similarity")
        if self.dtype == "int8":
            stored, scales = self._ops.quantize_int8(x)
        else:
            stored, scales = x, None
        norms = self._ops.row_sq_norms(stored, scales)
        columns = _metadata_columns(metadata, m, single)
        with self._lock:
            snap = self._snap
            new_ids = self._new_ids(ids, m)
            meta = _extend_columns(snap.meta, snap.n, columns, m)
            n = snap.n
            self._reserve(n + m)
            self._vec[n:n + m] = stored
            if scales is not None:
                self._scales[n:n + m] = scales
            self._norms[n:n + m] = norms
            self._ids[n:n + m] = self._be.asarray(new_ids)
            if self._ann is not None:
                self._ann.add(x, new_ids)
            self._row_of.update(zip(new_ids.tolist(), range(n, n + m)))
            self._next_id = max(self._next_id, int(new_ids.max()) + 1) if m else self._next_id
            self._publish(n + m, meta)
        return new_ids

    def remove(self, ids) -> int:
        """Delete the vectors with these ids (int or sequence); return how many were removed.

        ``KeyError`` names ids that are not stored (nothing is removed then). Costs a copy
        of the store (searches running meanwhile keep their snapshot): batch removals.
        """
        rm = np.unique(np.atleast_1d(np.asarray(ids)))
        if rm.size and rm.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {rm.dtype}")
        with self._lock:
            missing = [i for i in rm.tolist() if i not in self._row_of]
            if missing:
                raise KeyError(f"ids not in the index: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
            if not rm.size:
                return 0
            snap = self._snap
            keep = np.ones(snap.n, bool)
            keep[[self._row_of[i] for i in rm.tolist()]] = False
            kd = self._be.asarray(keep)
            ids_left = snap.ids[kd]
            self._install(snap.vectors[kd], None if snap.scales is None else snap.scales[kd], snap.norms[kd],
                          ids_left, {f: c[keep] for f, c in snap.meta.items()})
            if self._ann is not None:
                self._ann.remove(rm)
        return int(rm.size)

    def _new_ids(self, ids, m: int) -> np.ndarray:
        if ids is None:
            return np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        arr = np.atleast_1d(np.asarray(ids))
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.shape != (m,):
            raise ValueError(f"ids has shape {arr.shape}, expected ({m},) for {m} vectors")
        arr = arr.astype(np.int64)
        if m and int(arr.min()) < 0:
            raise ValueError("ids must be non-negative (-1 marks a missing result)")
        if np.unique(arr).size != m:
            raise ValueError("ids must be unique")
        taken = [i for i in arr.tolist() if i in self._row_of]
        if taken:
            raise ValueError(f"ids already stored: {taken[:10]}")
        return arr

    def _reserve(self, n: int) -> None:
        """Make the buffers hold ``n`` rows; growing allocates new buffers (old snapshots keep theirs)."""
        if n <= self._vec.shape[0] and getattr(self._vec.flags, "writeable", True):
            return
        xp, cur = self._xp, self._snap.n
        cap = max(_MIN_CAPACITY, n, 2 * self._vec.shape[0])

        def grow(buf, shape):
            new = xp.empty(shape, buf.dtype)
            new[:cur] = buf[:cur]
            return new

        self._vec = grow(self._vec, (cap, self.dim))
        if self._scales is not None:
            self._scales = grow(self._scales, (cap,))
        self._norms = grow(self._norms, (cap,))
        self._ids = grow(self._ids, (cap,))

    def _install(self, vec, scales, norms, ids, meta) -> None:
        """Make these full arrays the buffers, rebuild the id map and publish them."""
        self._vec, self._scales, self._norms, self._ids = vec, scales, norms, ids
        self._row_of = dict(zip(self._be.to_numpy(ids).tolist(), range(int(ids.shape[0]))))
        self._publish(int(ids.shape[0]), meta)

    def _publish(self, n: int, meta) -> None:
        self._snap = _Snapshot(
            n, self._vec[:n], None if self._scales is None else self._scales[:n], self._norms[:n],
            self._ids[:n], MappingProxyType(meta), self.metric == "l2", self._xp,
        )

    # -- search -------------------------------------------------------------------------
    def search(self, queries, k: int = 10, filter: Filter | None = None):
        """The ``k`` stored vectors most similar to each query, best first.

        ``queries``: ``(dim,)`` or ``(nq, dim)``. ``filter``: a mapping ``field -> value`` (or
        a list/tuple/set of accepted values), all fields must match; or a callable that gets
        the metadata columns (``field -> (len(index),)`` host arrays) and returns a boolean
        mask. Returns ``(scores, ids)`` of shape ``(k,)`` per query (``(nq, k)`` for a batch)
        on the backend's device: scores float32 (see the module docstring), ids int64.
        """
        snap = self._snap
        q, single = self._queries(queries)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        rows = None
        if filter is None:
            if k > snap.n:
                raise ValueError(f"k={k} exceeds the {snap.n} vectors stored")
            k_eff = k
        else:
            hits = _filter_rows(snap.meta, snap.n, filter)
            k_eff = min(k, hits.size)
            rows = self._be.asarray(hits)
        if k_eff == 0:
            scores, ids = self._padded(q.shape[0], k, None, None)
        elif self._ann is not None and rows is None:
            scores, ids = self._approximate(snap, q, k)
        else:
            scores, ids = self._exact(snap, q, k_eff, rows)
            if k_eff < k:
                scores, ids = self._padded(q.shape[0], k, scores, ids)
        return (scores[0], ids[0]) if single else (scores, ids)

    def _queries(self, queries):
        q, single = _rows_2d(self._be, queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index has dim={self.dim}")
        xp = self._xp
        q = xp.ascontiguousarray(q, dtype=np.float32)
        if not bool(xp.isfinite(q).all()):
            raise ValueError("queries contain NaN or infinite values")
        if self.metric == "cosine":
            q, lengths = self._ops.normalize_rows(q)
            if bool((lengths == 0).any()):
                raise ValueError("queries contain an all-zero vector, which has no cosine similarity")
        return q, single

    def _exact(self, snap: _Snapshot, q, k: int, rows):
        s, r = self._ops.search(snap.vectors, snap.scales, snap.norms, q, k, snap.l2, rows)
        if snap.l2:
            s = self._xp.maximum(self._xp.einsum("ij,ij->i", q, q)[:, None] - s, 0.0)
        return s, snap.ids[r]

    def _approximate(self, snap: _Snapshot, q, k: int):
        try:
            return self._ann.search(snap, q, k)
        except RuntimeError:  # hnswlib found fewer than k live neighbours (many deletions): answer exactly
            return self._exact(snap, q, k, None)

    def _padded(self, nq: int, k: int, scores, ids):
        xp = self._xp
        out_s = xp.full((nq, k), xp.inf if self.metric == "l2" else -xp.inf, np.float32)
        out_i = xp.full((nq, k), -1, np.int64)
        if scores is not None:
            out_s[:, :scores.shape[1]] = scores
            out_i[:, :ids.shape[1]] = ids
        return out_s, out_i

    # -- persistence --------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the index to ``path`` atomically (see :mod:`gpu_trader.vector_io`).

        Metadata values must be JSON-serializable (str, int, float, bool, None).
        """
        with self._lock:
            snap, to_np = self._snap, self._be.to_numpy
            arrays = {"vectors": to_np(snap.vectors), "norms": to_np(snap.norms), "ids": to_np(snap.ids)}
            if snap.scales is not None:
                arrays["scales"] = to_np(snap.scales)
            try:
                meta = json.dumps({f: c.tolist() for f, c in snap.meta.items()}).encode()
            except TypeError as exc:
                raise TypeError(f"metadata must be JSON-serializable to save: {exc}") from exc
            config = {
                "dim": self.dim, "metric": self.metric, "kind": self.kind, "dtype": self.dtype,
                "params": self._params, "count": snap.n, "next_id": self._next_id,
                "meta_dtypes": {f: c.dtype.str for f, c in snap.meta.items()},
            }
            blob = self._ann.dump() if self._ann is not None else b""
            vector_io.write(path, config, arrays, {"metadata": meta, "ann": blob})

    @classmethod
    def load(cls, path, *, backend: str | None = None, mmap: bool = False) -> "VectorIndex":
        """Read an index written by :meth:`save`; ``VectorIndexFileError`` if it is not valid.

        ``mmap=True`` (cpu backend): the vectors stay in the file, memory-mapped read-only, so
        a store larger than RAM can be searched (pages are read as tiles are scanned); the
        first ``add`` after loading copies them into memory.
        """
        config, sec = vector_io.read(path, mmap=mmap)
        try:
            index = cls(config["dim"], config["metric"], config["kind"], backend, config["dtype"], **config["params"])
            n = int(config["count"])
            expect = {"vectors": (n, index.dim), "norms": (n,), "ids": (n,)}
            if index.dtype == "int8":
                expect["scales"] = (n,)
            for name, shape in expect.items():
                if sec[name].shape != shape:
                    raise VectorIndexFileError(f"{path}: section {name!r} has shape {sec[name].shape}, expected {shape}")
            columns = json.loads(sec["metadata"])
            meta = {f: np.array(v, dtype=np.dtype(config["meta_dtypes"][f])) for f, v in columns.items()}
        except (KeyError, TypeError) as exc:
            raise VectorIndexFileError(f"{path}: inconsistent header: {exc}") from exc
        be = index._be
        index._install(be.asarray(sec["vectors"]), None if index.dtype != "int8" else be.asarray(sec["scales"]),
                       be.asarray(sec["norms"]), be.asarray(sec["ids"]), meta)
        index._next_id = int(config["next_id"])
        if index._ann is not None:
            if sec["ann"]:
                index._ann.restore(sec["ann"])
            elif n:
                index._ann.add(index._snap.dequantized(), be.to_numpy(index._snap.ids))
        return index


# -- metadata -----------------------------------------------------------------------------
def _metadata_columns(metadata, m: int, single: bool) -> dict[str, np.ndarray]:
    """Normalize ``add``'s metadata argument to ``field -> (m,) array``."""
    if metadata is None:
        return {}
    if single:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata for one vector must be a mapping, got {type(metadata).__name__}")
        rows: Sequence[Mapping] | None = [metadata]
        metadata = None
    elif isinstance(metadata, Mapping):
        rows = None
    elif isinstance(metadata, Sequence) and not isinstance(metadata, (str, bytes)):
        if len(metadata) != m:
            raise ValueError(f"metadata has {len(metadata)} entries for {m} vectors")
        if not all(isinstance(r, Mapping) for r in metadata):
            raise TypeError("metadata entries must be mappings (field -> value)")
        rows = metadata
    else:
        raise TypeError(f"metadata must be a mapping or a sequence of mappings, got {type(metadata).__name__}")
    if rows is not None:
        fields = dict.fromkeys(f for r in rows for f in r)
        metadata = {f: [r.get(f) for r in rows] for f in fields}
    out = {}
    for field, values in metadata.items():
        if not isinstance(field, str):
            raise TypeError(f"metadata field names must be str, got {field!r}")
        arr = np.full(m, values) if np.ndim(values) == 0 else _column(values)
        if arr.shape != (m,):
            raise ValueError(f"metadata field {field!r} has shape {arr.shape}, expected ({m},)")
        out[field] = arr
    return out


def _column(values) -> np.ndarray:
    """A 1-D column: typed when all values are str, all bool or all real numbers, else object."""
    if isinstance(values, np.ndarray):
        return values if values.dtype.kind in "biufUO" else values.astype(object)
    values = list(values)
    kinds = {"s" if isinstance(v, str) else "b" if isinstance(v, (bool, np.bool_))
             else "n" if isinstance(v, (int, float, np.integer, np.floating)) else "o" for v in values}
    if len(kinds) == 1 and "o" not in kinds:
        return np.asarray(values)
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


def _extend_columns(old: Mapping[str, np.ndarray], n: int, new: dict[str, np.ndarray], m: int) -> dict:
    """The metadata columns after appending ``m`` rows (new arrays; ``old`` is not touched)."""
    out = {}
    for field in dict.fromkeys([*old, *new]):
        a = old.get(field)
        b = new.get(field)
        if a is None and n == 0:
            out[field] = b
            continue
        a = np.full(n, None, dtype=object) if a is None else a
        b = np.full(m, None, dtype=object) if b is None else b
        same_family = (a.dtype.kind in "biuf" and b.dtype.kind in "biuf") or a.dtype.kind == b.dtype.kind
        out[field] = np.concatenate([a, b]) if same_family else np.concatenate([a.astype(object), b.astype(object)])
    return out


def _filter_rows(meta: Mapping[str, np.ndarray], n: int, flt) -> np.ndarray:
    """Row indices (int64) whose metadata passes ``flt`` (see :meth:`VectorIndex.search`)."""
    if callable(flt):
        mask = np.asarray(flt(meta))
        if mask.dtype != bool or mask.shape != (n,):
            raise ValueError(f"filter callable must return a boolean mask of shape ({n},), got "
                             f"{mask.dtype} {mask.shape}")
    elif isinstance(flt, Mapping):
        mask = np.ones(n, bool)
        for field, want in flt.items():
            col = meta.get(field)
            if col is None:
                raise ValueError(f"filter field {field!r} is not in the metadata (fields: {sorted(meta)})")
            values = list(want) if isinstance(want, (list, tuple, set, frozenset, np.ndarray)) else [want]
            hit = np.zeros(n, bool)
            for v in values:
                eq = col == v
                if isinstance(eq, np.ndarray):
                    hit |= eq.astype(bool)
            mask &= hit
    else:
        raise TypeError(f"filter must be a mapping or a callable, got {type(flt).__name__}")
    return np.flatnonzero(mask).astype(np.int64)
