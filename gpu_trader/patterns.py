"""Pattern memory: windows of indicator features as unit vectors, stored with what happened next.

A *pattern* is the last ``window`` bars of the features that :func:`gpu_trader.features`
computes for one symbol (``spec``, default :data:`gpu_trader.indicators.DEFAULT_FEATURES`),
each feature z-scored over the window (so the pattern describes shape, not price level or
units; a feature flat over the window contributes zeros), stacked feature-major and
flattened to ``n_features * window`` values, then normalized to unit length. Patterns are
stored in a cosine :class:`gpu_trader.vectors.VectorIndex` with their *outcome* (e.g. the
next-period return) and optional metadata (symbol, regime, ...) to filter on.

Inputs are :func:`gpu_trader.features` inputs: a mapping or DataFrame of one symbol's
bars (columns in any case, ``Close`` or ``close``; read-only pandas columns fine) or a
``(5, T)`` array in OHLCV order. Limits (``ValueError``; bools and non-integers are a
``TypeError``): ``window`` 2 to 100000 bars, ``horizon`` 1 to 100000 bars, a query's ``k``
1 to the patterns stored, ``n_iter`` at most :data:`MAX_KMEANS_ITER`, and one call's
patterns at most :data:`gpu_trader._internal.validation.MAX_ELEMENTS` values.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .backend import get_backend, infer_backend, to_numpy
from .indicators import features, field_keys, is_mapping, normalize_spec
from .vectors import VectorIndex, _as_rows, _real_array
from .profiling import annotate, annotate_methods
from ._internal.rapids import cuml_kmeans
from ._internal.validation import MAX_WINDOW, check_allocation, check_count, check_float, finite_real_array

__all__ = ["PatternMemory", "Distilled", "window_patterns"]

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
    w = xp.lib.stride_tricks.sliding_window_view(feats, window, axis=1)  # (F, n, window)
    w = xp.moveaxis(w, 1, 0)  # (n, F, window)
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
    ``backend``, ``dtype``, ``kind``: those of the underlying :class:`VectorIndex`. Queries may
    run in many threads while one thread adds (adds are serialized by a lock).
    """

    def __init__(self, window: int = 20, spec: Mapping | None = None, *, backend: str | None = None,
                 dtype: str = "float32", kind: str = "exact"):
        self.window = check_count(window, "window", 2, MAX_WINDOW)
        normalize_spec(spec)  # a bad spec is refused here, not at the first add
        self.spec = spec
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

    def embed_history(self, ohlcv):
        """Patterns of every complete window of one symbol's bars.

        Returns ``(end_bars (m,) int64 host, patterns (m, dim))``: ``end_bars[j]`` is the last
        bar of pattern ``j``; windows that include an indicator's NaN lookback are left out.
        Patterns are not yet normalized (the index does that).
        """
        xp, f = self._features(ohlcv)
        T = f.shape[1]
        if T < self.window:
            return np.empty(0, np.int64), xp.empty((0, f.shape[0] * self.window))
        pats = window_patterns(xp, f, self.window)
        ok = xp.isfinite(pats).all(axis=1)
        ends = np.flatnonzero(to_numpy(ok)) + self.window - 1
        return ends.astype(np.int64), pats[ok]

    def embed(self, ohlcv):
        """The pattern ``(dim,)`` of the last ``window`` bars of one symbol (``ValueError`` if
        an indicator has not produced a value over the whole window yet)."""
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

    def add_history(self, ohlcv, horizon: int = 1, metadata: Mapping[str, Any] | None = None) -> np.ndarray:
        """Store every complete pattern of one symbol's bars with its forward return
        ``close[t + horizon] / close[t] - 1`` (``t``: the pattern's last bar; patterns without
        ``horizon`` bars after them are skipped). ``metadata``: ``field -> value`` for all of them.
        ``horizon``: 1 to 100000 bars. Returns the ids."""
        horizon = check_count(horizon, "horizon", 1, MAX_WINDOW)
        ends, pats = self.embed_history(ohlcv)
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
