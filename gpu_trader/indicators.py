"""Technical indicators, batched, TA-Lib-exact in float64.

Conventions shared by every function here (docs/design.md#conventions):

* time is the **last** axis; leading axes are batch axes (symbols, ...); 1-D input
  is one series;
* a parameter given as a sequence adds a **leading** output axis of that length
  (several sequences: one axis each, in signature order, as an outer product);
* outputs have the input's length; the first ``lookback`` values after the
  series' first valid bar are NaN, exactly as TA-Lib's; leading NaNs are skipped
  per series (ragged listing dates in one batch are fine); an interior NaN
  propagates exactly as in TA-Lib 0.8 (see README "Conventions");
* float32 in gives float32 out (accumulated in float64); integers become float64;
* pandas in gives pandas out (a DataFrame has time along its index, one column
  per symbol);
* ``backend=`` picks the backend for this call (see :mod:`gpu_trader.backend`);
* one series of plain float64 ``numpy.ndarray`` inputs with scalar parameters, on the CPU
  backend, skips the conversions and runs the batch's row body directly on the calling
  thread (the same values and errors; for 100 bars a little faster than TA-Lib's own call,
  whatever the number of inputs);
* inputs may be read-only (pandas' copy-on-write columns), of any real dtype, byte
  order or memory layout, and are never written; masked arrays and non-real dtypes
  are refused (see :mod:`gpu_trader.backend`);
* limits, checked before any compiled code runs: every window/period is an integer in
  ``[minimum, 100000]`` (TA-Lib's range, :data:`~gpu_trader._internal.validation.MAX_WINDOW`; a
  window longer than the series gives all-NaN output, as in TA-Lib), a call runs at
  most :data:`~gpu_trader._internal.validation.MAX_GRID` parameter sets, and a parameter grid's
  output holds at most :data:`~gpu_trader._internal.validation.MAX_ELEMENTS` values (``ValueError``
  otherwise).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Mapping, NamedTuple

import numpy as np

from ._internal import indicator_specs
from .backend import MAX_ELEMENTS, default_backend, get_backend, resolve
from ._internal.indicator_params import check_params, check_params_by_name
from ._internal.validation import check_allocation
from .profiling import annotate

__all__ = [
    "sma", "ema", "wma", "rsi", "macd", "bollinger", "atr", "stoch", "obv", "vwap",
    "features", "DEFAULT_FEATURES", "OUTPUT_NAMES",
]

OUTPUT_NAMES = indicator_specs.OUTPUT_NAMES
_INPUTS = indicator_specs.INPUT_FIELDS
_F8 = np.dtype(np.float64)
_NDARRAY = np.ndarray
_CPU = get_backend("cpu")


_GRID_CACHE: dict = {}


def _param_grid(values: list[tuple[tuple[float, ...], bool]]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Outer product of parameter values -> ((P, k) float64, shape of the grid axes).

    Results are memoized (they are small and read-only), which keeps the
    one-series latency path free of array construction.
    """
    key = tuple(values)
    hit = _GRID_CACHE.get(key)
    if hit is not None:
        return hit
    grid_shape = tuple(len(v) for v, is_grid in values if is_grid)
    combos = list(itertools.product(*(v for v, _ in values)))
    grid = np.array(combos, dtype=np.float64).reshape(len(combos), len(values))
    grid.setflags(write=False)
    if len(_GRID_CACHE) > 4096:
        _GRID_CACHE.clear()
    _GRID_CACHE[key] = (grid, grid_shape)
    return grid, grid_shape


def _flatten(be, arrays, n: int, T: int) -> list[Any]:
    """Each ``(..., T)`` array as a C-contiguous ``(n, T)`` one (a view when it already is),
    all of one array type for the kernels (:meth:`gpu_trader.backend.Backend.kernel_arrays`)."""
    return be.kernel_arrays(arrays, (n, T))


