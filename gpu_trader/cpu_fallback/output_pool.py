"""Output buffers of the CPU kernels, reused once the caller has dropped them (the host's
counterpart of CuPy's memory pool; docs/design.md#cpu-output-buffers).

A fresh NumPy buffer of more than a few MB is mapped from the OS for every call and faulted in
page by page while the kernel writes it: on a 2-core VM that costs about 4 ms per 40 MB on one
thread, and more than twice that when two threads fault in the same process at once, so a batched
indicator over 2000 x 2520 bars spent longer faulting its output in than computing it. The pool
keeps the buffers it handed out (up to :data:`DEFAULT_LIMIT_BYTES` in all, see :func:`set_limit`)
and hands one out again when no array refers to it any more, already faulted in.

Whether a buffer is free is read from its reference count: every array made from it (the result,
any view, slice or reshape of it, a pandas object or memoryview built on it) keeps the one raw
``uint8`` array that owns the memory alive, so the pool, which holds that array, sees a count
above its own references while any of them exists. Code that keeps only a raw address
(``arr.ctypes.data``) without the array is outside that contract, as with any NumPy buffer
(NumPy frees it then too).
"""
from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

# Buffers smaller than this come from np.empty: malloc's own free lists reuse them without faults.
MIN_BYTES = 1 << 20
# A free buffer up to this factor larger than the request is reused for it.
MAX_SLACK = 1.25


def _default_limit() -> int:
    """1 GiB, or 1/16 of the machine's memory where that is less."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 16 << 30
    return int(min(1 << 30, physical // 16))


DEFAULT_LIMIT_BYTES = _default_limit()

_lock = threading.Lock()
_buffers: list[np.ndarray] = []  # least recently handed out first
_limit = DEFAULT_LIMIT_BYTES


def _free_refcount() -> int:
    """``sys.getrefcount`` of a pool buffer no array refers to, read through ``_buffers[i]``."""
    probe = [np.empty(0, np.uint8)]
    return sys.getrefcount(probe[0])


_FREE_REFCOUNT = _free_refcount()


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialized C-contiguous array of ``shape`` and ``dtype`` (as ``np.empty``); from a
    free pool buffer when it is at least :data:`MIN_BYTES` and one fits (at most
    :data:`MAX_SLACK` times larger), else newly allocated and kept by the pool."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or nbytes > _limit:
        return np.empty(shape, dtype)
    with _lock:
        raw = _take_free(nbytes)
        if raw is None:
            raw = np.empty(nbytes, np.uint8)
            _buffers.append(raw)
            _trim(_limit)
    return raw[:nbytes].view(dtype).reshape(shape)


def _is_free(i: int) -> bool:
    """Whether no array refers to pool buffer ``i`` (read as :func:`_free_refcount` reads it)."""
    return sys.getrefcount(_buffers[i]) == _FREE_REFCOUNT


def _take_free(nbytes: int) -> np.ndarray | None:
    """The smallest free buffer of ``nbytes`` to ``MAX_SLACK * nbytes`` bytes, moved to the most
    recently used end; None if there is none. Under ``_lock``."""
    best = -1
    for i in range(len(_buffers)):
        size = _buffers[i].nbytes
        if nbytes <= size <= MAX_SLACK * nbytes and _is_free(i) and (best < 0 or size < _buffers[best].nbytes):
            best = i
    if best < 0:
        return None
    raw = _buffers.pop(best)
    _buffers.append(raw)
    return raw


def _trim(limit: int) -> None:
    """Let go of the least recently handed-out buffers until the pool holds at most ``limit``
    bytes (a buffer still in use is then freed by NumPy when its last array goes). Under ``_lock``."""
    total = sum(b.nbytes for b in _buffers)
    while _buffers and total > limit:
        total -= _buffers.pop(0).nbytes


def set_limit(nbytes: int) -> int:
    """Keep at most ``nbytes`` of output buffers (0 turns the pool off and frees what it holds);
    returns the previous limit. ``TypeError`` for a non-integer, ``ValueError`` for a negative."""
    global _limit
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    with _lock:
        previous, _limit = _limit, int(nbytes)
        _trim(_limit)
    return previous


def release() -> int:
    """Let go of every buffer the pool holds (those in use stay valid: NumPy frees them when
    their last array goes); returns the bytes it held."""
    with _lock:
        held = sum(b.nbytes for b in _buffers)
        _buffers.clear()
    return held


def stats() -> dict[str, int]:
    """``{"buffers", "bytes", "free_buffers", "free_bytes", "limit"}`` of the pool now."""
    with _lock:
        free = [_buffers[i].nbytes for i in range(len(_buffers)) if _is_free(i)]
        return {"buffers": len(_buffers), "bytes": sum(b.nbytes for b in _buffers),
                "free_buffers": len(free), "free_bytes": sum(free), "limit": _limit}
