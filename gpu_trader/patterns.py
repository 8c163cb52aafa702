"""Pattern memory: windows of indicator features as unit vectors, stored with what happened next.

A *pattern* is the last ``window`` bars of the features that :func:`gpu_trader.features`
computes for one symbol (``spec``, default :data:`gpu_trader.indicators.DEFAULT_FEATURES`),
each feature z-scored over the window (so the pattern describes shape, not price level or
units; a feature flat over the window contributes zeros), stacked feature-major and
flattened to ``n_features * window`` values, then normalized to unit length. Patterns are
stored in a cosine :class:`gpu_trader.vectors.VectorIndex` with their *outcome* (e.g. the
next-period return) and optional metadata (symbol, regime, ...) to filter on.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .backend import get_backend, infer_backend, to_numpy
from .indicators import features
from .vectors import VectorIndex
from .profiling import annotate, annotate_methods

__all__ = ["PatternMemory", "Distilled", "window_patterns"]


@annotate
def window_patterns(xp, feats, window: int):
    """Every length-``window`` pattern of ``feats`` ``(n_features, T)``, unnormalized.

    Returns ``(T - window + 1, n_features * window)``: row ``j`` is the window ending at
    bar ``j + window - 1``, each feature z-scored over the window (population std; a
    constant feature gives zeros). Written against ``xp`` (NumPy or CuPy).
    """
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

    ``window``: bars per pattern (>= 2). ``spec``: the :func:`gpu_trader.features` spec.
    ``backend``, ``dtype``, ``kind``: those of the underlying :class:`VectorIndex`. Queries may
    run in many threads while one thread adds (adds are serialized by a lock).
    """

    def __init__(self, window: int = 20, spec: Mapping | None = None, *, backend: str | None = None,
                 dtype: str = "float32", kind: str = "exact"):
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
            raise ValueError(f"window must be an int >= 2, got {window!r}")
        self.window = int(window)
        self.spec = spec
        self._index_args = {"backend": backend, "dtype": dtype, "kind": kind}
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
        """Store embedded ``patterns`` ``(dim,)``/``(m, dim)`` with ``outcomes`` (scalar/``(m,)``,
        finite floats) and optional metadata (as :meth:`VectorIndex.add`); returns the ids."""
        out = np.atleast_1d(np.asarray(outcomes, dtype=np.float64))
        m = 1 if np.ndim(patterns) == 1 else len(patterns)
        if out.shape != (m,):
            raise ValueError(f"outcomes has shape {out.shape}, expected ({m},)")
        if not np.isfinite(out).all():
            raise ValueError("outcomes contain NaN or infinite values")
        with self._lock:
            if self._index is None:
                dim = int(np.shape(patterns)[-1])
                self._index = VectorIndex(dim, "cosine", **self._index_args)
            before = self._outcomes
            self._outcomes = np.concatenate([before, out])  # published first: a concurrent query finds them
            try:
                return self._index.add(patterns, metadata=metadata)
            except BaseException:
                self._outcomes = before
                raise

    def add_history(self, ohlcv, horizon: int = 1, metadata: Mapping[str, Any] | None = None) -> np.ndarray:
        """Store every complete pattern of one symbol's bars with its forward return
        ``close[t + horizon] / close[t] - 1`` (``t``: the pattern's last bar; patterns without
        ``horizon`` bars after them are skipped). ``metadata``: ``field -> value`` for all of them.
        Returns the ids."""
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
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
        float64 (NaN where a filter left fewer than ``k`` matches, id -1)."""
        if self._index is None:
            raise ValueError("the memory is empty: add patterns first")
        scores, ids = self._index.search(pattern, k, filter=filter)
        ids_host = to_numpy(ids)
        outcomes = np.where(ids_host >= 0, self._outcomes[np.maximum(ids_host, 0)], np.nan)
        return scores, ids, outcomes

    def distill(self, n_clusters: int, *, n_iter: int = 50, seed: int = 0, tol: float = 1e-6) -> Distilled:
        """Cluster the stored patterns into ``n_clusters`` centroids with k-means (k-means++
        seeding, GEMM assignment, on the memory's backend); see :class:`Distilled`."""
        n = len(self)
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= n:
            raise ValueError(f"n_clusters must be an int in [1, {n}] (the patterns stored), got {n_clusters!r}")
        ids, x = self._index.vectors()
        centroids, labels, inertia = get_backend(self._index.backend).ops("vectors").kmeans(
            x, int(n_clusters), int(n_iter), int(seed), float(tol))
        labels = to_numpy(labels)
        outcomes = self._outcomes[to_numpy(ids)]
        counts = np.bincount(labels, minlength=n_clusters).astype(np.int64)
        sums = np.bincount(labels, weights=outcomes, minlength=n_clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return Distilled(centroids, counts, mean, labels, inertia)


def _field(ohlcv, name: str):
    if isinstance(ohlcv, Mapping) or hasattr(ohlcv, "columns"):  # a dict or a DataFrame
        for key in ohlcv:
            if str(key).lower() == name:
                return ohlcv[key]
        raise ValueError(f"ohlcv has no {name!r} field")
    return ohlcv[("open", "high", "low", "close", "volume").index(name)]