def _run(name: str, be, arrays: list[Any], grid: tuple[np.ndarray, tuple[int, ...]]):
    """Compute ``name`` on already-resolved backend arrays for a parameter grid.

    Returns a tuple of outputs, each ``(*grid, *batch, T)`` on ``be``.
    """
    grid_params, grid_shape = grid
    n_out = indicator_specs.SPECS[name][2]
    shape = arrays[0].shape
    batch, T = shape[:-1], shape[-1]
    n = math.prod(batch)
    if grid_params.shape[0] > 1:  # one parameter set: at most 3 outputs the input's size
        check_allocation(n_out * grid_params.shape[0] * n * T, name)
    flat = _flatten(be, arrays, n, T)
    if T == 0 or n == 0:
        out = be.xp.empty((n_out, grid_params.shape[0], n, T), dtype=arrays[0].dtype)
    else:
        out = be.ops("indicators").compute(name, flat, grid_params, n_out)
    if n_out == 1 and not grid_shape:
        return (out.reshape(shape),)
    out = out.reshape((n_out,) + grid_shape + batch + (T,))
    return be.unstack(out)


@functools.lru_cache(maxsize=4096, typed=True)
def _scalar_call(name: str, *values):
    """:func:`_validated`, memoized by the values and their types (so ``20.0`` never reuses the
    entry of ``20``); None for a grid, which is validated every time: hash-equal sequences of
    different types, such as ``(20, 30)`` and ``(20, 30.0)``, would share an entry."""
    prepared = _validated(name, values)
    return None if prepared[1] else prepared


@functools.lru_cache(maxsize=4096, typed=True)
def _series_call(name: str, *values) -> tuple | None:
    """The one-series program of indicator ``name`` with scalar parameters ``values``:
    ``(code, n_out, params)`` (see :func:`_validated`), memoized as :func:`_scalar_call`; None for
    a grid. ``TypeError``/``ValueError`` for a value :func:`check_params` refuses (or, as any
    ``lru_cache``, ``TypeError`` for an unhashable one: the general path then says what is wrong)."""
    prepared = _scalar_call(name, *values)
    return None if prepared is None else prepared[2]


def _validated(name: str, values: tuple) -> tuple[np.ndarray, tuple[int, ...], tuple | None]:
    """Indicator ``name``'s parameter values checked (:func:`check_params`): ``(grid, grid shape,
    series)``, where ``grid`` and its shape are those of :func:`_param_grid` and ``series`` is,
    when no parameter is a sequence, what the one-series path needs: ``(code, n_out, params)``
    with ``params`` the one parameter set, a read-only ``(k,)`` float64 array (else None)."""
    grid, grid_shape = _param_grid(check_params(name, *values))
    code, _, n_out, _ = indicator_specs.SPECS[name]
    return grid, grid_shape, None if grid_shape else (code, n_out, grid[0])


# -- the one-series latency path ------------------------------------------------------------------
# A call whose inputs are one series each -- a plain ``numpy.ndarray`` (exact type: not pandas, not a
# subclass) of native float64, 1-D, all of one length, at most _SERIES_MAX_ELEMENTS values (any
# strides, alignment or writeability) -- with scalar parameters, on the CPU backend, runs the
# batch's row body on the calling thread (:func:`_run_series`). resolve would only copy such inputs
# (to align them or make them contiguous) without changing a value, so skipping it changes nothing
# but the time taken. On 100 bars every Python-level step counts (TA-Lib's C wrapper is the
# yardstick), so each input count has its own entry, _series1 .. _series4, which checks its inputs
# inline and hands anything else to _indicator (the general path, which raises the errors).
_SERIES_MAX_ELEMENTS = MAX_ELEMENTS


def _runs_on_cpu(backend) -> bool:
    """True when a call with ``backend=`` runs on the CPU backend; a bad ``backend=`` (or
    ``GPU_TRADER_BACKEND``) raises here what :func:`gpu_trader.backend.resolve` would raise.
    Callers test the common case first, inline: ``backend is None and default_backend() is None``."""
    if type(backend) is str and backend == "cpu":  # the name itself: no registry look-up
        return True
    return get_backend(backend) is _CPU


