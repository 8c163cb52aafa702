"""Argument validators shared by every public function.

Each raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a
value out of range, and names the argument in the message.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .backend import host_bool


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, range)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def check_windows(value: Any, name: str, minimum: int = 1) -> tuple[tuple[int, ...], bool]:
    """Validate an integer parameter given as one value or a sequence (a parameter grid).

    Returns ``(values, is_grid)``; ``is_grid`` is True when a sequence was given, in
    which case the result gains a leading axis of ``len(values)``.
    """
    if type(value) is int and value >= minimum:  # the common case, kept cheap
        return (value,), False
    grid = _is_sequence(value)
    items = list(value) if grid else [value]
    if grid and not items:
        raise ValueError(f"{name} must not be an empty sequence")
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer (or a sequence of integers), got {v!r}")
        v = int(v)
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")
        out.append(v)
    return tuple(out), grid


def check_floats(value: Any, name: str, minimum: float | None = None) -> tuple[tuple[float, ...], bool]:
    """Validate a finite real parameter given as one value or a sequence (a parameter grid)."""
    grid = _is_sequence(value)
    items = list(value) if grid else [value]
    if grid and not items:
        raise ValueError(f"{name} must not be an empty sequence")
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be a real number (or a sequence of them), got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        if minimum is not None and v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")
        out.append(v)
    return tuple(out), grid


def check_float(value: Any, name: str, *, positive: bool = False) -> float:
    """Validate one finite real number (not a sequence); ``positive``: it must be > 0."""
    if _is_sequence(value):
        raise TypeError(f"{name} must be one real number, got a sequence")
    (v,), _ = check_floats(value, name)
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def check_count(value: Any, name: str, minimum: int) -> int:
    """Validate one integer >= ``minimum`` (not a sequence, not a bool)."""
    if _is_sequence(value):
        raise TypeError(f"{name} must be one integer, got a sequence")
    (v,), _ = check_windows(value, name, minimum)
    return v


def check_observations(xp: Any, x: Any, minimum: int, name: str, what: str) -> None:
    """Every series of ``x`` (..., T) on namespace ``xp`` must hold at least ``minimum``
    valid (non-NaN) values: otherwise ``ValueError`` naming ``name``, the first offending
    series' batch index and ``what`` needs them. One cheap NaN test on clean data (on a
    GPU that test is one small device-to-host read, the price of an error instead of a
    silent NaN). Inside a ``jax.jit`` trace the NaN count is unknown and only the length
    is checked."""
    t = x.shape[-1]
    if t < minimum:
        raise ValueError(f"{name} has {t} observations per series; {what} needs at least {minimum}")
    nan = xp.isnan(x)
    if not host_bool(nan.any()):  # None inside a jax.jit trace: the data is not known yet
        return
    counts = (~nan).sum(axis=-1)
    worst = int(counts.min())
    if worst < minimum:
        where = np.unravel_index(int(counts.argmin()), counts.shape) if counts.ndim else ()
        raise ValueError(
            f"{name} has a series with {worst} valid (non-NaN) observations (batch index {tuple(map(int, where))});"
            f" {what} needs at least {minimum} per series"
        )
