"""Per-stage latency recording for the trading loop, cheap enough for every event.

:class:`StageRecorder` keeps, per stage, a plain list of durations (int ns) that the
hot path appends to (:meth:`StageRecorder.lap`: one ``perf_counter_ns`` call and one
``list.append``, no lock), and *folds* them now and then (:meth:`StageRecorder.fold`:
every few thousand events, and on every read) into cumulative histogram bucket counts
(NumPy ``searchsorted``), an exact sum and a ring of the most recent samples. Readers on
other threads (a metrics scrape) fold under a lock: the hot path only appends at the
end of a list and a fold removes what it read from the front, so no sample is lost or
counted twice.
"""
from __future__ import annotations

import math
import threading
import time
from typing import NamedTuple, Sequence

import numpy as np

from .validation import check_count, is_integer

__all__ = ["StageRecorder", "StageHistogram", "DEFAULT_BUCKETS_S", "FOLD_EVERY", "check_options"]

DEFAULT_BUCKETS_S: tuple[float, ...] = (
    1e-7, 2e-7, 5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
"""Upper bounds of the histogram buckets, seconds: 100 ns, 200 ns, 500 ns, 1 us, ... 50 ms, 100 ms."""
FOLD_EVERY = 4096
"""The hot path folds when its event index is a multiple of this (bounds the pending lists)."""
MAX_BUCKETS = 1_000
MAX_WINDOW = 1 << 24

_clock = time.perf_counter_ns


class StageHistogram(NamedTuple):
    """One stage's histogram: ``bounds_s`` (upper bounds, s; the last bucket, +Inf, is
    implicit), ``cumulative`` counts of samples ``<=`` each bound then the total
    (``len(bounds_s) + 1`` ints, non-decreasing), ``sum_s`` (exact sum in ns, as s),
    ``count`` (= ``cumulative[-1]``)."""

    stage: str
    bounds_s: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum_s: float
    count: int


def _check_bounds(bounds_s) -> tuple[tuple[float, ...], np.ndarray]:
    """Bucket bounds in s -> (as floats, as int64 ns): finite, in (0, 3600], strictly
    increasing once rounded to ns."""
    if isinstance(bounds_s, (str, bytes)) or not isinstance(bounds_s, Sequence):
        raise TypeError(f"buckets must be a sequence of seconds, got {type(bounds_s).__name__}")
    if not 1 <= len(bounds_s) <= MAX_BUCKETS:
        raise ValueError(f"buckets must hold 1 to {MAX_BUCKETS} bounds, got {len(bounds_s)}")
    ns, seconds = [], []
    for b in bounds_s:
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
            raise TypeError(f"buckets must hold real numbers of seconds, got {type(b).__name__}")
        if not (math.isfinite(b) and 0.0 < b <= 3600.0):
            raise ValueError(f"buckets must be finite seconds in (0, 3600], got {b!r}")
        seconds.append(float(b))
        ns.append(round(float(b) * 1e9))
    if any(a >= b for a, b in zip(ns, ns[1:])) or ns[0] < 1:
        raise ValueError("buckets must be strictly increasing (at ns resolution) and >= 1 ns")
    return tuple(seconds), np.array(ns, dtype=np.int64)


def check_options(buckets, window) -> tuple[tuple[float, ...], np.ndarray, int]:
    """``(bounds in s, bounds in int64 ns, window)`` of a :class:`StageRecorder`'s ``buckets``
    and ``window``, checked (``TypeError``/``ValueError`` naming the argument)."""
    bounds_s, bounds_ns = _check_bounds(buckets)
    return bounds_s, bounds_ns, check_count(window, "window", 1, MAX_WINDOW)


class StageRecorder:
    """Latency samples of named stages as histograms (see module doc).

    ``stages``: the stage names (distinct, non-empty ``str``), addressed by index on the
    hot path. ``buckets``: upper bounds in seconds (default :data:`DEFAULT_BUCKETS_S`).
    ``window``: how many recent samples per stage :meth:`recent` keeps (1 .. 2**24).

    * ``lap(stage, start_ns) -> now_ns``: record ``now - start_ns`` for stage index ``stage``
      (the hot path; no checks);
    * ``fold()``: move the pending samples into the histograms (thread-safe);
    * ``histogram(name) -> StageHistogram``, ``histograms()``: folded state (fold first);
    * ``recent(name) -> int64 ns array``: the latest ``window`` samples, oldest first;
    * ``quantile(name, q) -> s``: ``q`` in [0, 1] over :meth:`recent` (NaN without samples).

    ``TypeError``/``ValueError`` name the argument.
    """

    __slots__ = ("stages", "bounds_s", "window", "pending", "_bounds_ns", "_index", "_counts", "_sum_ns",
                 "_recent", "_written", "_lock")

    def __init__(self, stages: Sequence[str], *, buckets: Sequence[float] = DEFAULT_BUCKETS_S,
                 window: int = FOLD_EVERY) -> None:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise TypeError(f"stages must be a sequence of names, got {type(stages).__name__}")
        names = tuple(stages)
        if not names or any(type(s) is not str or not s for s in names) or len(set(names)) != len(names):
            raise ValueError(f"stages must be distinct non-empty str names, got {names!r}")
        self.bounds_s, self._bounds_ns, self.window = check_options(buckets, window)
        self.stages = names
        self._index = {s: i for i, s in enumerate(names)}
        n = len(names)
        self.pending: tuple[list[int], ...] = tuple([] for _ in names)  # appended to by the hot path
        self._counts = np.zeros((n, len(self._bounds_ns) + 1), dtype=np.int64)  # per bucket, not cumulative
        self._sum_ns = [0] * n
        self._recent = np.zeros((n, self.window), dtype=np.int64)
        self._written = [0] * n  # samples ever written to the ring
        self._lock = threading.Lock()

    def lap(self, stage: int, start_ns: int) -> int:
        """Record the time since ``start_ns`` (``perf_counter_ns``) for stage index
        ``stage``; returns the current ``perf_counter_ns`` (the next stage's start)."""
        now = _clock()
        self.pending[stage].append(now - start_ns)
        return now

    def fold(self) -> None:
        """Move every pending sample into the histograms and the recent ring."""
        with self._lock:
            for i, buf in enumerate(self.pending):
                n = len(buf)
                if n:
                    chunk = np.array(buf[:n], dtype=np.int64)
                    del buf[:n]  # the hot path only appends: what it added meanwhile stays
                    self._add(i, chunk)

    def _add(self, i: int, ns: np.ndarray) -> None:
        self._counts[i] += np.bincount(np.searchsorted(self._bounds_ns, ns, side="left"),
                                       minlength=self._counts.shape[1])
        self._sum_ns[i] += int(ns.sum())
        w = self.window
        tail = ns[-w:]  # where the last len(tail) of the len(ns) new samples land
        start = (self._written[i] + len(ns) - len(tail)) % w
        first = min(len(tail), w - start)
        self._recent[i, start:start + first] = tail[:first]
        self._recent[i, :len(tail) - first] = tail[first:]
        self._written[i] += len(ns)

    def _stage(self, name) -> int:
        if is_integer(name) and 0 <= int(name) < len(self.stages):
            return int(name)
        i = self._index.get(name) if isinstance(name, str) else None
        if i is None:
            raise ValueError(f"stage must be one of {self.stages}, got {name!r}")
        return i

    def histogram(self, stage) -> StageHistogram:
        """Stage ``stage``'s histogram (a name or an index), after a :meth:`fold`."""
        i = self._stage(stage)
        self.fold()
        with self._lock:
            counts = self._counts[i].copy()
            total_ns = self._sum_ns[i]
        cumulative = tuple(int(c) for c in np.cumsum(counts))
        return StageHistogram(self.stages[i], self.bounds_s, cumulative, total_ns * 1e-9, cumulative[-1])

    def histograms(self) -> list[StageHistogram]:
        """Every stage's :meth:`histogram`, in stage order."""
        return [self.histogram(i) for i in range(len(self.stages))]

    def recent(self, stage) -> np.ndarray:
        """The latest ``window`` samples of ``stage`` (int64 ns, oldest first), after a :meth:`fold`."""
        i = self._stage(stage)
        self.fold()
        with self._lock:
            written, w = self._written[i], self.window
            if written <= w:
                return self._recent[i, :written].copy()
            start = written % w
            return np.concatenate([self._recent[i, start:], self._recent[i, :start]])

    def quantile(self, stage, q: float) -> float:
        """Quantile ``q`` (in [0, 1]) of :meth:`recent` in seconds; NaN without samples."""
        if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)) or not 0 <= q <= 1:
            raise ValueError(f"q must be a real number in [0, 1], got {q!r}")
        ns = self.recent(stage)
        return float(np.quantile(ns, q)) * 1e-9 if len(ns) else math.nan

    def __repr__(self) -> str:
        return f"StageRecorder(stages={self.stages}, window={self.window})"