def _one_series_on_cpu(arrays: tuple[Any, ...], backend) -> bool:
    """True when a call with inputs ``arrays`` takes the one-series latency path (see above)."""
    first = arrays[0]
    if (type(first) is not _NDARRAY or first.dtype is not _F8 or first.ndim != 1
            or first.size > _SERIES_MAX_ELEMENTS):
        return False
    shape = first.shape
    for a in arrays[1:]:
        if type(a) is not _NDARRAY or a.dtype is not _F8 or a.shape != shape:
            return False
    return (backend is None and default_backend() is None) or _runs_on_cpu(backend)


def _series_kernel():
    """The CPU ops' one-series kernel (importing the ops module imports numba: not at import)."""
    global _SERIES_KERNEL
    _SERIES_KERNEL = _CPU.ops("indicators").series_kernel()
    return _SERIES_KERNEL


_SERIES_KERNEL = None


def _run_series(series: tuple, x0: np.ndarray, x1: np.ndarray, x2: np.ndarray, x3: np.ndarray):
    """One series through the batch's row body on the calling thread: ``series`` from
    :func:`_series_call`, ``x0..x3`` the kernel's input slots (slot k gets input k mod n, so the
    inputs in argument order, repeated). One output buffer; a multi-output indicator returns
    slices of it (``tuple(out.reshape(n_out, T))`` would end in a costly ``IndexError``)."""
    code, n_out, params = series
    T = len(x0)
    out = np.empty(n_out * T)
    if T:
        (_SERIES_KERNEL or _series_kernel())(code, params, x0, x1, x2, x3, out)
    if n_out == 1:
        return out
    return (out[:T], out[T:2 * T], out[2 * T:]) if n_out == 3 else (out[:T], out[T:])


def _series1(name: str, x, values: tuple, backend):
    """Indicator ``name`` of one input ``x``: the one-series path, else :func:`_indicator`."""
    try:
        series = _series_call(name, *values)
    except TypeError:  # an unhashable value (a list or array grid), or one check_params refuses
        series = None
    if (series is not None and type(x) is _NDARRAY and x.dtype is _F8 and x.ndim == 1
            and x.size <= _SERIES_MAX_ELEMENTS
            and (backend is None and default_backend() is None or _runs_on_cpu(backend))):
        return _run_series(series, x, x, x, x)
    return _indicator(name, (x,), ("x",), values, backend)


def _series2(name: str, arg_names: tuple, a, b, values: tuple, backend):
    """:func:`_series1` for an indicator of two inputs."""
    try:
        series = _series_call(name, *values)
    except TypeError:
        series = None
    if (series is not None and type(a) is _NDARRAY and type(b) is _NDARRAY and a.dtype is _F8
            and b.dtype is _F8 and a.ndim == 1 and a.shape == b.shape and a.size <= _SERIES_MAX_ELEMENTS
            and (backend is None and default_backend() is None or _runs_on_cpu(backend))):
        return _run_series(series, a, b, a, b)
    return _indicator(name, (a, b), arg_names, values, backend)


def _series3(name: str, arg_names: tuple, a, b, c, values: tuple, backend):
    """:func:`_series1` for an indicator of three inputs."""
    try:
        series = _series_call(name, *values)
    except TypeError:
        series = None
    if (series is not None and type(a) is _NDARRAY and type(b) is _NDARRAY and type(c) is _NDARRAY
            and a.dtype is _F8 and b.dtype is _F8 and c.dtype is _F8 and a.ndim == 1
            and a.shape == b.shape == c.shape and a.size <= _SERIES_MAX_ELEMENTS
            and (backend is None and default_backend() is None or _runs_on_cpu(backend))):
        return _run_series(series, a, b, c, a)
    return _indicator(name, (a, b, c), arg_names, values, backend)


