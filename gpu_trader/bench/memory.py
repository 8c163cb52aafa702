"""Process memory for the bench: resident-set figures, and releasing a suite's data.

Figures come from ``/proc/<pid>/status`` (Linux), in bytes:

* :func:`resident_bytes`: ``VmRSS``, the resident set now;
* :func:`peak_resident_bytes`: ``VmHWM``, the peak resident set of the process's *own*
  address space. Unlike ``resource.getrusage(...).ru_maxrss``, it starts again at
  ``exec``: a child started from a parent holding gigabytes reports its own peak, not
  the parent's (``ru_maxrss`` keeps the larger of the two across fork and exec).

Both return None where ``/proc`` is not available (the metric is then missing, and a
target on it n/a). Read a child's figure before it exits (``/proc/<pid>`` goes with it),
or let the child report its own (``pid="self"``).

Suite data: a suite caches its generated inputs with :func:`suite_cache` (a
``functools.lru_cache`` that registers itself); :func:`release_suite_data` empties every
such cache, collects garbage, returns freed heap pages to the OS (glibc ``malloc_trim``)
and empties CuPy's memory pools where CuPy is loaded. ``gpu_trader.bench.run`` calls it
after each suite, so the parent process does not carry one suite's arrays into the next.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from typing import Callable, TypeVar

__all__ = ["resident_bytes", "peak_resident_bytes", "suite_cache", "release_suite_data"]

F = TypeVar("F", bound=Callable)
_CACHES: list = []


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None


def resident_bytes(pid: int | str = "self") -> int | None:
    """Resident set size of process ``pid`` now (``VmRSS``), bytes; None where unknown."""
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


def peak_resident_bytes(pid: int | str = "self") -> int | None:
    """Peak resident set size of process ``pid`` since its last ``exec`` (``VmHWM``), bytes;
    None where unknown (no ``/proc``, or the process has exited)."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024


def suite_cache(maxsize: int) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` whose cache :func:`release_suite_data` empties."""

    def decorate(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        _CACHES.append(cached)
        return cached  # type: ignore[return-value]

    return decorate


def release_suite_data() -> None:
    """Empty every :func:`suite_cache`, collect garbage, let go of the CPU backend's pooled output
    buffers and CuPy's pools, hand freed memory back to the OS."""
    for cached in _CACHES:
        cached.cache_clear()
    gc.collect()
    if "gpu_trader.cpu_fallback.output_pool" in sys.modules:
        sys.modules["gpu_trader.cpu_fallback.output_pool"].release()
    if "cupy" in sys.modules:
        cupy = sys.modules["cupy"]
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    _malloc_trim()


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def _malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: return the free pages of the heap to the OS (no-op elsewhere)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
