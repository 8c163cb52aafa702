"""Vector store with exact and approximate k-NN search, metadata filters and persistence.

``VectorIndex(dim, metric, kind, backend, dtype)`` keeps vectors on one backend's device
(NumPy on ``cpu``, CuPy on ``cuda``) with a user id and optional metadata per vector.

Scores (``search`` returns ``(scores, ids)``, best first, on the backend's device):

* ``metric="cosine"``: cosine similarity (vectors and queries are normalized on the way in);
* ``"ip"``: inner product; ``"l2"``: squared Euclidean distance (ascending), as FAISS's
  ``IndexFlatIP`` / ``IndexFlatL2`` report them;
* ``"l1"``: Manhattan distance ``sum_j |q_j - x_j|`` (ascending), as FAISS's
  ``IndexFlat(dim, METRIC_L1)`` reports it (summed in float32; exact and hnsw search,
  ``kind="cagra"`` refuses it: cuVS's CAGRA has no L1).

Exact search (``kind="exact"``, the default on every backend) is a GEMM per database tile
(L1: blocked absolute differences) plus a top-k selection (see :mod:`gpu_trader._internal.vector_xp`).
``kind="hnsw"`` (cpu backend)
answers unfiltered queries from a FAISS HNSW graph; ``kind="cagra"`` (cuda backend) from a
cuVS CAGRA graph; both fall back to exact search for filtered queries (see :mod:`gpu_trader._internal.ann`).
``dtype="int8"`` stores per-vector scalar-quantized codes (4x less memory; scores are
those of the dequantized vectors) for exact and CAGRA search; with ``kind="hnsw"`` it is a
``ValueError`` (the graph stores float32 vectors itself). Compressed storage, for exact
search only (any backend; :data:`COMPRESSION` gives the ratio to float32):
``dtype="binary"`` keeps one sign bit per dimension plus a float32 scale ``mean |x_i|`` per
vector (32x at large ``dim``; queries stay float32, so scores are asymmetric: the query
against ``scale * signs``); ``"pq16"`` / ``"pq32"`` keep product-quantization codes, one byte per
4 / 8 dimensions (``dim`` must be a multiple), 256 centroids per sub-space trained by k-means
on the first non-empty ``add`` (which needs at least 256 vectors; the codebooks then stay
fixed); scores are those of the decoded vectors, as FAISS's ``IndexPQ`` computes them.
recall@10 per level: ``docs/ann_comparison.md``.

Rules (``TypeError`` for an argument of the wrong kind, ``ValueError`` out of range, each
naming the argument; NumPy integers are ints, ``bool`` is not): ``dim`` is an int in
``[1, MAX_DIM]``; ``M``, ``ef_construction``, ``ef_search`` within
:data:`gpu_trader._internal.ann.HNSW_LIMITS`. ``k`` is an int in ``[1, len(index)]``; with a
``filter`` fewer than ``k`` vectors may match, the rows are then padded with id ``-1`` and
score ``-inf`` (``+inf`` for l2 and l1), and ``k`` may exceed ``len(index)`` up to
``MAX_PADDED_K``. Ids are unique ints in ``[0, MAX_ID]``; by default they count up from 0.
Vectors and queries are real arrays of any dtype and byte order (read-only ones too;
inputs are never written to; masked arrays and bool are a ``TypeError``); holding NaN or
inf, a vector whose squared norm overflows float32 (ip, l2, l1), of the wrong dimension, or
(for cosine) all zero they raise ``ValueError``.

Metadata: each field is a column whose type is fixed by its first non-``None`` value:
``bool``, ``int`` (int64), ``float`` (float64), ``str``, or ``object`` (any other value:
kept and filterable by equality, but ``save`` refuses it). NumPy scalars are stored as the
Python scalars they equal. A later value of another type is a ``TypeError`` naming the field,
except that an int is stored in a float column as the float it equals (``|value| <= 2**53``).
``None`` (also: a field a vector lacks, a masked entry of a masked array, ``pd.NA`` of a
pandas extension column) fits every column.

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
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ._internal import ann
from ._internal import vector_io
from ._internal import vector_xp
from .backend import MAX_ELEMENTS, Backend, as_host_array, backend_input, get_backend, select_backend
from .profiling import annotate, annotate_methods
from ._internal.validation import check_count, check_flag, is_integer

__all__ = ["VectorIndex", "VectorIndexFileError", "normalize", "cosine", "COMPRESSION"]

METRICS = ("cosine", "ip", "l2", "l1")
KINDS = ("exact", "hnsw", "cagra")
DTYPES = ("float32", "int8", "binary", "pq16", "pq32")
COMPRESSION = {"float32": 1, "int8": 4, "pq16": 16, "binary": 32, "pq32": 32}
"""Bytes of float32 storage per byte of each storage dtype (binary: plus 4 bytes of scale a vector)."""
PQ_DIMS = {"pq16": 4, "pq32": 8}  # dimensions per one-byte PQ code
PQ_SEED = 0  # seed of the codebooks' k-means
MAX_DIM = 1 << 16
MAX_ID = (1 << 63) - 2  # the next default id (MAX_ID + 1) still fits int64
MAX_PADDED_K = 4096  # the largest k a filtered search pads to beyond the vectors stored
VectorIndexFileError = vector_io.VectorIndexFileError

Filter = Mapping[str, Any] | Callable[[Mapping[str, np.ndarray]], Any]

_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


# -- array arguments ----------------------------------------------------------------------
def _real_array(be: Backend, x, name: str):
    """``x`` on ``be`` as a native-byte-order float32 (from float32 or narrower floats) or
    float64 (from any other real dtype) array. Host inputs pass
    :func:`gpu_trader.backend.host_input` first (``TypeError`` naming ``name`` for a masked
    array or a non-array; ``ValueError`` past :data:`gpu_trader.backend.MAX_ELEMENTS`
    values); ``TypeError`` naming ``name`` for a non-real dtype (bool, complex, str, object)."""
    dt = getattr(x, "dtype", None)
    if (dt is _FLOAT64 or dt is _FLOAT32) and type(x) is np.ndarray and be.host_memory and x.flags.aligned \
            and x.size <= MAX_ELEMENTS:
        return x  # the common case, kept cheap (the one-vector latency paths)
    arr = backend_input(be, x, name)
    dt = arr.dtype
    if dt.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {dt}")
    work = _FLOAT32 if dt.kind == "f" and dt.itemsize <= 4 else _FLOAT64
    return arr if dt == work else arr.astype(work)


def _as_rows(arr, name: str):
    """``arr`` ``(dim,)`` or ``(n, dim)`` as ``(n, dim)`` rows (a view) and whether it was 1-D."""
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (dim,) or (n, dim), got {arr.shape}")
    return (arr[None] if arr.ndim == 1 else arr), arr.ndim == 1


@annotate
def normalize(x, *, backend=None):
    """``x`` ``(dim,)`` or ``(n, dim)`` scaled to unit L2 norm along the last axis. float32
    stays float32, float64 float64; float16 becomes float32, other reals (integers,
    longdouble) float64; any byte order. Zero vectors stay zero; NaN propagates. Returns
    the backend's array type; ``x`` is not modified."""
    be = select_backend(x, backend)
    arr = _real_array(be, x, "x")
    ops = be.ops("vectors")
    if arr.ndim == 1:  # the one-vector latency path
        return ops.normalize_vector(arr)
    rows, _ = _as_rows(arr, "x")
    out, _ = ops.normalize_rows(be.xp.ascontiguousarray(rows))
    return out.reshape(arr.shape)