def _series4(name: str, arg_names: tuple, a, b, c, d, values: tuple, backend):
    """:func:`_series1` for an indicator of four inputs."""
    try:
        series = _series_call(name, *values)
    except TypeError:
        series = None
    if (series is not None and type(a) is _NDARRAY and type(b) is _NDARRAY and type(c) is _NDARRAY
            and type(d) is _NDARRAY and a.dtype is _F8 and b.dtype is _F8 and c.dtype is _F8 and d.dtype is _F8
            and a.ndim == 1 and a.shape == b.shape == c.shape == d.shape and a.size <= _SERIES_MAX_ELEMENTS
            and (backend is None and default_backend() is None or _runs_on_cpu(backend))):
        return _run_series(series, a, b, c, d)
    return _indicator(name, (a, b, c, d), arg_names, values, backend)


def _indicator(name, arrays, arg_names, values, backend):
    """The general path: any inputs (resolved by :func:`gpu_trader.backend.resolve`), any
    parameters (a sequence is a grid axis), any backend."""
    try:
        prepared = _scalar_call(name, *values)
    except TypeError:  # an unhashable value (a list or array grid), or one check_params refuses
        prepared = None
    grid, grid_shape, _ = _validated(name, values) if prepared is None else prepared
    be, arrs, restore = resolve(arrays, arg_names, backend)
    outs = _run(name, be, arrs, (grid, grid_shape))
    if restore is not None:
        outs = tuple([restore(o) for o in outs])
    return outs[0] if len(outs) == 1 else outs


@annotate
def sma(x, window, *, backend=None):
    """Simple moving average (TA-Lib SMA). x: (..., T) float; returns (..., T); lookback window-1."""
    return _series1("sma", x, (window,), backend)


@annotate
def ema(x, window, *, backend=None):
    """Exponential moving average, k = 2/(window+1), seeded with the SMA of the first
    ``window`` values (TA-Lib EMA). x: (..., T); returns (..., T); lookback window-1."""
    return _series1("ema", x, (window,), backend)


@annotate
def wma(x, window, *, backend=None):
    """Linearly weighted moving average (TA-Lib WMA). x: (..., T); lookback window-1."""
    return _series1("wma", x, (window,), backend)


@annotate
def rsi(x, window=14, *, backend=None):
    """Wilder's relative strength index in [0, 100] (TA-Lib RSI). window >= 2; lookback window."""
    return _series1("rsi", x, (window,), backend)


@annotate
def macd(x, fast=12, slow=26, signal=9, *, backend=None):
    """MACD line, signal line and histogram (TA-Lib MACD, including its seeding of the fast
    EMA at the slow EMA's start). fast, slow >= 2 (swapped if slow < fast), signal >= 1;
    lookback max(fast, slow) - 1 + signal - 1. Returns ``(macd, signal, hist)``."""
    return _series1("macd", x, (fast, slow, signal), backend)


@annotate
def bollinger(x, window=20, nstd=2.0, *, backend=None):
    """Bollinger bands around an SMA, ``nstd`` population standard deviations wide
    (TA-Lib BBANDS with equal up/down deviations). window >= 2; lookback window-1.
    Returns ``(upper, middle, lower)``."""
    return _series1("bollinger", x, (window, nstd), backend)


_HLC = ("high", "low", "close")


@annotate
def atr(high, low, close, window=14, *, backend=None):
    """Average true range with Wilder smoothing (TA-Lib ATR; window 1 is the true range).
    high, low, close: same shape (..., T); lookback window."""
    return _series3("atr", _HLC, high, low, close, (window,), backend)


@annotate
def stoch(high, low, close, fastk=5, slowk=3, slowd=3, *, backend=None):
    """Slow stochastic oscillator with SMA smoothing (TA-Lib STOCH, matype 0), in percent.
    Lookback fastk-1 + slowk-1 + slowd-1. Returns ``(k, d)``."""
    return _series3("stoch", _HLC, high, low, close, (fastk, slowk, slowd), backend)


@annotate
def obv(close, volume, *, backend=None):
    """On-balance volume (TA-Lib OBV), starting from the first bar's volume; lookback 0."""
    return _series2("obv", ("close", "volume"), close, volume, (), backend)


