"""Argument validators shared by every public function.

Each raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a
value out of range, and names the argument in the message.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

from .. import backend
from .host import host_bool

_isfinite = math.isfinite


# Upper bounds checked in Python before any compiled code runs or any output is allocated.
MAX_WINDOW = 100_000
"""Largest window / period of an indicator or strategy parameter (TA-Lib's own cap)."""
MAX_GRID = 100_000
"""Most parameter sets one call may run (the product of the lengths of its parameter grids)."""
MAX_ELEMENTS = backend.MAX_ELEMENTS
"""Most values one input array or one output allocation may hold (2**32, 32 GiB of
float64): a larger request is an error up front, never an attempt to allocate it."""
WORK_MEMORY_LIMIT = 8 * MAX_ELEMENTS
"""Most bytes of working memory one call may plan for (``MAX_ELEMENTS`` float64 values)."""
_INT64_MAX = 2**63 - 1


def is_integer(value: Any) -> bool:
    """A Python or NumPy integer, never a ``bool``/``np.bool_``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, range)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _grid_items(value: Any, name: str, grid: bool) -> list:
    """The values of a parameter given as one value or a sequence of at most MAX_GRID values."""
    if not grid:
        return [value]
    try:
        size = len(value)
    except OverflowError:  # a range longer than sys.maxsize
        size = MAX_GRID + 1
    if not size:
        raise ValueError(f"{name} must not be an empty sequence")
    if size > MAX_GRID:
        raise ValueError(f"{name} is a sequence of more than {MAX_GRID} values; at most {MAX_GRID} are allowed")
    return list(value)


def check_windows(
    value: Any, name: str, minimum: int = 1, maximum: int | None = None
) -> tuple[tuple[int, ...], bool]:
    """Validate an integer parameter given as one value or a sequence (a parameter grid).

    Python and NumPy integers are accepted, ``bool``/``np.bool_`` and non-integers are a
    ``TypeError``; a value outside ``[minimum, maximum]`` (``maximum`` None: the int64
    range), an empty sequence or one longer than :data:`MAX_GRID` is a ``ValueError``.
    Returns ``(values, is_grid)``; ``is_grid`` is True when a sequence was given, in
    which case the result gains a leading axis of ``len(values)``.
    """
    top = _INT64_MAX if maximum is None else maximum
    if type(value) is int and minimum <= value <= top:  # the common case, kept cheap
        return (value,), False
    grid = _is_sequence(value)
    out = []
    for v in _grid_items(value, name, grid):
        if not is_integer(v):
            raise TypeError(f"{name} must be an integer (or a sequence of integers), got {v!r}")
        v = int(v)
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")
        if v > top:
            raise ValueError(f"{name} must be <= {top}, got {v}")
        out.append(v)
    return tuple(out), grid


def check_grid_size(sizes: Any, what: str) -> int:
    """The number of parameter sets of an outer-product grid with axes of ``sizes`` values;
    ``ValueError`` naming ``what`` when it exceeds :data:`MAX_GRID`."""
    total = math.prod(sizes)
    if total > MAX_GRID:
        raise ValueError(
            f"{what}: the parameter grid has {total} combinations ({' x '.join(map(str, sizes))}); "
            f"at most {MAX_GRID} are allowed per call"
        )
    return total


def check_allocation(count: int, what: str) -> None:
    """``ValueError`` naming ``what`` when an output of ``count`` values would exceed
    :data:`MAX_ELEMENTS` (checked before allocating it)."""
    if count > MAX_ELEMENTS:
        raise ValueError(
            f"{what}: the output would hold {count} values; at most {MAX_ELEMENTS} are allowed per call "
            "(split the batch or the parameter grid)"
        )


def check_work_memory(nbytes: float, what: str | Callable[[], str]) -> None:
    """Refuse, before anything is allocated, a call whose working memory estimate
    ``nbytes`` exceeds :data:`WORK_MEMORY_LIMIT` (``ValueError`` naming ``what``). On a
    one-series hot path pass ``what`` as a function returning the text, so it is only
    formatted when the call is refused."""
    if nbytes > WORK_MEMORY_LIMIT:
        if callable(what):
            what = what()
        raise ValueError(
            f"{what} would need about {nbytes / 2**30:.3g} GiB of working memory, more than the "
            f"limit of {WORK_MEMORY_LIMIT / 2**30:.3g} GiB; split the work into smaller calls"
        )


def real_number(value: Any, name: str, *, finite: bool = True) -> float:
    """``value`` as a Python float: a real number (Python ``int``/``float``, a NumPy integer
    or float scalar, any :class:`numbers.Real`), never ``bool``/``np.bool_``, ``Decimal``,
    a string or ``None``. NaN is refused, and so are infinities unless ``finite=False``.
    The one scalar check of every quantity, price, amount, limit and real parameter.

    Raises ``TypeError`` (not a real number) or ``ValueError`` (NaN, infinite, or a value
    beyond the float64 range), naming ``name``.
    """
    if type(value) is float:  # the hot path: no ABC check
        if _isfinite(value) or (not finite and value == value):
            return value
        raise ValueError(f"{name} must be {'finite' if finite else 'a number, not NaN'}, got {value!r}")
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        # (a plain int, a share count, skips the ABC check; np.bool_ is not a numbers.Real)
        raise TypeError(f"{name} must be a real number (int or float, not bool), got {type(value).__name__}")
    try:
        v = float(value)
    except (OverflowError, ValueError, TypeError):
        raise ValueError(f"{name} must be finite, got a {type(value).__name__} beyond the float64 range") from None
    return real_number(v, name, finite=finite)


def positive_number(value: Any, name: str) -> float:
    """:func:`real_number`, finite and > 0 (a price, a quantity, a duration)."""
    v = real_number(value, name)
    if not v > 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def nonnegative_number(value: Any, name: str) -> float:
    """:func:`real_number`, finite and >= 0 (a fee, a rate, a delay)."""
    v = real_number(value, name)
    if v < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def check_floats(value: Any, name: str, minimum: float | None = None) -> tuple[tuple[float, ...], bool]:
    """Validate a finite real parameter given as one value or a sequence (a parameter grid)."""
    grid = _is_sequence(value)
    out = []
    for v in _grid_items(value, name, grid):
        v = real_number(v, name)
        if minimum is not None and v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")
        out.append(v)
    return tuple(out), grid


def check_float(value: Any, name: str, *, positive: bool = False, minimum: float | None = None) -> float:
    """Validate one finite real number (not a sequence); ``positive``: it must be > 0;
    ``minimum``: it must be >= that."""
    if _is_sequence(value):
        raise TypeError(f"{name} must be one real number, got a sequence")
    (v,), _ = check_floats(value, name, minimum)
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def check_count(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    """Validate one integer in ``[minimum, maximum]`` (``maximum`` None: the int64 range;
    not a sequence, not a bool)."""
    if _is_sequence(value):
        raise TypeError(f"{name} must be one integer, got a sequence")
    (v,), _ = check_windows(value, name, minimum, maximum)
    return v


def check_periods_per_year(value: Any, maximum: float) -> float:
    """Validate an annualization factor ``periods_per_year``: a real number in ``(0, maximum]``."""
    ppy = check_float(value, "periods_per_year", positive=True)
    if ppy > maximum:
        raise ValueError(f"periods_per_year must be <= {maximum} (one period per second), got {ppy}")
    return ppy


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a Python bool: ``True``/``False`` or a NumPy bool; ``TypeError`` naming
    ``name`` for anything else (``"no"``, ``None`` and ``0`` are not flags)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}"[:200])
    return bool(value)


def check_out_array(out: Any, shape: tuple[int, ...], shape_text: str) -> None:
    """``TypeError``/``ValueError`` naming ``out`` unless it is a writeable native float64
    ``numpy.ndarray`` of exactly ``shape`` (described as ``shape_text`` in the message), so a
    stream's ``update(..., out=out)`` can write its values there."""
    if type(out) is not np.ndarray:
        raise TypeError(f"out must be a numpy.ndarray (float64, shape {shape}), got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"out must be a native-byte-order float64 array, got dtype {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape_text} = {shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable (it receives the values), got a read-only array")


def real_array(x: Any, name: str) -> np.ndarray:
    """``x`` (a host or device array, a pandas object, a sequence or a scalar) as a host NumPy
    array of a real dtype (bool, integer or float): device arrays are copied to the host, host
    inputs pass :func:`gpu_trader.backend.host_input` (``TypeError`` naming ``name`` for
    ``None``, a masked array or a non-real dtype). May be ``x`` itself: never write into it."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    be = backend.infer_backend(x)
    return backend.host_input(x if be.host_memory else be.to_numpy(x), name)


def finite_real_array(x: Any, name: str) -> np.ndarray:
    """:func:`real_array` as a new float64 array of finite values (the caller's buffer,
    read-only or not, is never aliased). For amounts (weights, quantities, outcomes), never
    flags: booleans are a ``TypeError``, NaN or inf a ``ValueError``, naming ``name``."""
    arr = real_array(x, name)
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers (int or float), not bool")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def check_observations(xp: Any, x: Any, minimum: int, name: str, what: str) -> None:
    """Every series of ``x`` (..., T) on namespace ``xp`` must hold at least ``minimum``
    valid (non-NaN) values: otherwise ``ValueError`` naming ``name``, the first offending
    series' batch index and ``what`` needs them. One pass counts each series' NaNs and one
    device-to-host read of a single flag decides (on a GPU, the price of an error instead of
    a silent NaN); only a refusal reads more (the worst series and where it is). Inside a
    ``jax.jit`` trace the counts are unknown and only the length is checked."""
    t = x.shape[-1]
    if t < minimum:
        raise ValueError(f"{name} has {t} observations per series; {what} needs at least {minimum}")
    missing = xp.isnan(x).sum(axis=-1)
    # host_bool is None inside a jax.jit trace: the data is not known yet
    if missing.size == 0 or not host_bool(missing.max() > t - minimum):
        return
    counts = t - missing
    worst = int(counts.min())
    if worst < minimum:
        where = np.unravel_index(int(counts.argmin()), counts.shape) if counts.ndim else ()
        raise ValueError(
            f"{name} has a series with {worst} valid (non-NaN) observations (batch index {tuple(map(int, where))});"
            f" {what} needs at least {minimum} per series"
        )