@annotate
def cosine(a, b, *, backend=None):
    """Cosine similarity of ``a`` and ``b`` along the last axis (real arrays of equal shapes
    ``(dim,)`` or ``(n, dim)``, any dtypes as :func:`normalize` takes them). Returns a float
    for 1-D inputs, else an ``(n,)`` array (float64 on the cpu; the inputs' float dtype on
    cuda); NaN where a vector is all zero. Accumulates in float64 on the cpu."""
    be = select_backend(a, backend)
    xa, xb = _real_array(be, a, "a"), _real_array(be, b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a has shape {xa.shape} but b has shape {xb.shape}; they must match")
    ops = be.ops("vectors")
    if xa.ndim == 1 and xa.dtype == xb.dtype:
        return ops.cosine_pair(xa, xb)  # the one-pair latency path
    ra, single = _as_rows(xa, "a")
    rb, _ = _as_rows(xb, "b")
    if ra.dtype != rb.dtype:
        ra, rb = ra.astype(np.float64), rb.astype(np.float64)
    xp = be.xp
    out = ops.cosine_rows(xp.ascontiguousarray(ra), xp.ascontiguousarray(rb))
    return float(out[0]) if single else out


# -- settings -----------------------------------------------------------------------------
def _choice(value, allowed: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {allowed}, got {type(value).__name__} {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return str(value)


def _dtype_name(dtype) -> str:
    if isinstance(dtype, str):
        return _choice(dtype, DTYPES, "dtype")
    try:
        name = np.dtype(dtype).name
    except TypeError as exc:
        raise TypeError(f"dtype must be one of {DTYPES}, got {dtype!r}") from exc
    return _choice(name, DTYPES, "dtype")


def _check_settings(dim, metric, kind, dtype, params: Mapping[str, Any]):
    """``(dim, metric, kind, dtype name, params)`` checked and normalized (see the module docstring)."""
    dim = check_count(dim, "dim", 1, MAX_DIM)
    metric, kind, dtype_name = _choice(metric, METRICS, "metric"), _choice(kind, KINDS, "kind"), _dtype_name(dtype)
    if kind == "hnsw" and dtype_name != "float32":
        raise ValueError(f"dtype={dtype_name!r} is for kind='exact'{' or cagra' if dtype_name == 'int8' else ''}: "
                         f"the HNSW graph keeps its own float32 copy of every vector, so {dtype_name} would save no "
                         "memory and its scores would not be the codes'")
    if kind == "cagra" and dtype_name in ("binary", *PQ_DIMS):
        raise ValueError(f"dtype={dtype_name!r} is for kind='exact': the CAGRA graph takes float32 or int8 vectors")
    if dtype_name in PQ_DIMS and dim % PQ_DIMS[dtype_name]:
        raise ValueError(f"dtype={dtype_name!r} codes {PQ_DIMS[dtype_name]} dimensions per byte: dim must be a "
                         f"multiple of {PQ_DIMS[dtype_name]}, got {dim}")
    if kind == "cagra" and metric == "l1":
        raise ValueError("metric='l1' is for kind='exact' or 'hnsw': cuVS's CAGRA graph has no L1 distance")
    return dim, metric, kind, dtype_name, ann.check_params(params)


# -- ids ----------------------------------------------------------------------------------
def _id_list(ids, to_host) -> list[int]:
    """``ids`` (an int, or a 1-D sequence or array of ints; NumPy integers are ints, bool is
    not) as Python ints; ``to_host`` brings a device array to NumPy."""
    if is_integer(ids):
        return [int(ids)]
    if isinstance(ids, (list, tuple, range)):
        for v in ids:
            if not is_integer(v):
                raise TypeError(f"ids must be integers, got {type(v).__name__} {v!r}")
        return [int(v) for v in ids]
    arr = as_host_array(to_host(ids), "ids")
    if arr.ndim > 1:
        raise ValueError(f"ids must be an int or a 1-D sequence of ints, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    return arr.ravel().tolist()


def _check_new_ids(ids: np.ndarray) -> None:
    """Ids to store (int64): each in ``[0, MAX_ID]`` and unique."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > MAX_ID):
        raise ValueError(f"ids must be non-negative and at most {MAX_ID} (-1 marks a missing result)")
    if np.unique(ids).size != ids.size:
        raise ValueError("ids must be unique")


# -- snapshot -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Snapshot:
    """An immutable view of the store: what one search works on."""

    n: int
    vectors: Any  # (n, dim) float32 or int8 codes; (n, width) uint8 binary or PQ codes
    scales: Any  # (n,) float32 for int8 and binary storage, else None
    norms: Any  # (n,) float32 squared norms of the stored (dequantized) rows
    ids: Any  # (n,) int64 on the backend
    meta: Mapping[str, np.ndarray]  # read-only host columns of length n
    l2: bool
    xp: Any  # the backend's array module
    l1: bool = False
    codebooks: Any = None  # (n_sub, 256, dim / n_sub) float32 for PQ storage, else None
    dim: int = 0

    def dequantized(self):
        """A new float32 ``(n, dim)`` array of the stored vectors (decoded, times their scales)."""
        v = vector_xp.dequantize(self.xp, self.vectors, self.scales, self.codebooks, self.dim)
        return v.copy() if v is self.vectors else v

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
    (``kind="hnsw"`` only, checked for every kind; defaults reach recall@10 >= 0.95 on
    clustered data at 100K x 384, see ``docs/ann_comparison.md``).
    """

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "exact", backend: str | None = None,
                 dtype: str | type = "float32", *, M: int = 16, ef_construction: int = 128, ef_search: int = 64):
        params = {"M": M, "ef_construction": ef_construction, "ef_search": ef_search}
        self.dim, self.metric, self.kind, self.dtype, self._params = _check_settings(dim, metric, kind, dtype, params)
        self._be = get_backend(backend)
        self._ops = self._be.ops("vectors")
        self._xp = self._be.xp
        self._ann = ann.make(self.kind, self._be, self.dim, self.metric, self._params)
        self._lock = threading.Lock()
        self._row_of: dict[int, int] = {}
        self._next_id = 0
        self._meta_types: dict[str, str | None] = {}
        self._codebooks = None  # PQ storage: trained by the first non-empty add
        xp, scaled = self._xp, self.dtype in ("int8", "binary")
        width = {"binary": -(-self.dim // 8), **{d: self.dim // p for d, p in PQ_DIMS.items()}}.get(
            self.dtype, self.dim)  # bytes of codes (float32/int8: elements) per vector
        code_dtype = {"float32": np.float32, "int8": np.int8}.get(self.dtype, np.uint8)
        self._install(xp.empty((0, width), code_dtype),
                      xp.empty(0, np.float32) if scaled else None, xp.empty(0, np.float32), xp.empty(0, np.int64), {})

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
        """Bytes of the stored vectors (and int8/binary scales, PQ codebooks), excluding ids,
        metadata and graphs."""
        s = self._snap
        return int(s.vectors.nbytes) + sum(int(a.nbytes) for a in (s.scales, s.codebooks) if a is not None)

    def vectors(self):
        """``(ids, vectors)``: copies of the stored ids (int64 ``(n,)``) and vectors (float32
        ``(n, dim)``: normalized for cosine, decoded for compressed storage), in storage order, on the
        backend's device."""
        snap = self._snap
        return snap.ids.copy(), snap.dequantized()

    # -- writes -------------------------------------------------------------------------
    def add(self, vectors, ids=None, metadata=None) -> np.ndarray:
        """Store ``vectors`` ``(dim,)`` or ``(n, dim)``; return their ids (host int64 ``(n,)``).

        ``ids``: int or ``(n,)`` ints in ``[0, MAX_ID]`` not already stored (default: the next
        free ones). ``metadata``: for one vector a mapping ``field -> value``; for a batch a
        sequence of ``n`` mappings, or a mapping ``field -> (n,) values`` (a scalar applies
        to all ``n``). Fields a vector lacks read as ``None``; column types as the module
        docstring says. Inputs are never modified; a refused call changes nothing.
        """
        x, single = _as_rows(_real_array(self._be, vectors, "vectors"), "vectors")
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
        pq = self.dtype in PQ_DIMS
        stored, scales, norms = (None, None, None) if pq else self._encode(x, None)
        columns = _metadata_columns(metadata, m, single)
        with self._lock:
            snap = self._snap
            new_ids = self._new_ids(ids, m)
            meta, types = _extend_columns(snap.meta, self._meta_types, snap.n, columns, m)
            if pq:  # under the lock: the first add trains the codebooks every later add uses
                books = self._codebooks
                if books is None:
                    if m < vector_xp.PQ_CENTROIDS:
                        raise ValueError(f"the first add to a dtype={self.dtype!r} index trains its codebooks and "
                                         f"needs at least {vector_xp.PQ_CENTROIDS} vectors, got {m}")
                    books = self._ops.pq_train(x, self.dim // PQ_DIMS[self.dtype], PQ_SEED)
                stored, scales, norms = self._encode(x, books)
                self._codebooks = books
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
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
            self._meta_types = types
            self._publish(n + m, meta)
        return new_ids

    def remove(self, ids) -> int:
        """Delete the vectors with these ids (an int or a 1-D sequence/array of ints); return
        how many were removed.

        ``KeyError`` names ids that are not stored (nothing is removed then). Costs a copy
        of the store (searches running meanwhile keep their snapshot): batch removals.
        """
        rm = sorted(set(_id_list(ids, self._be.to_numpy)))
        with self._lock:
            missing = [i for i in rm if i not in self._row_of]
            if missing:
                raise KeyError(f"ids not in the index: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
            if not rm:
                return 0
            snap = self._snap
            keep = np.ones(snap.n, bool)
            keep[[self._row_of[i] for i in rm]] = False
            kd = self._be.asarray(keep)
            self._install(snap.vectors[kd], None if snap.scales is None else snap.scales[kd], snap.norms[kd],
                          snap.ids[kd], {f: c[keep] for f, c in snap.meta.items()})
            if self._ann is not None:
                self._ann.remove(np.array(rm, np.int64))
        return len(rm)

    def _encode(self, x, codebooks):
        """``(stored rows, scales or None, squared norms of the decoded rows)`` of float32 rows
        ``x`` in this index's storage dtype (``codebooks``: PQ's); ``ValueError`` if a decoded
        row's squared norm overflows float32."""
        if self.dtype == "int8":
            stored, scales = self._ops.quantize_int8(x)
        elif self.dtype == "binary":
            stored, scales = self._ops.encode_binary(x)
        elif codebooks is not None:
            stored, scales = self._ops.pq_encode(x, codebooks), None
        else:
            stored, scales = x, None
        with np.errstate(over="ignore"):  # an overflow is the error below, not a warning
            norms = self._ops.row_sq_norms(stored, scales, codebooks, self.dim)
        if not bool(self._xp.isfinite(norms).all()):
            raise ValueError("vectors hold a vector whose squared norm overflows float32")
        return stored, scales, norms

    def _new_ids(self, ids, m: int) -> np.ndarray:
        if ids is None:
            if self._next_id + m - 1 > MAX_ID:
                raise ValueError(f"the default ids are used up (the next would exceed {MAX_ID}); pass ids=")
            return np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        values = _id_list(ids, self._be.to_numpy)
        if len(values) != m:
            raise ValueError(f"ids has {len(values)} values, expected {m} for {m} vectors")
        if min(values) < 0 or max(values) > MAX_ID:  # before the int64 conversion, which would overflow
            raise ValueError(f"ids must be non-negative and at most {MAX_ID} (-1 marks a missing result)")
        arr = np.array(values, np.int64)
        _check_new_ids(arr)
        taken = [i for i in values if i in self._row_of]
        if taken:
            raise ValueError(f"ids already stored: {taken[:10]}")
        return arr

    def _reserve(self, n: int) -> None:
        """Make the buffers hold ``n`` rows; growing allocates new buffers (old snapshots keep theirs)."""
        if n <= self._vec.shape[0] and getattr(self._vec.flags, "writeable", True):
            return
        xp, cur = self._xp, self._snap.n
        width = self._vec.shape[1]
        cap = max(vector_xp.initial_rows(width * self._vec.dtype.itemsize), n, 2 * self._vec.shape[0])

        def grow(buf, shape):
            new = xp.empty(shape, buf.dtype)
            new[:cur] = buf[:cur]
            return new

        self._vec = grow(self._vec, (cap, width))
        if self._scales is not None:
            self._scales = grow(self._scales, (cap,))
        self._norms = grow(self._norms, (cap,))
        self._ids = grow(self._ids, (cap,))

    def _install(self, vec, scales, norms, ids, meta) -> None:
        """Make these full arrays the buffers, rebuild the id map and publish them."""
        self._vec, self._scales, self._norms, self._ids = vec, scales, norms, ids
        self._row_of = dict(zip(self._be.to_numpy(ids).tolist(), range(int(ids.shape[0]))))
        self._publish(int(ids.shape[0]), meta)

    def _publish(self, n: int, meta: dict[str, np.ndarray]) -> None:
        for column in meta.values():  # a filter callable gets the columns: it must not be able to edit them
            column.flags.writeable = False
        self._snap = _Snapshot(
            n, self._vec[:n], None if self._scales is None else self._scales[:n], self._norms[:n],
            self._ids[:n], MappingProxyType(meta), self.metric == "l2", self._xp, self.metric == "l1",
            self._codebooks, self.dim,
        )

    # -- search -------------------------------------------------------------------------
    def search(self, queries, k: int = 10, filter: Filter | None = None):
        """The ``k`` stored vectors most similar to each query, best first.

        ``queries``: ``(dim,)`` or ``(nq, dim)``. ``k``: an int in ``[1, len(index)]`` (with a
        filter up to ``max(len(index), MAX_PADDED_K)``). ``filter``: a mapping ``field ->
        value`` (or a list/tuple/set of accepted values), all fields must match; or a
        callable that gets the metadata columns (``field -> (len(index),)`` read-only host
        arrays) and returns a boolean mask. Returns ``(scores, ids)`` of shape ``(k,)`` per
        query (``(nq, k)`` for a batch) on the backend's device: scores float32 (see the
        module docstring), ids int64.
        """
        snap = self._snap
        q, single, q_sq = self._queries(queries)
        k = check_count(k, "k", 1)
        rows = None
        if filter is None:
            if k > snap.n:
                raise ValueError(f"k={k} exceeds the {snap.n} vectors stored")
            k_eff = k
        else:
            if k > max(snap.n, MAX_PADDED_K):
                raise ValueError(f"k={k} exceeds the {snap.n} vectors stored and {MAX_PADDED_K}, "
                                 "the most a filtered search pads to")
            hits = _filter_rows(snap.meta, snap.n, filter)
            k_eff = min(k, hits.size)
            rows = self._be.asarray(hits)
        if k_eff == 0:
            scores, ids = self._padded(q.shape[0], k, None, None)
        elif self._ann is not None and rows is None:
            scores, ids = self._approximate(snap, q, k, q_sq)
        else:
            scores, ids = self._exact(snap, q, k_eff, rows, q_sq)
            if k_eff < k:
                scores, ids = self._padded(q.shape[0], k, scores, ids)
        return (scores[0], ids[0]) if single else (scores, ids)

    def _queries(self, queries):
        """``(queries as float32 (nq, dim) rows, normalized for cosine; whether one query was
        given; their squared norms (nq,) for ip, l2 and l1, None for cosine)``."""
        q, single = _as_rows(_real_array(self._be, queries, "queries"), "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index has dim={self.dim}")
        xp = self._xp
        q = xp.ascontiguousarray(q, dtype=np.float32)
        if self.metric == "cosine":
            if not bool(xp.isfinite(q).all()):
                raise ValueError("queries contain NaN or infinite values")
            q, lengths = self._ops.normalize_rows(q)
            if bool((lengths == 0).any()):
                raise ValueError("queries contain an all-zero vector, which has no cosine similarity")
            return q, single, None
        q_sq = xp.einsum("ij,ij->i", q, q)  # einsum sets no floating-point flags: an overflow is silent here
        if not bool(xp.isfinite(q_sq).all()):  # one check for NaN, inf and overflow on the valid path
            if not bool(xp.isfinite(q).all()):
                raise ValueError("queries contain NaN or infinite values")
            raise ValueError("queries hold a vector whose squared norm overflows float32")
        return q, single, q_sq

    def _exact(self, snap: _Snapshot, q, k: int, rows, q_sq):
        s, r = self._ops.search(snap.vectors, snap.scales, snap.norms, q, k, snap.l2, rows, snap.l1, snap.codebooks)
        if snap.l2:
            s = self._xp.maximum(q_sq[:, None] - s, 0.0)
        elif snap.l1:
            s = -s
        return s, snap.ids[r]

    def _approximate(self, snap: _Snapshot, q, k: int, q_sq):
        try:
            return self._ann.search(snap, q, k)
        except RuntimeError:  # the HNSW graph found fewer than k live neighbours (many deletions): answer exactly
            return self._exact(snap, q, k, None, q_sq)

    def _padded(self, nq: int, k: int, scores, ids):
        xp = self._xp
        out_s = xp.full((nq, k), xp.inf if self.metric in ("l2", "l1") else -xp.inf, np.float32)
        out_i = xp.full((nq, k), -1, np.int64)
        if scores is not None:
            out_s[:, :scores.shape[1]] = scores
            out_i[:, :ids.shape[1]] = ids
        return out_s, out_i

    # -- persistence --------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the index to ``path`` atomically (see :mod:`gpu_trader._internal.vector_io`): an empty
        index too; through a symbolic link, the file it names; keeping the permission bits
        of the file it replaces.

        ``TypeError`` (nothing written) if a metadata column holds values other than bool,
        int, float, str and None (an ``object`` column), which JSON cannot store.
        """
        with self._lock:
            snap, to_np = self._snap, self._be.to_numpy
            arrays = {"vectors": to_np(snap.vectors), "norms": to_np(snap.norms), "ids": to_np(snap.ids)}
            if snap.scales is not None:
                arrays["scales"] = to_np(snap.scales)
            if snap.codebooks is not None:
                arrays["codebooks"] = to_np(snap.codebooks)
            meta = _metadata_json(snap.meta, self._meta_types)
            config = {
                "dim": self.dim, "metric": self.metric, "kind": self.kind, "dtype": self.dtype,
                "params": self._params, "count": snap.n, "next_id": self._next_id,
                "meta_types": dict(self._meta_types),
                "meta_dtypes": {f: c.dtype.str for f, c in snap.meta.items()},  # for readers before meta_types
            }
            blob = self._ann.dump() if self._ann is not None else b""
            vector_io.write(path, config, arrays, {"metadata": meta, "ann": blob})

    @classmethod
    def load(cls, path, *, backend: str | None = None, mmap: bool = False) -> "VectorIndex":
        """Read an index written by :meth:`save`.

        ``VectorIndexFileError`` if the file is not a valid index: besides what
        :func:`gpu_trader._internal.vector_io.read` checks, every config field's type and range, the
        sections' names, dtypes and shapes, ids (unique, in ``[0, MAX_ID]``, below
        ``next_id``), vectors (finite; unit length for cosine, within the int8 rounding),
        int8 scales (finite, positive), binary scales (finite, not negative), PQ codebooks
        (finite; present once vectors are stored), the metadata columns (one per field, ``count``
        JSON scalars of one type each) and the HNSW graph (see :mod:`gpu_trader._internal.ann`).
        Squared norms are recomputed from the vectors. ``OSError`` if the path cannot be
        opened; ``ValueError``/``ImportError`` if ``backend`` cannot hold this index.

        ``mmap=True`` (cpu backend): the vectors stay in the file, memory-mapped read-only, so
        a store larger than RAM can be searched (pages are read as tiles are scanned); the
        first ``add`` after loading copies them into memory.
        """
        be = get_backend(backend)
        config, sections = vector_io.read(path, mmap=check_flag(mmap, "mmap"))
        try:
            (dim, metric, kind, dtype, params), n, next_id = _file_settings(config)
            index = cls(dim, metric, kind, be.name, dtype, **params)
            vectors, scales, ids = _file_arrays(sections, index, n, next_id)
            index._codebooks = sections.get("codebooks")
            norms = _checked_norms(vectors, scales, index.metric, index._codebooks, index.dim)
            meta, types = _file_metadata(sections["metadata"], config.get("meta_types"), n)
            if index._ann is not None and sections["ann"]:
                index._ann.restore(sections["ann"], ids, vectors)
            elif sections["ann"]:
                raise ValueError("an exact index saves no graph, but the file holds one")
        except (KeyError, TypeError, ValueError, RecursionError) as exc:  # RecursionError: deeply nested JSON
            raise VectorIndexFileError(f"{path}: {type(exc).__name__}: {exc}") from exc
        index._install(be.asarray(vectors), None if scales is None else be.asarray(scales), be.asarray(norms),
                       be.asarray(ids), meta)
        index._next_id, index._meta_types = next_id, types
        if index._ann is not None and not sections["ann"] and n:
            index._ann.add(index._snap.dequantized(), ids)
        return index


# -- loading ------------------------------------------------------------------------------
_ROW_BLOCK_BYTES = 16 << 20  # rows checked at once when loading (bounded temporaries for memmaps)


def _file_settings(config: dict[str, Any]):
    """``((dim, metric, kind, dtype, params), count, next_id)`` of a file's config, checked."""
    if not isinstance(config.get("params"), dict) or not isinstance(config.get("dtype"), str):
        raise TypeError("params must be an object and dtype a string")
    settings = _check_settings(config["dim"], config["metric"], config["kind"], config["dtype"], config["params"])
    n = check_count(config["count"], "count", 0)
    next_id = check_count(config["next_id"], "next_id", 0, MAX_ID + 1)
    return settings, n, next_id


def _file_arrays(sections: dict[str, Any], index: VectorIndex, n: int, next_id: int):
    """``(vectors, scales or None, ids)`` of a file: the expected sections with the expected
    dtypes and shapes, ids unique in ``[0, next_id)``, int8 scales finite and positive (binary:
    not negative), PQ codebooks finite (required once ``n > 0``)."""
    empty = index._snap.vectors
    expect = {"vectors": (empty.dtype.str, (n, empty.shape[1])), "norms": ("<f4", (n,)),
              "ids": ("<i8", (n,)), "metadata": (vector_io.BYTES, None), "ann": (vector_io.BYTES, None)}
    if index.dtype in ("int8", "binary"):
        expect["scales"] = ("<f4", (n,))
    if index.dtype in PQ_DIMS and (n or "codebooks" in sections):
        d = PQ_DIMS[index.dtype]
        expect["codebooks"] = ("<f4", (index.dim // d, vector_xp.PQ_CENTROIDS, d))
    if set(sections) != set(expect):
        raise ValueError(f"the file has sections {sorted(sections)}, expected {sorted(expect)}")
    for name, (dtype, shape) in expect.items():
        data = sections[name]
        got = (vector_io.BYTES, None) if isinstance(data, bytes) else (data.dtype.str, data.shape)
        if got != (dtype, shape):
            raise ValueError(f"section {name!r} is {got[0]} {got[1]}, expected {dtype} {shape}")
    ids = sections["ids"]
    _check_new_ids(ids)
    if n and int(ids.max()) >= next_id:
        raise ValueError(f"next_id {next_id} is not above every stored id (the largest is {int(ids.max())})")
    scales = sections.get("scales")
    if scales is not None:
        binary = index.dtype == "binary"  # a zero vector has scale 0
        if not (np.isfinite(scales).all() and ((scales >= 0) if binary else (scales > 0)).all()):
            raise ValueError(f"the {index.dtype} scales must be finite and {'not negative' if binary else 'positive'}")
    books = sections.get("codebooks")
    if books is not None and not np.isfinite(books).all():
        raise ValueError("the PQ codebooks must be finite")
    return sections["vectors"], scales, ids


def _row_blocks(n: int, row_bytes: int) -> Iterator[slice]:
    step = max(1, _ROW_BLOCK_BYTES // max(1, row_bytes))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _checked_norms(vectors: np.ndarray, scales, metric: str, codebooks, dim: int) -> np.ndarray:
    """Squared norms (float32 ``(n,)``) of the stored (dequantized) rows, computed in blocks;
    ``ValueError`` for a non-finite vector or squared norm, or for cosine a row not of unit
    length (within ``sqrt(dim) * scale / 2`` for int8 codes, the rounding bound, plus 1e-4; binary
    and PQ rows, whose decoded length is not kept, are not checked for it)."""
    n = vectors.shape[0]
    norms = np.empty(n, np.float32)
    for rows in _row_blocks(n, 4 * dim):
        block = vectors[rows]
        if block.dtype == np.float32 and not np.isfinite(block).all():
            raise ValueError("the vectors contain NaN or infinite values")
        with np.errstate(over="ignore"):
            norms[rows] = vector_xp.row_sq_norms(np, block, None if scales is None else scales[rows], codebooks, dim)
    if not np.isfinite(norms).all():
        raise ValueError("the vectors hold one whose squared norm overflows float32")
    if metric == "cosine" and vectors.dtype != np.uint8:
        slack = 1e-4 + (0.0 if scales is None else np.sqrt(dim) * scales.astype(np.float64) / 2)
        if not (np.abs(np.sqrt(norms.astype(np.float64)) - 1.0) <= slack).all():
            raise ValueError("a cosine index holds a vector that is not of unit length")
    return norms


def _file_metadata(blob: bytes, declared, n: int) -> tuple[dict[str, np.ndarray], dict[str, str | None]]:
    """The metadata columns of a file and their types (``declared``: the file's ``meta_types``;
    files written before it existed have their types inferred, mixed ones as ``object``)."""
    columns = json.loads(blob)
    if not isinstance(columns, dict):
        raise TypeError("the metadata section is not a JSON object")
    if declared is not None and (not isinstance(declared, dict) or set(declared) != set(columns)):
        raise ValueError("meta_types does not list the metadata fields")
    out, types = {}, {}
    for field, values in columns.items():
        if not isinstance(values, list) or len(values) != n:
            raise ValueError(f"metadata field {field!r} is not a list of {n} values")
        if not all(isinstance(v, _SAVABLE) for v in values):
            raise TypeError(f"metadata field {field!r} holds a value that is not a JSON scalar")
        want = None if declared is None else declared[field]
        if want is not None and want not in _COLUMN_TYPES:
            raise ValueError(f"metadata field {field!r} has type {want!r}, not one of {_COLUMN_TYPES}")
        if want == "object":
            out[field], types[field] = _object_array(values), want
            continue
        column, kind = _batch_column(field, values, lenient=declared is None)
        out[field], types[field] = _reconcile(field, want, column, kind)
    return out, types


# -- metadata -----------------------------------------------------------------------------
_COLUMN_TYPES = ("bool", "int", "float", "str", "object")
_ARRAY_TYPES = {"b": "bool", "i": "int", "u": "int", "f": "float", "U": "str"}  # NumPy kind -> column type
_DTYPE_OF = {"bool": np.dtype(bool), "int": np.dtype(np.int64), "float": np.dtype(np.float64)}
_TO_PYTHON = {"bool": bool, "int": int, "float": float, "str": str}
_SAVABLE = (type(None), bool, int, float, str)  # what JSON stores and gives back as it was
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_EXACT_INT = 1 << 53  # ints of at most this magnitude are exactly float64s
_PADDED_STR_MIN = 64  # str columns wider than this stay fixed-width only while padding costs <= 4x


def _metadata_columns(metadata, m: int, single: bool) -> dict[str, tuple[np.ndarray, str | None]]:
    """``add``'s metadata argument as ``field -> (column (m,), its type)`` (see :func:`_batch_column`)."""
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
        values = _column_values(field, values, m)
        out[str(field)] = _batch_column(field, values)
    return out


def _column_values(field: str, values, m: int):
    """The ``m`` values of one field: a list/tuple/range or 1-D array as given (length ``m``),
    a pandas object's values, any other value repeated ``m`` times. Missing entries (masked
    ones of a masked array, ``pd.NA``/``NaT`` of a pandas extension column) become None."""
    if isinstance(values, np.ma.MaskedArray):
        values = np.where(np.ma.getmaskarray(values), None, values.data.astype(object))
    elif hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        plain = isinstance(values.dtype, np.dtype)  # NumPy-backed: NaN stays a float value
        values = values.to_numpy() if plain else values.to_numpy(dtype=object, na_value=None)
    if isinstance(values, np.ndarray) and values.ndim == 0:
        values = values.item()
    if not isinstance(values, (list, tuple, range, np.ndarray)):
        return [values] * m
    shape = np.shape(values) if isinstance(values, np.ndarray) else (len(values),)
    if shape != (m,):
        raise ValueError(f"metadata field {field!r} has shape {shape}, expected ({m},)")
    return values


def _value_type(v) -> str | None:
    """The column type a value belongs in (None for None)."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    return "str" if isinstance(v, str) else "object"


def _batch_column(field: str, values, lenient: bool = False) -> tuple[np.ndarray, str | None]:
    """One field's values as a column and its type: a NumPy array of the type's dtype
    (``str``: fixed-width unicode) when no value is None, else an object array of Python
    scalars and None. Ints among floats become floats. Mixed types are a ``TypeError``
    (``lenient``: an ``object`` column, for files written before types were fixed)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in _ARRAY_TYPES:
        return _typed_array(field, values), _ARRAY_TYPES[values.dtype.kind]
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    kinds = [_value_type(v) for v in items]
    present = set(kinds) - {None}
    if len(present) <= 1 or "object" in present or present == {"int", "float"}:
        kind = "object" if "object" in present else "float" if "float" in present else next(iter(present), None)
    elif lenient:
        kind = "object"
    else:
        raise TypeError(f"metadata field {field!r} mixes {' and '.join(sorted(present))} values; "
                        "a column holds one type")
    if kind in _TO_PYTHON:
        items = [v if k is None else _python_value(field, v, kind) for v, k in zip(items, kinds)]
    else:  # an object column: NumPy scalars become Python ones, anything else stays as it is
        items = [_TO_PYTHON[k](v) if k in _TO_PYTHON else v for v, k in zip(items, kinds)]
    if kind is None or kind == "object" or None in kinds:
        return _object_array(items), kind
    return (_str_array(items) if kind == "str" else np.array(items, _DTYPE_OF[kind])), kind


def _python_value(field: str, v, kind: str):
    """``v`` as the Python scalar of column type ``kind`` (ints checked to fit int64, or to be exact floats)."""
    if kind == "int" and not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"metadata field {field!r}: {v} does not fit int64")
    if kind == "float" and isinstance(v, (int, np.integer)) and abs(int(v)) > _EXACT_INT:
        raise ValueError(f"metadata field {field!r}: the int {v} has no exact float64 (|value| > 2**53)")
    return _TO_PYTHON[kind](v)


def _typed_array(field: str, values: np.ndarray) -> np.ndarray:
    """A copy of a bool/int/float/unicode array in its column dtype (int64, float64, native unicode)."""
    kind = _ARRAY_TYPES[values.dtype.kind]
    if kind == "str":
        return values.astype(values.dtype.newbyteorder("="))
    if kind == "int" and values.size and values.dtype.kind == "u" and int(values.max()) > _INT64_MAX:
        raise ValueError(f"metadata field {field!r}: {int(values.max())} does not fit int64")
    return values.astype(_DTYPE_OF[kind])


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):  # element by element: a list value must not become a new axis
        arr[i] = v
    return arr


def _str_array(items: list[str]) -> np.ndarray:
    """Fixed-width unicode (fast comparisons) unless a value ends in NUL (NumPy would drop it)
    or the padding would cost more than 4x the text (one long value in a long column)."""
    longest = max(map(len, items), default=0)
    if _padding_too_costly(len(items), longest, sum(map(len, items))) or any(s.endswith("\0") for s in items):
        return _object_array(items)
    return np.array(items, dtype=f"<U{max(1, longest)}")


def _padding_too_costly(n: int, width: int, chars: int) -> bool:
    return width > _PADDED_STR_MIN and n * width > 4 * chars


def _reconcile(field: str, declared: str | None, column: np.ndarray, kind: str | None):
    """``column`` (type ``kind``) made to fit a column of type ``declared`` and the column's
    type after it; ``TypeError`` naming the field if it cannot."""
    if kind is None or declared in (None, kind, "object"):
        return column, declared or kind
    if declared == "float" and kind == "int":
        return _ints_as_floats(field, column), "float"
    raise TypeError(f"metadata field {field!r} holds {declared} values, got {kind} values "
                    "(a column keeps the type of its first value)")


def _ints_as_floats(field: str, column: np.ndarray) -> np.ndarray:
    if column.dtype == object:
        return _object_array([None if v is None else _python_value(field, v, "float") for v in column])
    if column.size and not ((column >= -_EXACT_INT) & (column <= _EXACT_INT)).all():
        raise ValueError(f"metadata field {field!r}: an int beyond 2**53 has no exact float64")
    return column.astype(np.float64)


def _concat(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``old`` then ``new`` (both of one column type): typed if both are typed the same way
    (str within the padding bound), else an object array."""
    if old.dtype.kind == new.dtype.kind == "U":
        width = max(old.itemsize, new.itemsize) // 4
        if width > old.itemsize // 4 and _padding_too_costly(
                old.size + new.size, width, int(np.char.str_len(old).sum() + np.char.str_len(new).sum())):
            return np.concatenate([old.astype(object), new.astype(object)])
        return np.concatenate([old, new])
    if old.dtype == new.dtype:
        return np.concatenate([old, new])
    return np.concatenate([old.astype(object), new.astype(object)])


def _extend_columns(old: Mapping[str, np.ndarray], types: Mapping[str, str | None], n: int,
                    new: dict[str, tuple[np.ndarray, str | None]], m: int):
    """The metadata columns and their types after appending ``m`` rows (new objects; ``old``
    and ``types`` are not touched). ``TypeError`` if a value does not fit its column's type."""
    out, out_types = {}, dict(types)
    for field in dict.fromkeys([*old, *new]):
        column, kind = new.get(field) or (np.full(m, None, dtype=object), None)
        column, out_types[field] = _reconcile(field, types.get(field), column, kind)
        before = old.get(field)
        if before is None and n:
            before = np.full(n, None, dtype=object)
        out[field] = column if before is None else _concat(before, column)
    return out, out_types


def _metadata_json(columns: Mapping[str, np.ndarray], types: Mapping[str, str | None]) -> bytes:
    """The metadata section: UTF-8 JSON ``{field: [values]}``; ``TypeError`` naming a field
    whose values JSON cannot store (an ``object`` column)."""
    for field, column in columns.items():
        if types.get(field) == "object":
            bad = next((v for v in column if not isinstance(v, _SAVABLE)), None)
            if bad is not None:
                raise TypeError(f"metadata must be JSON scalars (bool, int, float, str, None) to save: field "
                                f"{field!r} holds a {type(bad).__name__}")
    return json.dumps({f: c.tolist() for f, c in columns.items()}).encode()


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