@annotate
def vwap(high, low, close, volume, window, *, backend=None):
    """Rolling volume-weighted average of the typical price (H+L+C)/3 over ``window`` bars.

    Not in TA-Lib; follows its conventions for the lookback (window-1) and leading
    NaNs (skipped per series). A window that contains an interior NaN, or whose
    total volume is zero, gives NaN; the next clean window is computed normally.
    """
    return _series4("vwap", ("high", "low", "close", "volume"), high, low, close, volume, (window,), backend)


# -- the whole pipeline -------------------------------------------------------------
# key -> (indicator, parameters). Multi-output indicators give "<key>_<output>" keys.
DEFAULT_FEATURES: dict[str, tuple[str, dict[str, Any]]] = {
    "sma_20": ("sma", {"window": 20}),
    "ema_20": ("ema", {"window": 20}),
    "rsi_14": ("rsi", {"window": 14}),
    "macd": ("macd", {"fast": 12, "slow": 26, "signal": 9}),
    "bb": ("bollinger", {"window": 20, "nstd": 2.0}),
    "atr_14": ("atr", {"window": 14}),
    "stoch": ("stoch", {"fastk": 5, "slowk": 3, "slowd": 3}),
    "obv": ("obv", {}),
    "vwap_20": ("vwap", {"window": 20}),
}

_FIELDS = ("open", "high", "low", "close", "volume")


def normalize_spec(spec: Mapping[str, Any] | None) -> dict[str, tuple[str, dict[str, Any]]]:
    """Validate a feature spec: ``{key: (indicator_name, {param: value})}``."""
    if spec is None:
        return dict(DEFAULT_FEATURES)
    if not isinstance(spec, Mapping) or not spec:
        raise TypeError("spec must be a non-empty mapping {key: (indicator, {params})}")
    out = {}
    outputs: dict[str, Any] = {}
    for key, entry in spec.items():
        if not isinstance(entry, (tuple, list)) or len(entry) != 2 or not isinstance(entry[1], Mapping):
            raise TypeError(f"spec[{key!r}] must be (indicator_name, {{params}}), got {entry!r}")
        fn_name, params = entry
        indicator_specs.check_name(fn_name, f"spec[{key!r}]")
        check_params_by_name(fn_name, params)
        for name in _output_keys(str(key), fn_name):  # one output per key: none may overwrite another
            if name in outputs:
                raise ValueError(f"spec[{key!r}] gives the output key {name!r}, which spec[{outputs[name]!r}] "
                                 "gives too; rename one of them")
            outputs[name] = key
        out[str(key)] = (fn_name, dict(params))
    return out


def _output_keys(key: str, fn_name: str) -> tuple[str, ...]:
    names = OUTPUT_NAMES.get(fn_name)
    return tuple(f"{key}_{o}" for o in names) if names else (key,)


def feature_keys(spec: Mapping[str, Any] | None = None) -> list[str]:
    """The output keys ``features(..., spec)`` returns, in order."""
    return [k for key, (fn, _) in normalize_spec(spec).items() for k in _output_keys(key, fn)]


class _Plan(NamedTuple):
    """A validated feature spec, ready to run (the default spec's is built once)."""

    entries: list  # [(output keys, indicator, index of the Bollinger entry whose middle band is this SMA or -1)]
    fields: tuple[str, ...]  # the OHLCV fields the indicators read, in _FIELDS order
    todo: list[int]  # the entries computed (an SMA taken from a Bollinger middle band is not)
    grids: list  # (grid, grid shape) of _param_grid for each computed entry
    series: tuple | None  # the one-series program (_series_program); None when a parameter is a grid


_DEFAULT_PLAN: _Plan | None = None


