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

import itertools
import math
from typing import Any, Mapping

import numpy as np

from ._internal import indicator_specs
from .backend import resolve
from ._internal.indicator_params import check_params, check_params_by_name
from ._internal.validation import check_allocation
from .profiling import annotate

__all__ = [
    "sma", "ema", "wma", "rsi", "macd", "bollinger", "atr", "stoch", "obv", "vwap",
    "features", "DEFAULT_FEATURES", "OUTPUT_NAMES",
]

OUTPUT_NAMES = indicator_specs.OUTPUT_NAMES
_INPUTS = indicator_specs.INPUT_FIELDS


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


_PREPARED: dict = {}


def _prepared(name: str, *values) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validated parameter grid for an indicator call, memoized by the values and their types
    (so ``20.0`` never reuses the entry of ``20``); unhashable values are validated every time."""
    key = (name, values, *[type(v) for v in values])
    try:
        return _PREPARED[key]
    except (KeyError, TypeError):
        pass
    grid = _param_grid(check_params(name, *values))
    try:
        if len(_PREPARED) > 4096:
            _PREPARED.clear()
        _PREPARED[key] = grid
    except TypeError:
        pass
    return grid


def _indicator(name, arrays, arg_names, values, backend):
    grid = _prepared(name, *values)
    be, arrs, restore = resolve(arrays, arg_names, backend)
    outs = _run(name, be, arrs, grid)
    if restore is not None:
        outs = tuple([restore(o) for o in outs])
    return outs[0] if len(outs) == 1 else outs


@annotate
def sma(x, window, *, backend=None):
    """Simple moving average (TA-Lib SMA). x: (..., T) float; returns (..., T); lookback window-1."""
    return _indicator("sma", (x,), ("x",), (window,), backend)


@annotate
def ema(x, window, *, backend=None):
    """Exponential moving average, k = 2/(window+1), seeded with the SMA of the first
    ``window`` values (TA-Lib EMA). x: (..., T); returns (..., T); lookback window-1."""
    return _indicator("ema", (x,), ("x",), (window,), backend)


@annotate
def wma(x, window, *, backend=None):
    """Linearly weighted moving average (TA-Lib WMA). x: (..., T); lookback window-1."""
    return _indicator("wma", (x,), ("x",), (window,), backend)


@annotate
def rsi(x, window=14, *, backend=None):
    """Wilder's relative strength index in [0, 100] (TA-Lib RSI). window >= 2; lookback window."""
    return _indicator("rsi", (x,), ("x",), (window,), backend)


@annotate
def macd(x, fast=12, slow=26, signal=9, *, backend=None):
    """MACD line, signal line and histogram (TA-Lib MACD, including its seeding of the fast
    EMA at the slow EMA's start). fast, slow >= 2 (swapped if slow < fast), signal >= 1;
    lookback max(fast, slow) - 1 + signal - 1. Returns ``(macd, signal, hist)``."""
    return _indicator("macd", (x,), ("x",), (fast, slow, signal), backend)


@annotate
def bollinger(x, window=20, nstd=2.0, *, backend=None):
    """Bollinger bands around an SMA, ``nstd`` population standard deviations wide
    (TA-Lib BBANDS with equal up/down deviations). window >= 2; lookback window-1.
    Returns ``(upper, middle, lower)``."""
    return _indicator("bollinger", (x,), ("x",), (window, nstd), backend)


@annotate
def atr(high, low, close, window=14, *, backend=None):
    """Average true range with Wilder smoothing (TA-Lib ATR; window 1 is the true range).
    high, low, close: same shape (..., T); lookback window."""
    return _indicator(
        "atr", (high, low, close), ("high", "low", "close"), (window,), backend
    )


@annotate
def stoch(high, low, close, fastk=5, slowk=3, slowd=3, *, backend=None):
    """Slow stochastic oscillator with SMA smoothing (TA-Lib STOCH, matype 0), in percent.
    Lookback fastk-1 + slowk-1 + slowd-1. Returns ``(k, d)``."""
    return _indicator("stoch", (high, low, close), ("high", "low", "close"), (fastk, slowk, slowd), backend)


@annotate
def obv(close, volume, *, backend=None):
    """On-balance volume (TA-Lib OBV), starting from the first bar's volume; lookback 0."""
    return _indicator("obv", (close, volume), ("close", "volume"), (), backend)


@annotate
def vwap(high, low, close, volume, window, *, backend=None):
    """Rolling volume-weighted average of the typical price (H+L+C)/3 over ``window`` bars.

    Not in TA-Lib; follows its conventions for the lookback (window-1) and leading
    NaNs (skipped per series). A window that contains an interior NaN, or whose
    total volume is zero, gives NaN; the next clean window is computed normally.
    """
    return _indicator(
        "vwap",
        (high, low, close, volume),
        ("high", "low", "close", "volume"),
        (window,),
        backend,
    )


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


def _plan(spec: Mapping[str, Any] | None):
    """Validated work list ``[(output keys, indicator, params, index of the Bollinger entry
    whose middle band is this SMA or -1)]``; the default spec's plan is built once."""
    if spec is None and _DEFAULT_PLAN:
        return _DEFAULT_PLAN
    entries = [(key, fn, check_params_by_name(fn, params)) for key, (fn, params) in normalize_spec(spec).items()]
    plan = []
    for key, fn, params in entries:
        shared = -1
        if fn == "sma":
            for j, (_, other_fn, other) in enumerate(entries):
                # a scalar nstd: the middle band has exactly the SMA's shape
                if other_fn == "bollinger" and other[0] == params[0] and not other[1][1]:
                    shared = j
                    break
        plan.append((_output_keys(key, fn), fn, params, shared))
    return plan


_DEFAULT_PLAN: list = []
_DEFAULT_PLAN.extend(_plan(None))


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
    names = tuple(f for f in _FIELDS if any(f in _INPUTS[fn] for _, fn, _, _ in plan))
    fields = _ohlcv_fields(ohlcv, names)
    be, arrs, restore = resolve(tuple(fields[n] for n in names), names, backend)
    shape = arrs[0].shape
    batch, T = shape[:-1], shape[-1]
    n = math.prod(batch)
    todo = [i for i, entry in enumerate(plan) if entry[3] < 0]  # shared SMAs are not computed
    fns = [plan[i][1] for i in todo]
    grids = [_param_grid(plan[i][2]) for i in todo]
    rows = sum(indicator_specs.SPECS[fn][2] * g.shape[0] for fn, (g, _) in zip(fns, grids))
    check_allocation(rows * n * T, "features")
    flat = dict(zip(names, _flatten(be, arrs, n, T)))
    if T == 0 or n == 0:
        dtype = arrs[0].dtype
        outs = [be.xp.empty((indicator_specs.SPECS[fn][2], g.shape[0], n, T), dtype=dtype) for fn, (g, _) in zip(fns, grids)]
    else:
        outs = be.ops("indicators").compute_many(fns, [g for g, _ in grids], flat)
    computed = {
        i: out.reshape(out.shape[:1] + grid_shape + batch + (T,)) for i, out, (_, grid_shape) in zip(todo, outs, grids)
    }
    result: dict[str, Any] = {}
    for i, (keys, _, _, shared) in enumerate(plan):
        values = computed[shared][1:2] if shared >= 0 else computed[i]  # [1] of a Bollinger is its middle band
        for key, value in zip(keys, be.unstack(values)):
            result[key] = value if restore is None else restore(value)
    return result
