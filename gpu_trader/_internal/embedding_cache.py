"""A bounded least-recently-used cache of embeddings (used by :class:`gpu_trader.patterns.PatternMemory`).

:class:`EmbeddingCache` maps hashable keys (PatternMemory uses ``(symbol, window_end,
embedding parameters, digest of the window's bars)``) to arrays (NumPy or CuPy), evicting
the least recently used entries once it holds more than ``max_entries`` entries or more
than ``max_bytes`` bytes of array data. Every method is thread-safe (one lock).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable

from .validation import check_count

__all__ = ["EmbeddingCache", "CacheStats"]

MAX_LIMIT = 1 << 62  # the largest max_entries / max_bytes accepted


@dataclass(frozen=True)
class CacheStats:
    """Counters of an :class:`EmbeddingCache`: ``hits``, ``misses`` (lookups that found nothing),
    ``evictions`` (entries dropped for room), ``entries`` and ``nbytes`` (bytes of the cached
    arrays now); ``hit_rate`` is ``hits / (hits + misses)`` (0.0 before any lookup)."""

    hits: int
    misses: int
    evictions: int
    entries: int
    nbytes: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class EmbeddingCache:
    """LRU cache of embeddings bounded by entry count and/or bytes.

    ``max_entries``, ``max_bytes``: ints in ``[1, 2**62]`` or ``None`` (no bound of that
    kind); at least one must be given (``ValueError``; ``TypeError`` for a non-int or bool).
    An array larger than ``max_bytes`` on its own is not stored. Stored NumPy arrays are
    made read-only (the cache keeps the caller's array, not a copy: pass one nobody writes to).
    """

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = None):
        if max_entries is None and max_bytes is None:
            raise ValueError("give max_entries or max_bytes (or both): an unbounded cache is not allowed")
        self.max_entries = None if max_entries is None else check_count(max_entries, "max_entries", 1, MAX_LIMIT)
        self.max_bytes = None if max_bytes is None else check_count(max_bytes, "max_bytes", 1, MAX_LIMIT)
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._nbytes = self._hits = self._misses = self._evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is cached (does not count as a lookup nor refresh the entry)."""
        with self._lock:
            return key in self._entries

    def get(self, key: Hashable) -> Any | None:
        """The array cached under ``key`` (now the most recently used), or ``None`` (a miss)."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def get_many(self, keys: list) -> list:
        """:meth:`get` of each key in turn, under one acquisition of the lock."""
        with self._lock:
            out = []
            for key in keys:
                value = self._entries.get(key)
                if value is None:
                    self._misses += 1
                else:
                    self._entries.move_to_end(key)
                    self._hits += 1
                out.append(value)
            return out

    def put(self, key: Hashable, value: Any) -> None:
        """Cache ``value`` (an array with ``nbytes``) under ``key`` as the most recently used
        entry, replacing an entry of the same key; evicts least recently used entries until
        both bounds hold."""
        size = int(value.nbytes)
        if self.max_bytes is not None and size > self.max_bytes:
            return
        if hasattr(value, "flags") and hasattr(value.flags, "writeable"):
            value.flags.writeable = False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= int(old.nbytes)
            self._entries[key] = value
            self._nbytes += size
            while self._over():
                _, dropped = self._entries.popitem(last=False)
                self._nbytes -= int(dropped.nbytes)
                self._evictions += 1

    def _over(self) -> bool:
        return ((self.max_entries is not None and len(self._entries) > self.max_entries)
                or (self.max_bytes is not None and self._nbytes > self.max_bytes))

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the cached arrays."""
        return self._nbytes

    def stats(self) -> CacheStats:
        """A consistent snapshot of the counters (see :class:`CacheStats`)."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, len(self._entries), self._nbytes)

    def __repr__(self) -> str:
        s = self.stats()
        return (f"EmbeddingCache(max_entries={self.max_entries}, max_bytes={self.max_bytes}, entries={s.entries}, "
                f"nbytes={s.nbytes}, hit_rate={s.hit_rate:.3f})")