def _plan(spec: Mapping[str, Any] | None) -> _Plan:
    if spec is None and _DEFAULT_PLAN is not None:
        return _DEFAULT_PLAN
    checked = [(key, fn, check_params_by_name(fn, params)) for key, (fn, params) in normalize_spec(spec).items()]
    entries = []
    for key, fn, params in checked:
        shared = -1
        if fn == "sma":
            for j, (_, other_fn, other) in enumerate(checked):
                # a scalar nstd: the middle band has exactly the SMA's shape
                if other_fn == "bollinger" and other[0] == params[0] and not other[1][1]:
                    shared = j
                    break
        entries.append((_output_keys(key, fn), fn, shared))
    fields = tuple(f for f in _FIELDS if any(f in _INPUTS[fn] for _, fn, _ in checked))
    todo = [i for i, entry in enumerate(entries) if entry[2] < 0]
    grids = [_param_grid(checked[i][2]) for i in todo]
    series = None if any(shape for _, shape in grids) else _series_program(entries, fields, todo, grids)
    return _Plan(entries, fields, todo, grids, series)


def _series_program(entries, fields, todo, grids) -> tuple:
    """``(steps, n_rows, outputs)`` of a plan without grids on one series: each step
    ``(code, n_out, params, slots, first row)`` runs one computed entry, ``slots`` the indices
    into ``fields`` of the kernel's four inputs (slot k its input k mod n, as in
    :func:`_indicator`); its outputs are rows of an ``(n_rows, T)`` buffer, and ``outputs`` is
    ``[(key, row)]`` in the order of :func:`feature_keys`."""
    steps, first_row = [], {}
    n_rows = 0
    for i, (grid, _) in zip(todo, grids):
        fn = entries[i][1]
        code, _, n_out, _ = indicator_specs.SPECS[fn]
        inputs = [fields.index(f) for f in _INPUTS[fn]]
        slots = tuple(inputs[k % len(inputs)] for k in range(4))
        steps.append((code, n_out, grid[0], slots, n_rows))
        first_row[i] = n_rows
        n_rows += n_out
    outputs = []
    for i, (keys, _, shared) in enumerate(entries):
        rows = [first_row[shared] + 1] if shared >= 0 else range(first_row[i], first_row[i] + len(keys))
        outputs.extend(zip(keys, rows))  # [1] of a Bollinger is its middle band
    return tuple(steps), n_rows, tuple(outputs)


_DEFAULT_PLAN = _plan(None)


def is_mapping(obj) -> bool:
    """True for a mapping of fields (dict, pandas DataFrame or Series, ...), not an array."""
    return hasattr(obj, "keys") and hasattr(obj, "__getitem__") and not isinstance(obj, np.ndarray)


def field_keys(mapping, needed: tuple[str, ...], arg: str) -> dict[str, Any]:
    """The keys of ``mapping`` holding the ``needed`` OHLCV fields (lower-case names).

    Keys match case-insensitively, surrounding whitespace ignored, so a DataFrame from a
    data vendor (``Open``, ``High``, ``Low``, ``Close``, ``Volume``) works as is; other
    keys (``Adj Close``, ``Dividends``, ...) are ignored. A DataFrame with MultiIndex
    columns is read by its first level (``("Close", "AAPL")``, ``("Close", "MSFT")``, ...:
    ``mapping["Close"]`` is then a frame with one column per symbol). ``ValueError``
    naming ``arg`` when a needed field is missing (listing the expected names and the
    keys found) or given twice (a repeated column, or names differing only in case).
    """
    keys: dict[str, Any] = {}
    for k in _field_labels(mapping):
        name = str(k).strip().lower()
        if name in needed:
            if name in keys:
                raise ValueError(f"{arg} has field {name!r} twice: {keys[name]!r} and {k!r}")
            keys[name] = k
    missing = [f for f in needed if f not in keys]
    if missing:
        raise ValueError(
            f"{arg} is missing field(s) {missing}: expected keys (or DataFrame columns, the first level of "
            f"MultiIndex columns) named {', '.join(needed)} (any case, e.g. 'Close'); got "
            f"{list(_field_labels(mapping))[:20]}"
        )
    return keys


def _field_labels(mapping) -> list:
    """The keys of a mapping; of a DataFrame with MultiIndex columns, the distinct labels of
    the first level (each selects a frame of the columns under it)."""
    columns = getattr(mapping, "columns", None)
    if getattr(columns, "nlevels", 1) > 1:
        return list(dict.fromkeys(columns.get_level_values(0)))
    return list(mapping.keys())


