"""Pattern memory: windows of indicator features as unit vectors, stored with what happened next.

A *pattern* is the last ``window`` bars of the features that :func:`gpu_trader.features`
computes for one symbol (``spec``, default :data:`gpu_trader.indicators.DEFAULT_FEATURES`),
each feature z-scored over the window (so the pattern describes shape, not price level or
units; a feature flat over the window contributes zeros), stacked feature-major and
flattened to ``n_features * window`` values, then normalized to unit length. Patterns are
stored in a cosine :class:`gpu_trader.vectors.VectorIndex` with their *outcome* (e.g. the
next-period return) and optional metadata (symbol, regime, ...) to filter on.

With an :class:`EmbeddingCache` (``PatternMemory(cache=EmbeddingCache(max_entries=...))``),
:meth:`PatternMemory.embed`, :meth:`PatternMemory.embed_history` and
:meth:`PatternMemory.add_history` called with ``symbol=`` reuse the patterns of windows they
have embedded before: an entry's key is ``(symbol, window_end, window, spec, digest of the
window's close prices)``, ``window_end`` being the DataFrame index label of the window's last
bar (its position for other inputs). The caller promises that a symbol's bars up to a window
end do not change except inside the window (which the digest detects): a rolling query over
an append-only history then computes the indicators only for windows not seen before and
z-scores only those. Without ``symbol`` (or without a cache) nothing is cached.

Inputs are :func:`gpu_trader.features` inputs: a mapping or DataFrame of one symbol's
bars (columns in any case, ``Close`` or ``close``; read-only pandas columns fine) or a
``(5, T)`` array in OHLCV order. Limits (``ValueError``; bools and non-integers are a
``TypeError``): ``window`` 2 to 100000 bars, ``horizon`` 1 to 100000 bars, a query's ``k``
1 to the patterns stored, ``n_iter`` at most :data:`MAX_KMEANS_ITER`, and one call's
patterns at most :data:`gpu_trader._internal.validation.MAX_ELEMENTS` values.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .backend import get_backend, infer_backend, to_numpy
from .indicators import features, field_keys, is_mapping, normalize_spec
from .vectors import VectorIndex, _as_rows, _real_array
from .profiling import annotate, annotate_methods
from ._internal.embedding_cache import CacheStats, EmbeddingCache
from ._internal.rapids import cuml_kmeans
from ._internal.validation import MAX_WINDOW, check_allocation, check_count, check_float, finite_real_array

__all__ = ["PatternMemory", "Distilled", "window_patterns", "EmbeddingCache", "CacheStats"]

MAX_KMEANS_ITER = 10_000
"""Most Lloyd iterations :meth:`PatternMemory.distill` accepts."""


@annotate
def window_patterns(xp, feats, window: int):
    """Every length-``window`` pattern of ``feats`` ``(n_features, T)``, unnormalized.

    Returns ``(T - window + 1, n_features * window)``: row ``j`` is the window ending at
    bar ``j + window - 1``, each feature z-scored over the window (population std; a
    constant feature gives zeros). Written against ``xp`` (NumPy or CuPy). ``window``: an
    integer in ``[1, T]``; ``ValueError`` when the result would exceed
    :data:`gpu_trader._internal.validation.MAX_ELEMENTS` values.
    """
    if getattr(feats, "ndim", None) != 2:
        raise ValueError(f"feats must have shape (n_features, T), got shape {getattr(feats, 'shape', None)}")
    n_features, T = feats.shape
    window = check_count(window, "window", 1, T)
    check_allocation((T - window + 1) * n_features * window, "window_patterns")
    return _zscore_windows(xp, _windows(xp, feats, window))


def _windows(xp, feats, window: int):
    """View ``(T - window + 1, n_features, window)`` of every window of ``feats`` ``(n_features, T)``."""
    return xp.moveaxis(xp.lib.stride_tricks.sliding_window_view(feats, window, axis=1), 1, 0)


def _zscore_windows(xp, w):
    """Windows ``w`` ``(n, F, window)`` z-scored per feature and flattened to ``(n, F * window)``."""
    mean = w.mean(axis=2, keepdims=True)
    std = w.std(axis=2, keepdims=True)
    z = (w - mean) / xp.where(std > 0, std, 1.0)
    return z.reshape(z.shape[0], -1)


@dataclass(frozen=True)
class Distilled:
    """Result of :meth:`PatternMemory.distill`: ``centroids`` ``(c, dim)``, per-cluster ``counts``
    ``(c,)`` int64 and ``mean_outcome`` ``(c,)`` float64 (NaN for an empty cluster), the
    cluster ``labels`` ``(n,)`` of the stored patterns (in storage order) and the k-means
    ``inertia`` (sum of squared distances to the assigned centroids)."""

    centroids: Any
    counts: np.ndarray
    mean_outcome: np.ndarray
    labels: np.ndarray
    inertia: float


@annotate_methods
class PatternMemory:
    """A k-NN memory of market patterns (see the module docstring).

    ``window``: bars per pattern (2 to 100000). ``spec``: the :func:`gpu_trader.features` spec.
    ``backend``, ``dtype``, ``kind``: those of the underlying :class:`VectorIndex`. ``cache``: an
    :class:`EmbeddingCache` for the windows embedded with ``symbol=`` (see the module docstring;
    it may be shared by memories: the key holds the window, spec and backend). Queries may
    run in many threads while one thread adds (adds are serialized by a lock).
    """

    def __init__(self, window: int = 20, spec: Mapping | None = None, *, backend: str | None = None,
                 dtype: str = "float32", kind: str = "exact", cache: EmbeddingCache | None = None):
        self.window = check_count(window, "window", 2, MAX_WINDOW)
        spec_key = repr(sorted(normalize_spec(spec).items()))  # a bad spec is refused here, not at the first add
        self.spec = spec
        if cache is not None and not isinstance(cache, EmbeddingCache):
            raise TypeError(f"cache must be an EmbeddingCache or None, got {type(cache).__name__}")
        self.cache = cache
        self._embedding_key = (self.window, spec_key, backend)
        self._index_args = {"backend": backend, "dtype": dtype, "kind": kind}
        VectorIndex(1, "cosine", **self._index_args)  # checks backend, dtype and kind as the real index will
        self._index: VectorIndex | None = None
        self._outcomes = np.empty(0, np.float64)  # by id (ids count up from 0)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    @property
    def index(self) -> VectorIndex | None:
        """The underlying vector index (None before the first pattern is added)."""
        return self._index

    # -- embedding ----------------------------------------------------------------------
    def _features(self, ohlcv):
        feats = features(ohlcv, self.spec, backend=self._index_args["backend"])
        arrays = [feats[key] for key in feats]
        if arrays[0].ndim != 1:
            raise ValueError(f"ohlcv must hold one symbol's 1-D series, got shape {arrays[0].shape}")
        xp = infer_backend(arrays[0]).xp
        return xp, xp.stack(arrays).astype(np.float64)

    def embed_history(self, ohlcv, *, symbol: Any = None):
        """Patterns of every complete window of one symbol's bars.

        Returns ``(end_bars (m,) int64 host, patterns (m, dim))``: ``end_bars[j]`` is the last
        bar of pattern ``j``; windows that include an indicator's NaN lookback are left out.
        Patterns are not yet normalized (the index does that). ``symbol`` (hashable): with a
        cache, the windows cached for it are not z-scored again (see the module docstring).
        """
        xp, f = self._features(ohlcv)
        T = f.shape[1]
        if T < self.window:
            return np.empty(0, np.int64), xp.empty((0, f.shape[0] * self.window))
        if self.cache is None or symbol is None:
            pats = window_patterns(xp, f, self.window)
            ok = xp.isfinite(pats).all(axis=1)
            ends = np.flatnonzero(to_numpy(ok)) + self.window - 1
            return ends.astype(np.int64), pats[ok]
        return self._cached_history(xp, f, ohlcv, symbol)

    def _cached_history(self, xp, f, ohlcv, symbol):
        """:meth:`embed_history` through the cache: z-score only the windows not cached."""
        window = self.window
        check_allocation((f.shape[1] - window + 1) * f.shape[0] * window, "embed_history")
        bad = np.concatenate([[0], np.cumsum(~to_numpy(xp.isfinite(f).all(axis=0)))])
        ends = np.flatnonzero(bad[window:] == bad[:-window]) + window - 1  # windows of finite features
        keys = self._window_keys(ohlcv, symbol, ends)
        rows = self.cache.get_many(keys)
        todo = [j for j, row in enumerate(rows) if row is None]
        if todo:
            new = _zscore_windows(xp, _windows(xp, f, window)[xp.asarray(ends[todo] - window + 1)])
            for j, row in zip(todo, new):
                rows[j] = row.copy()  # a copy: a view would keep the whole batch alive in the cache
                self.cache.put(keys[j], rows[j])
        keep = [j for j, row in enumerate(rows) if bool(xp.isfinite(row).all())] if todo else range(len(rows))
        if not len(keep):
            return np.empty(0, np.int64), xp.empty((0, f.shape[0] * window))
        return ends[list(keep)].astype(np.int64), xp.stack([rows[j] for j in keep])

    def _window_keys(self, ohlcv, symbol, ends: np.ndarray) -> list:
        """Cache keys of the windows ending at bars ``ends`` (see the module docstring)."""
        close = np.ascontiguousarray(to_numpy(_field(ohlcv, "close")), dtype=np.float64)
        labels = getattr(ohlcv, "index", None)
        if labels is None or callable(labels) or len(labels) != close.shape[-1]:  # no DataFrame index: positions
            labels = ends.tolist()
        else:
            labels = list(labels[ends])
        w, bars = self.window, memoryview(close)  # 1-D: the caller has checked
        blake2b, params = hashlib.blake2b, self._embedding_key
        return [(symbol, label, *params, blake2b(bars[e - w + 1:e + 1], digest_size=16).digest())
                for label, e in zip(labels, ends.tolist())]

    def embed(self, ohlcv, *, symbol: Any = None):
        """The pattern ``(dim,)`` of the last ``window`` bars of one symbol (``ValueError`` if
        an indicator has not produced a value over the whole window yet). ``symbol``
        (hashable): with a cache, a window embedded before is returned from it (read-only)
        without computing the indicators (see the module docstring)."""
        if self.cache is None or symbol is None:
            return self._embed(ohlcv)
        close = to_numpy(_field(ohlcv, "close"))
        if close.ndim != 1 or close.shape[0] < self.window:
            return self._embed(ohlcv)  # refused there
        key = self._window_keys(ohlcv, symbol, np.array([close.shape[0] - 1]))[0]
        pattern = self.cache.get(key)
        if pattern is None:
            pattern = self._embed(ohlcv)
            self.cache.put(key, pattern)
        return pattern

    def _embed(self, ohlcv):
        xp, f = self._features(ohlcv)
        last = f[:, f.shape[1] - self.window:]
        if f.shape[1] < self.window or not bool(xp.isfinite(last).all()):
            raise ValueError(f"the last {self.window} bars do not have every feature yet; pass more history")
        return window_patterns(xp, last, self.window)[0]

    # -- storing ------------------------------------------------------------------------
    def add(self, patterns, outcomes, metadata=None) -> np.ndarray:
        """Store embedded ``patterns`` ``(dim,)``/``(m, dim)`` (real arrays, as
        :meth:`VectorIndex.add` takes them) with ``outcomes`` (scalar/``(m,)``, finite reals, not
        bool) and optional metadata (as :meth:`VectorIndex.add`); returns the ids. A refused
        call stores nothing (``TypeError``/``ValueError`` naming the argument)."""
        patterns = _real_array(get_backend(self._index_args["backend"]), patterns, "patterns")
        m, dim = _as_rows(patterns, "patterns")[0].shape
        out = np.atleast_1d(finite_real_array(outcomes, "outcomes"))
        if out.shape != (m,):
            raise ValueError(f"outcomes has shape {out.shape}, expected ({m},)")
        with self._lock:
            index = self._index or VectorIndex(dim, "cosine", **self._index_args)
            before = self._outcomes
            self._outcomes = np.concatenate([before, out])  # published first: a concurrent query finds them
            try:
                ids = index.add(patterns, metadata=metadata)
            except BaseException:
                self._outcomes = before
                raise
            self._index = index  # kept only once it holds a pattern
            return ids

    def add_history(self, ohlcv, horizon: int = 1, metadata: Mapping[str, Any] | None = None, *,
                    symbol: Any = None) -> np.ndarray:
        """Store every complete pattern of one symbol's bars with its forward return
        ``close[t + horizon] / close[t] - 1`` (``t``: the pattern's last bar; patterns without
        ``horizon`` bars after them are skipped). ``metadata``: ``field -> value`` for all of them.
        ``horizon``: 1 to 100000 bars. ``symbol``: as for :meth:`embed_history`. Returns the ids."""
        horizon = check_count(horizon, "horizon", 1, MAX_WINDOW)
        ends, pats = self.embed_history(ohlcv, symbol=symbol)
        close = to_numpy(_field(ohlcv, "close")).astype(np.float64)
        keep = ends + horizon < close.shape[-1]
        ends, pats = ends[keep], pats[infer_backend(pats).xp.asarray(keep)]
        outcome = close[ends + horizon] / close[ends] - 1.0
        return self.add(pats, outcome, metadata=None if metadata is None else dict(metadata))

    # -- retrieval ----------------------------------------------------------------------
    def query(self, pattern, k: int = 10, filter=None):
        """The ``k`` stored patterns most similar to ``pattern`` (an embedded ``(dim,)`` or
        ``(nq, dim)``), best first: ``(scores, ids, outcomes)`` where outcomes is host
        float64 (NaN where a filter left fewer than ``k`` matches, id -1); ``k``: 1 to the
        number of patterns stored."""
        self._check_not_empty()
        k = check_count(k, "k", 1, len(self))
        scores, ids = self._index.search(pattern, k, filter=filter)
        ids_host = to_numpy(ids)
        outcomes = np.where(ids_host >= 0, self._outcomes[np.maximum(ids_host, 0)], np.nan)
        return scores, ids, outcomes

    def distill(self, n_clusters: int, *, n_iter: int = 50, seed: int = 0, tol: float = 1e-6) -> Distilled:
        """Cluster the stored patterns into ``n_clusters`` centroids with k-means (k-means++
        seeding, GEMM assignment, on the memory's backend); see :class:`Distilled`.
        ``n_clusters``: 1 to the patterns stored; ``n_iter``: 1 to :data:`MAX_KMEANS_ITER`;
        ``seed``: an integer >= 0; ``tol``: a finite float >= 0.

        The project's k-means (:func:`gpu_trader._internal.vector_xp.kmeans`) stops when no
        centroid moves by more than ``tol`` and keeps its temporaries within
        :data:`gpu_trader._internal.vector_xp.KMEANS_WORK_BYTES` (chunks of rows), whatever the
        number of patterns and clusters. On a GPU memory with RAPIDS cuML installed (extra
        ``rapids``), cuML's ``KMeans`` runs instead (:func:`gpu_trader._internal.rapids.cuml_kmeans`:
        the same objective and seed, its own seeding draws and its own stopping rule on ``tol``)."""
        self._check_not_empty()
        n_clusters = check_count(n_clusters, "n_clusters", 1, len(self))
        n_iter = check_count(n_iter, "n_iter", 1, MAX_KMEANS_ITER)
        seed = check_count(seed, "seed", 0)
        tol = check_float(tol, "tol", minimum=0.0)
        ids, x = self._index.vectors()
        fit = cuml_kmeans(x, n_clusters, n_iter, seed, tol)  # None unless x is on a GPU and cuML is installed
        if fit is None:
            fit = get_backend(self._index.backend).ops("vectors").kmeans(x, n_clusters, n_iter, seed, tol)
        centroids, labels, inertia = fit
        labels = to_numpy(labels)
        outcomes = self._outcomes[to_numpy(ids)]
        counts = np.bincount(labels, minlength=n_clusters).astype(np.int64)
        sums = np.bincount(labels, weights=outcomes, minlength=n_clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return Distilled(centroids, counts, mean, labels, inertia)

    def _check_not_empty(self) -> None:
        if not len(self):
            raise ValueError("the memory is empty: add patterns first")


def _field(ohlcv, name: str):
    """Field ``name`` of a mapping/DataFrame (any case) or of a ``(5, ...)`` OHLCV array."""
    if is_mapping(ohlcv):
        return ohlcv[field_keys(ohlcv, (name,), "ohlcv")[name]]
    return ohlcv[("open", "high", "low", "close", "volume").index(name)]