def _ohlcv_fields(ohlcv, needed: tuple[str, ...]) -> dict[str, Any]:
    """The ``needed`` fields of a mapping/DataFrame (see :func:`field_keys`), or of an array
    with a leading axis of 5 in OHLCV order."""
    if is_mapping(ohlcv):
        return {f: ohlcv[k] for f, k in field_keys(ohlcv, needed, "ohlcv").items()}
    shape = getattr(ohlcv, "shape", None)
    if shape is None or len(shape) < 2 or shape[0] != 5:
        raise ValueError(
            "ohlcv must be a mapping with high/low/close/volume or an array of shape (5, ..., T) in OHLCV order"
        )
    return {f: ohlcv[i] for i, f in enumerate(_FIELDS)}


@annotate
def features(ohlcv, spec=None, *, backend=None) -> dict[str, Any]:
    """Compute a whole set of indicators in one call.

    ohlcv: mapping (dict, DataFrame of one symbol) with the ``high``, ``low``,
    ``close``, ``volume`` arrays of shape (..., T) that the spec's indicators read
    (keys case-insensitive: ``Close`` works; other keys such as ``Adj Close`` are
    ignored; a missing one is a ``ValueError`` listing the expected names), or one
    array of shape (5, ..., T) in OHLCV order. spec: ``{key: (indicator_name, {param: value})}``, default
    :data:`DEFAULT_FEATURES`. Returns ``{key: array}`` (multi-output indicators give
    ``key_<output>``, see :data:`OUTPUT_NAMES`). Inputs are validated and converted
    once; an SMA whose window equals a Bollinger window is taken from the band's
    middle instead of being computed twice.
    """
    plan = _plan(spec)
    fields = _ohlcv_fields(ohlcv, plan.fields)
    arrays = tuple([fields[f] for f in plan.fields])
    if plan.series is not None and _one_series_on_cpu(arrays, backend):
        return _features_one_series(plan.series, arrays)
    be, arrs, restore = resolve(arrays, plan.fields, backend)
    shape = arrs[0].shape
    batch, T = shape[:-1], shape[-1]
    n = math.prod(batch)
    fns = [plan.entries[i][1] for i in plan.todo]
    rows = sum(indicator_specs.SPECS[fn][2] * g.shape[0] for fn, (g, _) in zip(fns, plan.grids))
    check_allocation(rows * n * T, "features")
    flat = dict(zip(plan.fields, _flatten(be, arrs, n, T)))
    if T == 0 or n == 0:
        dtype = arrs[0].dtype
        outs = [be.xp.empty((indicator_specs.SPECS[fn][2], g.shape[0], n, T), dtype=dtype)
                for fn, (g, _) in zip(fns, plan.grids)]
    else:
        outs = be.ops("indicators").compute_many(fns, [g for g, _ in plan.grids], flat)
    computed = {
        i: out.reshape(out.shape[:1] + grid_shape + batch + (T,))
        for i, out, (_, grid_shape) in zip(plan.todo, outs, plan.grids)
    }
    result: dict[str, Any] = {}
    for i, (keys, _, shared) in enumerate(plan.entries):
        values = computed[shared][1:2] if shared >= 0 else computed[i]  # [1] of a Bollinger is its middle band
        for key, value in zip(keys, be.unstack(values)):
            result[key] = value if restore is None else restore(value)
    return result


def _features_one_series(program: tuple, arrays: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """A plan's one-series program (:func:`_series_program`) on inputs :func:`_one_series_on_cpu`
    accepted: the row bodies the batch runs, each output a row of one fresh buffer."""
    steps, n_rows, outputs = program
    T = arrays[0].shape[0]
    out = np.empty((n_rows, T))
    if T:
        kernel = _SERIES_KERNEL or _series_kernel()
        flat = out.reshape(-1)
        for code, n_out, params, (s0, s1, s2, s3), row in steps:
            kernel(code, params, arrays[s0], arrays[s1], arrays[s2], arrays[s3], flat[row * T:(row + n_out) * T])
    return {key: out[row] for key, row in outputs}
