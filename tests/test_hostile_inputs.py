"""Hostile and careless input, swept over the whole public non-money API.

Classes of fault, each over every public function that can meet it:

* array arguments in every layout and dtype NumPy and pandas hand out (read-only,
  strided, negative strides, Fortran order, zero-stride broadcasts, big-endian,
  misaligned, lists, small integer types): the result equals the function's result on a
  plain C-contiguous native copy (the dtype conversions the package documents applied
  to it), and the input is never written (values and flags compared before and after);
* array arguments that must be refused (masked arrays, whose mask NumPy drops; complex,
  string, object, datetime dtypes; None; 0-d): ``TypeError``/``ValueError`` naming the
  argument;
* every integer parameter with values near and past the int64 range, negative, bool,
  float, str, None, ``Decimal`` and ``Fraction``: an error naming the parameter or a
  result, never a crash or a huge allocation (run in a subprocess whose address space
  is capped at 4 GiB, so an attempted multi-GB allocation fails the test instead of the
  machine);
* every real parameter with NaN, infinities, 1e308, -0.0, NumPy scalars, bools and
  strings: an error naming the parameter or a result, NumPy scalars giving the result of
  the Python float they equal;
* zero-stride inputs of absurd virtual size: refused before anything is copied;
* real-shaped DataFrames (vendor column names, int64 volume, tz-aware index,
  MultiIndex columns, copy-on-write read-only columns), checked against TA-Lib;
* the regressions found by this sweep, one test each, against independent oracles.

Run as a script (``python tests/test_hostile_inputs.py ints``) this module is the
subprocess side of the capped sweeps.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

import gpu_trader as gt
from gpu_trader import marketdata as md
from gpu_trader import risk

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

AS_LIMIT = 4 << 30  # address-space cap of the sweep subprocesses

# hostile data (inf, zero prices after an integer cast) makes NumPy warn inside the package
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# -- data --------------------------------------------------------------------------------
def _prices(seed: int, shape=(2, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, shape), axis=-1))


def _returns(seed: int, shape=(3, 60)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0005, 0.01, shape)


def _with_gaps(a: np.ndarray, seed: int) -> np.ndarray:
    """``a`` with a NaN and an infinity at random places (hostile data, same shape)."""
    out = a.copy()
    rng = np.random.default_rng(seed)
    flat = out.reshape(-1)
    flat[rng.integers(flat.size)] = np.nan
    flat[rng.integers(flat.size)] = np.inf
    return out


PRICES = _prices(0)
COV = np.array([[1.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.0]]) * 1e-4
VECS = np.random.default_rng(3).normal(size=(5, 8))
OHLCV = dict(high=PRICES * 1.01, low=PRICES * 0.99, close=PRICES, volume=np.ones_like(PRICES))


def _ip_index() -> gt.VectorIndex:
    """An inner-product index holding :data:`VECS` (ids 0..4)."""
    ix = gt.VectorIndex(8, metric="ip")
    ix.add(VECS)
    return ix


def _stored(vectors):
    """What a cosine index stores for ``vectors``: its ``(ids, vectors)``."""
    ix = gt.VectorIndex(8)
    ix.add(vectors)
    return ix.vectors()


def _feature_stream_warmup(close):
    return gt.FeatureStream(2).warmup({**OHLCV, "close": close})


# -- targets: one array argument of one public call ---------------------------------------
@dataclasses.dataclass(frozen=True)
class Target:
    """``call(array)`` runs a public function with ``array`` as its argument ``arg``; ``base(seed)``
    draws a valid value of that argument; ``gaps``: NaN/inf in it are legal data."""

    id: str
    arg: str
    call: object
    base: object
    gaps: bool = True
    frames: bool = True  # takes pandas with time along the index (vectors and weights do not)


TARGETS = [
    Target("sma", "x", lambda a: gt.sma(a, 5), _prices),
    Target("ema", "x", lambda a: gt.ema(a, 5), _prices),
    Target("wma", "x", lambda a: gt.wma(a, 5), _prices),
    Target("rsi", "x", lambda a: gt.rsi(a, 5), _prices),
    Target("macd", "x", lambda a: gt.macd(a, 3, 7, 2), _prices),
    Target("bollinger", "x", lambda a: gt.bollinger(a, 5, 1.5), _prices),
    Target("atr.high", "high", lambda a: gt.atr(a, PRICES * 0.99, PRICES, 5), lambda s: _prices(s) * 1.01),
    Target("stoch.low", "low", lambda a: gt.stoch(PRICES * 1.01, a, PRICES, 5, 3, 3), lambda s: _prices(s) * 0.99),
    Target("obv.volume", "volume", lambda a: gt.obv(PRICES, a), lambda s: _prices(s) * 10),
    Target("vwap.volume", "volume", lambda a: gt.vwap(PRICES * 1.01, PRICES * 0.99, PRICES, a, 5),
           lambda s: _prices(s) * 10),
    Target("features.close", "close", lambda a: gt.features({**OHLCV, "close": a}), _prices),
    Target("var_historical", "r", lambda a: risk.var_historical(a, 0.95), _returns),
    Target("var_parametric", "r", lambda a: risk.var_parametric(a, 0.95, method="cornish-fisher"), _returns),
    Target("cvar", "r", lambda a: risk.cvar(a, 0.95), _returns),
    Target("max_drawdown", "r", risk.max_drawdown, _returns),
    Target("sharpe", "r", risk.sharpe, _returns),
    Target("sortino", "r", risk.sortino, _returns),
    Target("calmar", "r", risk.calmar, _returns),
    Target("kelly_fraction", "r", risk.kelly_fraction, _returns),
    Target("risk_report", "r", risk.risk_report, _returns),
    Target("corr", "r", risk.corr, _returns),
    Target("cov", "r", risk.cov, _returns),
    Target("rolling_corr", "r", lambda a: risk.rolling_corr(a, 10), _returns),
    Target("ewma_cov", "r", lambda a: risk.ewma_cov(a, 10.0), _returns),
    Target("ledoit_wolf", "r", risk.ledoit_wolf, _returns),
    Target("momentum", "close", lambda a: gt.momentum(a, [3, 4], 8, cost_bps=1.0), _prices),
    Target("mean_reversion", "close", lambda a: gt.mean_reversion(a, 5, [1.0, 2.0]), _prices),
    Target("StrategyRunner.run", "close", lambda a: gt.StrategyRunner([gt.Momentum(3, 8)]).run(a), _prices),
    Target("StrategyStream.warmup", "history",
           lambda a: gt.StrategyRunner([gt.MeanReversion(5, 1.0)]).stream(n_symbols=2).warmup(a), _prices),
    Target("FeatureStream.warmup", "close", _feature_stream_warmup, _prices),
    Target("normalize", "x", gt.vectors.normalize, lambda s: np.random.default_rng(s).normal(size=(4, 8)),
           frames=False),
    Target("cosine.b", "b", lambda a: gt.vectors.cosine(VECS[:4], a),
           lambda s: np.random.default_rng(s).normal(size=(4, 8)), frames=False),
    Target("VectorIndex.add", "vectors", _stored, lambda s: np.random.default_rng(s).normal(size=(4, 8)), gaps=False,
           frames=False),
    Target("VectorIndex.search", "queries", lambda a: _ip_index().search(a, 3),
           lambda s: np.random.default_rng(s).normal(size=(4, 8)), gaps=False, frames=False),
    Target("quote_metrics.ask", "ask", lambda a: gt.quote_metrics(np.full(20, 99.5), a),
           lambda s: _prices(s, (20,))),
    Target("aggregate_bars.price", "price",
           lambda a: gt.aggregate_bars(np.arange(20) * 10**9, a, np.ones(20), timeframe="5s"),
           lambda s: _prices(s, (20,)), gaps=False),
    Target("var_monte_carlo.weights", "weights",
           lambda a: gt.var_monte_carlo(a, 0.0, COV, n_scenarios=2000, seed=7),
           lambda s: np.random.default_rng(s).uniform(1, 2, (2, 3)), gaps=False, frames=False),
]


# -- array variants -------------------------------------------------------------------------
def _misaligned(a: np.ndarray) -> np.ndarray:
    buf = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
    buf[...] = a
    assert not buf.flags.aligned or a.dtype.itemsize == 1
    return buf


def _read_only(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out.flags.writeable = False
    return out


def _ints(a: np.ndarray, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.nan_to_num(np.round(a), posinf=info.max, neginf=info.min), info.min, info.max).astype(dtype)


# Same values, other memory: the result must equal the result on a C-contiguous native copy.
LAYOUTS = {
    "read_only": _read_only,
    "fortran": np.asfortranarray,
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
    "negative_stride": lambda a: a[..., ::-1].copy()[..., ::-1],
    "zero_stride": lambda a: np.broadcast_to(a[..., :1], a.shape),
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "big_endian_float32": lambda a: a.astype(">f4"),
    "misaligned": _misaligned,
    "read_only_strided": lambda a: _read_only(np.repeat(a, 2, axis=-1))[..., ::2],
    "list": lambda a: a.tolist(),
    "tuple": lambda a: tuple(map(tuple, a.tolist())) if a.ndim == 2 else tuple(a.tolist()),
}
# Other dtypes: the result must equal the result on the values converted to float64.
CONVERSIONS = {
    "int8": lambda a: _ints(a, np.int8),
    "int64": lambda a: _ints(a, np.int64),
    "uint64": lambda a: _ints(a, np.uint64),
    "float16": lambda a: a.astype(np.float16),
    "longdouble": lambda a: a.astype(np.longdouble),
}
# Refused with a TypeError or ValueError naming the argument.
REFUSED = {
    "masked": lambda a: np.ma.masked_array(a, mask=np.eye(1, a.size, a.size // 2, dtype=bool).reshape(a.shape)),
    "complex": lambda a: a.astype(np.complex128),
    "str": lambda a: a.astype(str),
    "object_none": lambda a: np.where(np.eye(1, a.size, 1, dtype=bool).reshape(a.shape), None, a.astype(object)),
    "datetime": lambda a: np.zeros(a.shape, "datetime64[ns]"),
    "none": lambda a: None,
    "zero_d": lambda a: np.float64(a.reshape(-1)[0]),
}


def _plain(v) -> np.ndarray:
    """What the package makes of ``v`` before computing: a C-contiguous, native, writable copy."""
    arr = np.array(v)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def _arrays(res) -> list[np.ndarray]:
    """Every numeric array of a result (arrays, tuples, dicts, dataclasses, NamedTuples)."""
    if res is None or isinstance(res, (str, bool)):
        return []
    if dataclasses.is_dataclass(res):
        return [a for f in dataclasses.fields(res) for a in _arrays(getattr(res, f.name))]
    if isinstance(res, dict):
        return [a for k in sorted(res) for a in _arrays(res[k])]
    if isinstance(res, (tuple, list)):
        return [a for v in res for a in _arrays(v)]
    return [np.asarray(gt.to_numpy(res))]


def _outcome(call, arg):
    try:
        return _arrays(call(arg)), None
    except (TypeError, ValueError) as exc:
        return None, exc


def _assert_same(got, want, what: str, rtol: float = 1e-12) -> None:
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        assert g.shape == w.shape, what
        if g.dtype.kind in "fc" or w.dtype.kind in "fc":
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=0, equal_nan=True,
                                       err_msg=what)
        else:
            np.testing.assert_array_equal(g, w, err_msg=what)


def _snapshot(v):
    if isinstance(v, np.ndarray):
        return np.array(v, copy=True), v.flags.writeable, v.flags.c_contiguous
    return None


def _assert_untouched(v, snap, what: str) -> None:
    if snap is None:
        return
    values, writeable, contiguous = snap
    assert v.flags.writeable == writeable and v.flags.c_contiguous == contiguous, f"{what}: flags changed"
    np.testing.assert_array_equal(np.asarray(v), values, err_msg=f"{what}: input written")


def _check_layouts(t: Target, a: np.ndarray) -> None:
    for name, make in {**LAYOUTS, **CONVERSIONS}.items():
        v = make(a)
        snap = _snapshot(v)
        oracle = _plain(v) if name in LAYOUTS else np.asarray(v, dtype=np.float64)
        want, want_exc = _outcome(t.call, oracle)
        got, got_exc = _outcome(t.call, v)
        what = f"{t.id} with a {name} {t.arg}"
        if want_exc is not None:  # the data itself is refused (e.g. NaN in a covariance): alike
            assert type(got_exc) is type(want_exc), f"{what}: {got_exc!r} vs {want_exc!r}"
        else:
            assert got_exc is None, f"{what}: {got_exc!r}"
            _assert_same(got, want, what, rtol=1e-12 if name != "float16" else 1e-6)
        _assert_untouched(v, snap, what)


def _check_refusals(t: Target, a: np.ndarray) -> None:
    for name, make in REFUSED.items():
        v = make(a)
        snap = _snapshot(v)
        with pytest.raises((TypeError, ValueError)) as info:
            t.call(v)
        assert t.arg in str(info.value), f"{t.id} with a {name} {t.arg}: {info.value!r} does not name {t.arg!r}"
        _assert_untouched(v, snap, f"{t.id} with a {name} {t.arg}")


@pytest.mark.slow
@pytest.mark.parametrize("t", TARGETS, ids=[t.id for t in TARGETS])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), gaps=st.booleans())
def test_array_arguments_in_any_layout_and_dtype(t, seed, gaps):
    """Layout and dtype never change a result (beyond the documented conversion), and no
    input is written to or has its flags changed."""
    a = t.base(seed)
    _check_layouts(t, _with_gaps(a, seed) if gaps and t.gaps else a)


@pytest.mark.parametrize("t", TARGETS, ids=[t.id for t in TARGETS])
def test_array_arguments_refused_by_name(t):
    """Masked arrays (whose mask NumPy would drop), non-real dtypes, None and 0-d values are a
    TypeError/ValueError naming the argument."""
    _check_refusals(t, t.base(1))


@pytest.mark.parametrize("t", TARGETS, ids=[t.id for t in TARGETS])
def test_degenerate_lengths_and_values(t):
    """No bars, one bar, no rows, all NaN, all inf: a result or a ValueError naming the argument,
    never an internal error."""
    a = t.base(4)
    for label, v in (("T=0", a[..., :0]), ("T=1", a[..., :1]), ("no rows", a[:0]), ("all NaN", np.full_like(a, np.nan)),
                     ("all inf", np.full_like(a, np.inf))):
        try:
            _arrays(t.call(v))
        except ValueError as exc:
            assert t.arg in str(exc), f"{t.id} with {label}: {exc!r} does not name {t.arg!r}"


def _frame_of(a: np.ndarray):
    """``a`` ``(n, T)`` (or ``(T,)``) as a vendor would hand it out: time along a tz-aware
    index, one column per symbol; its values read-only (pandas copy-on-write)."""
    index = pd.date_range("2021-03-01", periods=a.shape[-1], freq="B", tz="Europe/London", name="Date")
    if a.ndim == 1:
        return pd.Series(a, index=index, name="AAPL")
    return pd.DataFrame(a.T, index=index, columns=[f"S{i}" for i in range(a.shape[0])])


def _values(arrays) -> np.ndarray:
    """All the numbers of a result, sorted (NaN last): equal for a result and its transposed,
    relabelled pandas twin."""
    return np.sort(np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])) if arrays else np.empty(0)


@pytest.mark.parametrize("t", [t for t in TARGETS if t.frames], ids=[t.id for t in TARGETS if t.frames])
def test_real_frames_give_the_numbers_of_their_arrays(t):
    """Item 26 for every function taking series: a DataFrame/Series (time along a tz-aware index,
    read-only values) gives the numbers its array gives."""
    a = t.base(2)
    frame = _frame_of(a)
    want = _values(_arrays(t.call(a)))
    got = _values(_arrays(t.call(frame)))
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True, err_msg=t.id)


def _masked(values) -> np.ma.MaskedArray:
    arr = np.asarray(values)
    return np.ma.masked_array(arr, mask=np.eye(1, arr.size, dtype=bool).reshape(arr.shape))


def test_every_other_array_argument_refuses_masks():
    """Item 15 beyond the swept arguments: ids, symbols, timestamps, sizes, option fields,
    outcomes, stream rows, Dask inputs. A masked array is refused by name, never read without
    its mask."""
    ts = np.arange(6) * 10**9
    ix = _ip_index()
    stream = gt.FeatureStream(2)
    sstream = gt.StrategyRunner([gt.Momentum(3, 8)]).stream(n_symbols=2)
    book = dict(asset=[0, 1], spot=[100.0, 50.0], strike=[100.0, 50.0], expiry=[0.5, 0.5], vol=[0.2, 0.3],
                quantity=[1.0, 2.0], rate=[0.0, 0.0], call=[True, False])
    calls = {
        "ids": [lambda: ix.remove(_masked([0, 1])), lambda: gt.VectorIndex(8).add(VECS[:2], ids=_masked([7, 8]))],
        "symbol": [lambda: gt.aggregate_bars(ts, np.ones(6), np.ones(6), _masked(np.zeros(6, int)), timeframe="1s")],
        "ts": [lambda: gt.quote_metrics(np.ones(6), np.ones(6) * 2, ts=_masked(ts), now=10**10, max_age=10**9)],
        "bid_size": [lambda: gt.quote_metrics(np.ones(6), np.ones(6) * 2, _masked(np.ones(6)))],
        "mu": [lambda: gt.var_monte_carlo(np.ones(3), _masked(np.zeros(3)), COV, n_scenarios=2000)],
        "a": [lambda: gt.vectors.cosine(_masked(VECS[:2]), VECS[:2])],
        "outcomes": [lambda: gt.PatternMemory(5).add(np.ones((2, 4)), _masked([1.0, 2.0]))],
        "row['close']": [lambda: stream.update({**{k: v[:, -1] for k, v in OHLCV.items()},
                                                "close": _masked(PRICES[:, -1])})],
        "close_row": [lambda: sstream.update(_masked(PRICES[:, -1]))],
        "input 0": [lambda: gt.distributed.indicator("sma", _masked(PRICES), window=3)],
    }
    for field in book:
        calls[f"options.{field}"] = [lambda f=field: gt.var_monte_carlo(
            np.ones(3), 0.0, COV, n_scenarios=2000, options=gt.EuropeanOptions(**{**book, f: _masked(book[f])}))]
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(TypeError, match="masked array") as info:
                fn()
            assert name in str(info.value), (name, info.value)


def test_mixed_read_only_and_converted_inputs_reach_compiled_code():
    """pandas 3 copy-on-write columns (read-only) next to a converted int64 volume (writable once
    converted) and a Fortran-order column: every multi-input function, against the all-float64
    result (numba types read-only and writable arrays apart)."""
    ro = [_read_only(x) for x in (PRICES * 1.01, PRICES * 0.99, PRICES)]
    vol = np.round(PRICES * 10).astype(np.int64)
    plain = (PRICES * 1.01, PRICES * 0.99, PRICES, vol.astype(np.float64))
    calls = {
        "atr": lambda h, lo, c, v: gt.atr(h, lo, c, 5),
        "stoch": lambda h, lo, c, v: gt.stoch(h, lo, c, 5, 3, 2),
        "obv": lambda h, lo, c, v: gt.obv(c, v),
        "vwap": lambda h, lo, c, v: gt.vwap(h, lo, c, v, 5),
        "features": lambda h, lo, c, v: gt.features(dict(high=h, low=lo, close=c, volume=v)),
    }
    for name, call in calls.items():
        want = _arrays(call(*plain))
        _assert_same(_arrays(call(*ro, vol)), want, name)
        _assert_same(_arrays(call(ro[0], np.asfortranarray(ro[1]), ro[2], _read_only(vol))), want, name)


class InlineClient:
    """The part of a ``distributed.Client`` that :func:`gpu_trader.distributed.var_monte_carlo`
    uses, run in this process (no cluster to start)."""

    def scheduler_info(self):
        return {"workers": {"inline": {}}}

    def scatter(self, data, **_):
        return data

    def submit(self, fn, *args, **_):
        return fn(*args)

    def gather(self, futures):
        return list(futures)


# -- integer parameters, in a capped subprocess ------------------------------------------------
HOSTILE_INTS = [2**63 - 1, 2**63, -2**63, 2**31, 0, -1, np.uint64(2**64 - 1), np.int8(-1), True, np.bool_(True),
                1.0, 1.5, float("nan"), "5", None, Decimal(5), Fraction(5)]


def _int_cases():
    """(label, parameter name, call(value)) for every integer parameter of the public API."""
    x = PRICES
    h, lo, v = x * 1.01, x * 0.99, np.ones_like(x)
    r = _returns(0)
    ts = np.arange(10) * 10**9
    mc = lambda **kw: gt.var_monte_carlo(np.ones(3), 0.0, COV, **{"n_scenarios": 2000, "seed": 1, **kw})  # noqa: E731
    pm = gt.PatternMemory(5)
    pm.add(np.random.default_rng(0).normal(size=(30, 4)), np.arange(30.0))
    quotes = dict(bid=np.ones(3), ask=np.full(3, 1.1), ts=np.zeros(3, np.int64))
    cases = [
        ("sma", "window", lambda b: gt.sma(x, b)), ("ema", "window", lambda b: gt.ema(x, b)),
        ("wma", "window", lambda b: gt.wma(x, b)), ("rsi", "window", lambda b: gt.rsi(x, b)),
        ("sma grid", "window", lambda b: gt.sma(x, [3, b])),
        ("macd", "fast", lambda b: gt.macd(x, fast=b)), ("macd", "slow", lambda b: gt.macd(x, slow=b)),
        ("macd", "signal", lambda b: gt.macd(x, signal=b)), ("bollinger", "window", lambda b: gt.bollinger(x, b)),
        ("atr", "window", lambda b: gt.atr(h, lo, x, b)), ("stoch", "fastk", lambda b: gt.stoch(h, lo, x, fastk=b)),
        ("stoch", "slowk", lambda b: gt.stoch(h, lo, x, slowk=b)),
        ("stoch", "slowd", lambda b: gt.stoch(h, lo, x, slowd=b)),
        ("vwap", "window", lambda b: gt.vwap(h, lo, x, v, b)),
        ("features", "window",
         lambda b: gt.features(dict(high=h, low=lo, close=x, volume=v), {"s": ("sma", {"window": b})})),
        ("corr", "min_periods", lambda b: risk.corr(r, min_periods=b)),
        ("cov", "min_periods", lambda b: risk.cov(r, min_periods=b)), ("cov", "ddof", lambda b: risk.cov(r, ddof=b)),
        ("rolling_corr", "window", lambda b: risk.rolling_corr(r, b)),
        ("rolling_corr", "min_periods", lambda b: risk.rolling_corr(r, 10, min_periods=b)),
        ("var_monte_carlo", "seed", lambda b: mc(seed=b)),
        ("var_monte_carlo", "chunk_size", lambda b: mc(chunk_size=b)),
        ("momentum", "fast", lambda b: gt.momentum(x, fast=b, slow=30)),
        ("momentum", "slow", lambda b: gt.momentum(x, fast=5, slow=b)),
        ("mean_reversion", "window", lambda b: gt.mean_reversion(x, window=b)),
        ("Momentum", "fast", lambda b: gt.Momentum(b, 30)), ("Momentum", "slow", lambda b: gt.Momentum(2, b)),
        ("MeanReversion", "window", lambda b: gt.MeanReversion(b)),
        ("StrategyRunner.stream", "n_symbols", lambda b: gt.StrategyRunner([gt.Momentum()]).stream(n_symbols=b)),
        ("FeatureStream", "n_symbols", lambda b: gt.FeatureStream(b)),
        ("VectorIndex", "dim", lambda b: gt.VectorIndex(b)), ("VectorIndex", "M", lambda b: gt.VectorIndex(4, M=b)),
        ("VectorIndex", "ef_construction", lambda b: gt.VectorIndex(4, ef_construction=b)),
        ("VectorIndex", "ef_search", lambda b: gt.VectorIndex(4, ef_search=b)),
        ("VectorIndex.search", "k", lambda b: _ip_index().search(VECS[0], b)),
        ("VectorIndex.search filtered", "k",
         lambda b: _ip_index().search(VECS[0], b, filter=lambda m: np.ones(5, bool))),
        ("VectorIndex.remove", "ids", lambda b: _ip_index().remove(b)),
        ("VectorIndex.add", "ids", lambda b: gt.VectorIndex(8).add(VECS[0], ids=b)),
        ("PatternMemory", "window", lambda b: gt.PatternMemory(b)),
        ("PatternMemory.query", "k", lambda b: pm.query(np.ones(4), b)),
        ("PatternMemory.distill", "n_clusters", lambda b: pm.distill(b)),
        ("PatternMemory.distill", "n_iter", lambda b: pm.distill(2, n_iter=b)),
        ("PatternMemory.distill", "seed", lambda b: pm.distill(2, seed=b)),
        ("PatternMemory.add_history", "horizon",
         lambda b: gt.PatternMemory(5).add_history(dict(high=h[0], low=lo[0], close=x[0], volume=v[0]), horizon=b)),
        ("window_patterns", "window", lambda b: gt.patterns.window_patterns(np, x, b)),
        ("TickIngestor", "capacity", lambda b: gt.TickIngestor(capacity=b)),
        ("QuoteIngestor", "capacity", lambda b: gt.QuoteIngestor(capacity=b)),
        ("aggregate_bars", "timeframe", lambda b: gt.aggregate_bars(ts, np.ones(10), np.ones(10), timeframe=b)),
        ("aggregate_bars", "n_symbols",
         lambda b: gt.aggregate_bars(ts, np.ones(10), np.ones(10), np.zeros(10, int), timeframe="1s", n_symbols=b)),
        ("parse_timeframe", "timeframe", md.parse_timeframe),
        ("BarAggregator", "timeframe", lambda b: gt.BarAggregator(b, ["A"])),
        ("BarAggregator", "symbols", lambda b: gt.BarAggregator("1s", b)),
        ("BarAggregator.update", "ts", lambda b: gt.BarAggregator("1s", ["A"]).update("A", b, 1.0, 1.0)),
        ("BarAggregator.update", "symbol", lambda b: gt.BarAggregator("1s", 3).update(b, 5, 1.0, 1.0)),
        ("BarAggregator.flush", "now", lambda b: gt.BarAggregator("1s", ["A"]).flush(b)),
        ("quote_metrics", "now", lambda b: gt.quote_metrics(**quotes, now=b, max_age=10)),
        ("quote_metrics", "max_age", lambda b: gt.quote_metrics(**quotes, now=5, max_age=b)),
        ("distributed.indicator", "window", lambda b: gt.distributed.indicator("sma", x, window=b).compute()),
        ("distributed.var_monte_carlo", "partitions",
         lambda b: gt.distributed.var_monte_carlo(InlineClient(), np.ones(3), 0.0, COV, partitions=b,
                                                 n_scenarios=2000, seed=1)),
    ]
    # n_scenarios of 2**31 is a valid (and long) simulation: its bound is checked with 2**41
    cases.append(("var_monte_carlo", "n_scenarios", lambda b: mc(n_scenarios=2**41 if b == 2**31 else b)))
    return cases


def _int_sweep() -> None:
    """The subprocess side: one JSON line per (case, value); a crash leaves the last one started."""
    for label, param, call in _int_cases():
        for value in HOSTILE_INTS:
            print(json.dumps({"start": label, "param": param, "value": repr(value)}), flush=True)
            try:
                call(value)
                outcome = "ok"
            except (TypeError, ValueError, KeyError) as exc:
                named = param in str(exc) or (param == "ids" and isinstance(exc, KeyError))
                outcome = "named" if named else f"unnamed {type(exc).__name__}: {str(exc)[:200]}"
            except Exception as exc:  # noqa: BLE001 - the sweep reports every other kind of failure
                outcome = f"internal {type(exc).__name__}: {str(exc)[:200]}"
            print(json.dumps({"case": label, "param": param, "value": repr(value), "outcome": outcome}), flush=True)


def _run_capped(mode: str, timeout: int = 600) -> list[dict]:
    """Run this module's ``mode`` sweep in a subprocess with RLIMIT_AS at :data:`AS_LIMIT`;
    its JSON lines, or a failure naming the case that crashed it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, timeout=timeout, env=env)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    last = lines[-1] if lines else None
    assert proc.returncode == 0, f"the {mode} sweep died (rc {proc.returncode}) at {last}: {proc.stderr[-2000:]}"
    return [line for line in lines if "outcome" in line]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS is POSIX")
def test_integer_parameters_bounded_before_compiled_code():
    """Every integer parameter with values at and past the int64 range, negative, bool, float,
    str, None, Decimal and Fraction: an error naming it or a result; no crash, no internal
    error, no allocation past 4 GiB."""
    results = _run_capped("ints")
    bad = [r for r in results if r["outcome"] not in ("ok", "named")]
    assert not bad, "\n".join(map(str, bad[:30]))
    # the sweep is not vacuous: the int64-overflowing values are refused everywhere
    for r in results:
        if r["value"] in ("-9223372036854775808", "True", "np.True_", "'5'", "Decimal('5')", "Fraction(5, 1)"):
            assert r["outcome"] == "named", r


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS is POSIX")
def test_huge_virtual_inputs_refused_before_any_copy():
    """Zero-stride views of absurd size (no memory until copied) are refused by name, in a
    process that could not hold even one of their copies."""
    results = _run_capped("huge")
    assert results and all(r["outcome"] == "named" for r in results), [r for r in results if r["outcome"] != "named"]


def _huge_cases():
    big = np.broadcast_to(np.float64(1.0), (10**5, 10**6))
    square = np.broadcast_to(np.float64(1.0), (10**5, 10**5))
    line = np.broadcast_to(np.int64(1), (10**11,))
    rows = {k: np.broadcast_to(np.float64(1.0), (2, 10**11)) for k in ("high", "low", "close", "volume")}
    return [
        ("sma", "x", lambda: gt.sma(big, 5)),
        ("sma float32", "x", lambda: gt.sma(np.broadcast_to(np.float32(1.0), big.shape), 5)),
        ("atr", "high", lambda: gt.atr(big, big, big, 5)),
        ("features", "high", lambda: gt.features(dict(high=big, low=big, close=big, volume=big))),
        ("sharpe", "r", lambda: risk.sharpe(big)),
        ("var_historical int", "r", lambda: risk.var_historical(np.broadcast_to(np.int64(1), big.shape))),
        ("corr", "r", lambda: risk.corr(big)),
        ("ewma_cov", "r", lambda: risk.ewma_cov(square, 5.0)),
        ("ledoit_wolf", "r", lambda: risk.ledoit_wolf(square)),
        ("momentum", "close", lambda: gt.momentum(big, 3, 8)),
        ("normalize", "x", lambda: gt.vectors.normalize(big)),
        ("cosine", "a", lambda: gt.vectors.cosine(big, big)),
        ("VectorIndex.add", "vectors",
         lambda: gt.VectorIndex(1000).add(np.broadcast_to(np.float64(1.0), (10**8, 1000)))),
        ("quote_metrics", "bid", lambda: gt.quote_metrics(big, big)),
        ("aggregate_bars", "ts", lambda: gt.aggregate_bars(line, line, line, timeframe="1s")),
        ("FeatureStream.warmup", "history", lambda: gt.FeatureStream(2).warmup(rows)),
        ("StrategyStream.warmup", "history",
         lambda: gt.StrategyRunner([gt.Momentum()]).stream(n_symbols=2).warmup(rows["close"])),
        ("var_monte_carlo", "cov", lambda: gt.var_monte_carlo(np.ones(10**5), 0.0, square, n_scenarios=1000)),
        ("PatternMemory.add_history", "high",
         lambda: gt.PatternMemory(5).add_history({k: v[0] for k, v in rows.items()})),
    ]


def _huge_sweep() -> None:
    for label, name, call in _huge_cases():
        print(json.dumps({"start": label}), flush=True)
        try:
            call()
            outcome = "accepted"
        except ValueError as exc:
            outcome = "named" if name in str(exc) else f"unnamed: {exc}"
        except Exception as exc:  # noqa: BLE001 - MemoryError, above all, is the failure looked for
            outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
        print(json.dumps({"case": label, "outcome": outcome}), flush=True)


# -- real parameters ---------------------------------------------------------------------------
HOSTILE_REALS = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, -0.0, np.float32("nan"),
                 np.float64("inf"), True, np.bool_(False), "2", None, Decimal("2"), complex(2, 0), [2.0, float("nan")]]


def _real_cases():
    """(label, parameter, call(value), a valid value): every real parameter of the public API."""
    x, r = PRICES, _returns(0)
    def mc(mu=0.0, **kw):
        return gt.var_monte_carlo(np.ones(3), mu, COV, **{"n_scenarios": 2000, "seed": 1, **kw})
    pm = gt.PatternMemory(5)
    pm.add(np.random.default_rng(0).normal(size=(30, 4)), np.arange(30.0))

    def option(**kw):
        fields = dict(asset=0, spot=100.0, strike=100.0, expiry=0.5, vol=0.2, quantity=10.0, rate=0.01)
        return mc(options=gt.EuropeanOptions(**{**fields, **kw}))

    return [
        ("bollinger", "nstd", lambda b: gt.bollinger(x, 5, b), 2.0),
        ("var_historical", "level", lambda b: risk.var_historical(r, b), 0.95),
        ("var_parametric", "level", lambda b: risk.var_parametric(r, b), 0.95),
        ("cvar", "level", lambda b: risk.cvar(r, b), 0.95),
        ("sharpe", "periods_per_year", lambda b: risk.sharpe(r, b), 252.0),
        ("sharpe", "risk_free", lambda b: risk.sharpe(r, 252, b), 0.01),
        ("sortino", "periods_per_year", lambda b: risk.sortino(r, b), 252.0),
        ("sortino", "required_return", lambda b: risk.sortino(r, 252, b), 0.001),
        ("calmar", "periods_per_year", lambda b: risk.calmar(r, b), 252.0),
        ("risk_report", "level", lambda b: risk.risk_report(r, b), 0.95),
        ("risk_report", "periods_per_year", lambda b: risk.risk_report(r, 0.99, b), 252.0),
        ("risk_report", "risk_free", lambda b: risk.risk_report(r, 0.99, 252, b), 0.01),
        ("ewma_cov", "halflife", lambda b: risk.ewma_cov(r, b), 10.0),
        ("momentum", "cost_bps", lambda b: gt.momentum(x, 3, 8, cost_bps=b), 2.0),
        ("mean_reversion", "nstd", lambda b: gt.mean_reversion(x, 5, b), 2.0),
        ("mean_reversion", "cost_bps", lambda b: gt.mean_reversion(x, 5, cost_bps=b), 2.0),
        ("MeanReversion", "nstd", lambda b: gt.MeanReversion(5, b), 2.0),
        ("var_monte_carlo", "level", lambda b: mc(level=b), 0.95),
        ("var_monte_carlo", "horizon", lambda b: mc(horizon=b), 2.0),
        ("var_monte_carlo", "mu", lambda b: mc(mu=b), 0.001),
        ("var_monte_carlo", "dof", lambda b: mc(dist="t", dof=b), 5.0),
        ("EuropeanOptions", "spot", lambda b: option(spot=b), 100.0),
        ("EuropeanOptions", "strike", lambda b: option(strike=b), 100.0),
        ("EuropeanOptions", "expiry", lambda b: option(expiry=b), 0.5),
        ("EuropeanOptions", "vol", lambda b: option(vol=b), 0.2),
        ("EuropeanOptions", "rate", lambda b: option(rate=b), 0.01),
        ("EuropeanOptions", "quantity", lambda b: option(quantity=b), 10.0),
        ("PatternMemory.add", "outcomes", lambda b: gt.PatternMemory(5).add(np.ones(4), b), 0.5),
        ("PatternMemory.distill", "tol", lambda b: pm.distill(2, tol=b), 1e-6),
        ("BarAggregator.update", "price", lambda b: gt.BarAggregator("1s", 1).update(0, 5, b, 1.0), 2.0),
        ("BarAggregator.update", "size", lambda b: gt.BarAggregator("1s", 1).update(0, 5, 1.0, b), 2.0),
    ]


@pytest.mark.parametrize("label, param, call, valid", _real_cases(), ids=[f"{c[0]}.{c[1]}" for c in _real_cases()])
def test_real_parameters(label, param, call, valid):
    """NaN, infinities, extremes, bools, strings, Decimal, complex: an error naming the
    parameter, or a result; NumPy scalars give the result of the Python float they equal."""
    for value in HOSTILE_REALS:
        try:
            res = call(value)
        except (TypeError, ValueError) as exc:
            assert param in str(exc), f"{label}({param}={value!r}): {exc!r} does not name {param!r}"
            continue
        assert not isinstance(value, (bool, np.bool_, str, Decimal, complex)) and value is not None, (
            f"{label}({param}={value!r}) accepted a non-real value")
        if value != value:  # NaN taken as data: it may only give NaN, never an invented number
            assert all(not np.isfinite(a).any() for a in _arrays(res) if a.dtype.kind == "f"), (label, param, value)
    want = _arrays(call(valid))
    for scalar in (np.float64(valid), np.float32(valid) if float(np.float32(valid)) == valid else np.int64(2)):
        if scalar == 2 and valid != 2:
            continue
        _assert_same(_arrays(call(scalar)), want, f"{label}({param}={scalar!r})")


def test_level_parameters_refuse_tail_probabilities_with_a_hint():
    """Item 16 for every level-like parameter (scalars and grids): 0.01 is a tail probability."""
    r = _returns(0)
    calls = {
        "var_historical": lambda lv: risk.var_historical(r, lv),
        "var_parametric": lambda lv: risk.var_parametric(r, lv),
        "cvar": lambda lv: risk.cvar(r, lv), "risk_report": lambda lv: risk.risk_report(r, lv),
        "var_monte_carlo": lambda lv: gt.var_monte_carlo(np.ones(3), 0.0, COV, level=lv, n_scenarios=2000, seed=1),
        "distributed.var_monte_carlo": lambda lv: gt.distributed.var_monte_carlo(
            InlineClient(), np.ones(3), 0.0, COV, level=lv, n_scenarios=2000),
    }
    for name, call in calls.items():
        for level in (0.01, np.float32(0.05), 0.4999, [0.99, 0.01]):
            with pytest.raises((ValueError, TypeError), match="level") as info:
                call(level)
            if info.type is ValueError:
                assert "confidence" in str(info.value), (name, level, info.value)


# -- real frames ---------------------------------------------------------------------------------


def _vendor_frame(close: np.ndarray, tz: str = "America/New_York"):
    """A frame as data vendors hand it out: capitalized columns, an int64 volume, an adjusted
    close, a tz-aware DatetimeIndex; its columns are read-only under copy-on-write."""
    idx = pd.date_range("2021-01-04", periods=close.size, freq="B", tz=tz, name="Date")
    return pd.DataFrame({"Open": close, "High": close * 1.01, "Low": close * 0.99, "Close": close,
                         "Adj Close": close * 0.98, "Volume": np.arange(close.size, dtype=np.int64) * 100 + 7},
                        index=idx)


def _talib_features(high, low, close, volume) -> dict[str, np.ndarray]:
    talib = pytest.importorskip("talib")
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, 0)
    line, signal, hist = talib.MACD(close, 12, 26, 9)
    k, d = talib.STOCH(high, low, close, 5, 3, 0, 3, 0)
    return {"sma_20": talib.SMA(close, 20), "ema_20": talib.EMA(close, 20), "rsi_14": talib.RSI(close, 14),
            "macd_line": line, "macd_signal": signal, "macd_hist": hist, "bb_upper": upper, "bb_middle": middle,
            "bb_lower": lower, "atr_14": talib.ATR(high, low, close, 14), "stoch_k": k, "stoch_d": d,
            "obv": talib.OBV(close, volume)}


def _assert_matches_talib(got: dict, high, low, close, volume) -> None:
    for key, want in _talib_features(high, low, close, volume).items():
        np.testing.assert_allclose(np.asarray(got[key], dtype=np.float64), want, rtol=1e-9, atol=1e-9,
                                   equal_nan=True, err_msg=key)


def test_vendor_frame_features_match_talib():
    """Item 26: a real-shaped frame (Open/High/Low/Close/Volume, int64 volume, tz index, copy-on-write)."""
    close = _prices(5, (120,))
    df = _vendor_frame(close)
    before = df.copy(deep=True)
    out = gt.features(df)
    assert isinstance(out["rsi_14"], pd.Series) and out["rsi_14"].index.equals(df.index)
    _assert_matches_talib(out, close * 1.01, close * 0.99, close, df["Volume"].to_numpy(np.float64))
    pd.testing.assert_frame_equal(df, before)
    stream = gt.FeatureStream(1)
    last = stream.warmup(df)
    for key, value in last.items():
        np.testing.assert_array_equal(value, np.asarray(out[key])[-1:], err_msg=key)


def test_multiindex_columns_frame_computes_every_ticker():
    """A several-ticker download (MultiIndex columns: field, ticker): features per ticker, TA-Lib-exact."""
    closes = _prices(6, (2, 120))
    frames = {t: _vendor_frame(c) for t, c in zip(("AAPL", "MSFT"), closes)}
    mi = pd.concat(frames, axis=1).swaplevel(axis=1).sort_index(axis=1)
    out = gt.features(mi)
    assert list(out["rsi_14"].columns) == ["AAPL", "MSFT"]
    for t, c in zip(("AAPL", "MSFT"), closes):
        vol = frames[t]["Volume"].to_numpy(np.float64)
        _assert_matches_talib({k: v[t] for k, v in out.items()}, c * 1.01, c * 0.99, c, vol)
    with pytest.raises(ValueError, match="first level"):
        gt.features(mi.swaplevel(axis=1))  # tickers first: refused, saying what is expected


def test_pandas_inputs_must_share_labels():
    """Inputs are combined by position: frames whose columns or index differ are refused by name,
    never mixed silently."""
    df = pd.DataFrame(_prices(7).T, columns=["A", "B"], index=pd.date_range("2022-01-03", periods=40, freq="B"))
    want = gt.atr(df * 1.01, df * 0.99, df, 5)
    np.testing.assert_allclose(want.to_numpy().T, gt.atr(df.to_numpy().T * 1.01, df.to_numpy().T * 0.99,
                                                         df.to_numpy().T, 5), rtol=0, equal_nan=True)
    with pytest.raises(ValueError, match="low and high have different columns"):
        gt.atr(df * 1.01, (df * 0.99)[["B", "A"]], df, 5)
    with pytest.raises(ValueError, match="close and high have different index"):
        gt.atr(df * 1.01, df * 0.99, df.iloc[::-1], 5)
    with pytest.raises(ValueError, match="volume and high have different index"):
        gt.features({"high": df["A"], "low": df["A"], "close": df["A"], "volume": df["A"].shift(1, freq="B")})
    with pytest.raises(ValueError, match=r"history\['close'\] and history\['high'\] have different columns"):
        gt.FeatureStream(2).warmup({"high": df, "low": df, "close": df[["B", "A"]], "volume": df})
    s = df["A"]
    with pytest.raises(ValueError, match="size and ts have different index"):
        gt.aggregate_bars(pd.Series(np.arange(40) * 10**9, index=s.index), s, s.iloc[::-1], timeframe="2s")
    with pytest.raises(ValueError, match="ask and bid have different index"):
        gt.quote_metrics(s, s.iloc[::-1] + 1)
    # unlabelled (default RangeIndex) axes are positional: they match any labels
    plain = pd.DataFrame(df.to_numpy())
    np.testing.assert_array_equal(gt.atr(plain * 1.01, plain * 0.99, df, 5).to_numpy(), want.to_numpy())


@pytest.mark.parametrize("dtype", ["Float64", "Int64", "float64[pyarrow]"])
def test_nullable_columns_are_missing_values(dtype):
    """pandas nullable and Arrow columns: ``pd.NA`` is a missing value (NaN), as TA-Lib sees it."""
    talib = pytest.importorskip("talib")
    if "pyarrow" in dtype:
        pytest.importorskip("pyarrow")
    close = np.round(_prices(8, (60,)))
    s = pd.Series(close).astype(dtype)
    s.iloc[30] = pd.NA
    want = close.copy()
    want[30] = np.nan
    np.testing.assert_allclose(gt.sma(s, 5).to_numpy(np.float64), talib.SMA(want, 5), rtol=1e-12, equal_nan=True)


# -- regressions found by the sweeps -----------------------------------------------------------
def test_quote_metrics_of_one_quote_as_a_scalar():
    """0-d bid/ask (one quote given as scalars) equal the one-element batch."""
    one = gt.quote_metrics(np.array([99.5]), np.array([100.5]))
    for bid, ask in ((99.5, 100.5), (np.float64(99.5), np.float32(100.5)), (np.array(99.5), np.array(100.5))):
        got = gt.quote_metrics(bid, ask)
        for g, w in zip(got, one):
            assert np.shape(g) == () and np.asarray(g) == w[0]
    assert float(gt.quote_metrics(99.5, 100.5).spread_bps) == pytest.approx(1.0 / 100.0 * 1e4)


def test_timestamps_from_real_frames():
    """aggregate_bars/quote_metrics read a tz-aware index or column in UTC (the oracle: the epoch
    nanoseconds computed by hand); missing timestamps are refused, never counted as 0 or NaN."""
    # across New York's switch to summer time: the wall clock jumps an hour, UTC does not
    idx = pd.date_range("2024-03-10 06:59:57", periods=6, freq="s", tz="UTC").tz_convert("America/New_York")
    utc_ns = np.array([(t.tz_convert("UTC").tz_localize(None) - pd.Timestamp(0)).value for t in idx])
    price = np.arange(1.0, 7.0)
    want = gt.aggregate_bars(utc_ns, price, np.ones(6), timeframe="2s")
    for ts in (idx, pd.Series(idx), pd.Series(idx, index=list("abcdef"))):
        got = gt.aggregate_bars(ts, price, np.ones(6), timeframe="2s")
        _assert_same(_arrays(got), _arrays(want), type(ts).__name__)
    with pytest.raises(ValueError, match="ts contains missing"):
        gt.aggregate_bars(pd.Series(utc_ns).astype("Int64").where(price != 3.0), price, np.ones(6), timeframe="1s")
    with pytest.raises(ValueError, match="ts contains missing"):
        gt.quote_metrics(price, price + 1, ts=pd.Series(idx).where(price != 2.0), now=0, max_age=1)
    with pytest.raises(TypeError, match="ts is a masked array"):
        gt.aggregate_bars(np.ma.masked_array(utc_ns, mask=price == 1.0), price, np.ones(6), timeframe="1s")


def test_masked_arrays_never_reach_the_bar_kernel():
    """A masked minimum used to set the grid's first bar while the kernel read the masked value."""
    ts = np.ma.masked_array(np.arange(5) * 10**9, mask=[1, 0, 0, 0, 0])
    with pytest.raises(TypeError, match="ts is a masked array"):
        gt.aggregate_bars(ts, np.ones(5), np.ones(5), timeframe="1s")
    with pytest.raises(TypeError, match="size is a masked array"):
        gt.aggregate_bars(ts.data, np.ones(5), np.ma.masked_array(np.ones(5)), timeframe="1s")


def test_feature_spec_output_keys_never_collide():
    x = dict(high=PRICES, low=PRICES, close=PRICES, volume=PRICES)
    with pytest.raises(ValueError, match="'m_line'"):
        gt.features(x, {"m_line": ("sma", {"window": 3}), "m": ("macd", {})})
    with pytest.raises(ValueError, match="'1'"):
        gt.features(x, {1: ("sma", {"window": 3}), "1": ("ema", {"window": 3})})
    with pytest.raises(TypeError, match="named by a str"):
        gt.features(x, {"a": (["sma"], {"window": 3})})
    with pytest.raises(TypeError, match="named by a str"):
        gt.distributed.indicator(["sma"], PRICES, window=3)
    with pytest.raises(ValueError, match="spec"):
        gt.FeatureStream(2, {"m_line": ("sma", {"window": 3}), "m": ("macd", {})})


def test_flags_are_bools():
    """``squeeze``, ``mmap``, ``contributions``: True/False (NumPy bools too), never a truthy string."""
    runner = gt.StrategyRunner([gt.Momentum(3, 8)])
    for flag in ("no", None, 0):
        with pytest.raises(TypeError, match="squeeze"):
            gt.StrategyStream(runner, 2, squeeze=flag)
    assert gt.StrategyStream(runner, 2, squeeze=np.True_).update(PRICES[:, 0]).shape == (2,)


def test_monte_carlo_amounts_flags_and_overflow():
    base = dict(n_scenarios=2000, seed=3)
    for kw, arg in (({"mu": True}, "mu"), ({"weights": np.ones(3, bool)}, "weights")):
        args = {"weights": np.ones(3), "mu": 0.0, **kw}
        with pytest.raises(TypeError, match=f"{arg} must hold real numbers"):
            gt.var_monte_carlo(args["weights"], args["mu"], COV, **base)
    book = gt.EuropeanOptions(asset=0, spot=100.0, strike=100.0, expiry=0.5, vol=0.2, quantity=np.array([True]))
    with pytest.raises(TypeError, match="options.quantity"):
        gt.var_monte_carlo(np.ones(3), 0.0, COV, options=book, **base)
    for flag in ("no", None, 0, 1.0):
        with pytest.raises(TypeError, match="contributions"):
            gt.var_monte_carlo(np.ones(3), 0.0, COV, contributions=flag, **base)
    for dtype in (None, object(), "complex128", ">f8"):
        with pytest.raises(TypeError, match="dtype"):
            gt.var_monte_carlo(np.ones(3), 0.0, COV, dtype=dtype, **base)
    with pytest.raises(ValueError, match="overflow"):
        gt.var_monte_carlo(np.ones(3), 1e308, COV, **base)
    with pytest.raises(ValueError, match="options"):
        book = gt.EuropeanOptions(0, 100.0, 100.0, 1.0, 0.2, 1.0, rate=-1e300)  # exp(-rate * expiry) overflows
        gt.var_monte_carlo(np.ones(3), 0.0, COV, options=book, **base)
    # the flags that are accepted give the documented result: no contributions computed
    res = gt.var_monte_carlo(np.ones(3), 0.0, COV, contributions=np.False_, **base)
    assert res.contributions is None and np.isfinite(res.var)


def test_pattern_memory_refuses_bad_input_up_front():
    with pytest.raises(ValueError, match="unknown indicator"):
        gt.PatternMemory(5, spec={"x": ("nope", {})})
    with pytest.raises(ValueError, match="dtype"):
        gt.PatternMemory(5, dtype="float16")
    with pytest.raises(ValueError, match="kind"):
        gt.PatternMemory(5, kind="annoy")
    with pytest.raises(ValueError, match="backend"):
        gt.PatternMemory(5, backend="tpu")
    pm = gt.PatternMemory(5)
    for patterns, error in ((5.0, ValueError), (None, TypeError), ([[1.0, 2.0], [3.0]], TypeError),
                            (np.ma.masked_array(np.ones(4)), TypeError)):
        with pytest.raises(error, match="patterns"):
            pm.add(patterns, 1.0)
    with pytest.raises(TypeError, match="outcomes"):
        pm.add(np.ones(4), True)
    with pytest.raises(ValueError, match="NaN"):
        pm.add(np.full(4, np.nan), 1.0)  # the first add fails: the memory stays empty
    assert len(pm) == 0 and pm.index is None
    with pytest.raises(ValueError, match="empty"):
        pm.query(np.ones(4), 1)
    ids = pm.add(np.eye(4)[:2], [0.5, -0.5])
    scores, found, outcomes = pm.query(np.array([1.0, 0.1, 0, 0]), 2)
    assert found.tolist() == ids.tolist() and outcomes.tolist() == [0.5, -0.5]
    with pytest.raises(ValueError, match=r"feats must have shape \(n_features, T\)"):
        gt.patterns.window_patterns(np, np.ones(5), 2)


def test_distributed_indicator_takes_pandas_time_along_the_index():
    """A pandas frame used to be read as (T, n) with time last: SMA across the symbols.
    Oracle: pandas' own rolling mean."""
    df = pd.DataFrame(_prices(9).T, columns=["A", "B"], index=pd.date_range("2020", periods=40, tz="UTC"))
    got = gt.distributed.indicator("sma", df, window=5).compute()
    pd.testing.assert_frame_equal(got, df.rolling(5).mean(), check_exact=False, rtol=1e-12)
    got = gt.distributed.indicator("sma", df["A"], window=5).compute()
    pd.testing.assert_series_equal(got, df["A"].rolling(5).mean(), check_exact=False, rtol=1e-12)
    with pytest.raises(ValueError, match="input 0 must have at least one dimension"):
        gt.distributed.indicator("sma", np.float64(1.0), window=5)
    with pytest.raises(TypeError, match="plan"):
        gt.distributed.merge_bytes(None, 2)


def test_vector_index_paths_and_metadata(tmp_path):
    ix = gt.VectorIndex(4)
    ix.add(np.eye(4)[:3], metadata={"n": np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
                                    "s": pd.Series(["a", None, "c"], dtype="string"),
                                    "i": pd.Series([1, None, 3], dtype="Int64")})
    meta = {k: c.tolist() for k, c in ix._snap.meta.items()}
    assert meta == {"n": [1, None, 3], "s": ["a", None, "c"], "i": [1, None, 3]}
    path = os.fsencode(tmp_path / "index.gtv")
    ix.save(path)  # a bytes path, as os.PathLike allows
    back = gt.VectorIndex.load(path)
    assert {k: c.tolist() for k, c in back._snap.meta.items()} == meta
    np.testing.assert_array_equal(back.vectors()[1], ix.vectors()[1])
    for bad, error in ((None, TypeError), (3, TypeError), ("", ValueError), (str(tmp_path / "a\0b"), ValueError)):
        with pytest.raises(error, match="path"):
            ix.save(bad)
        with pytest.raises(error, match="path"):
            gt.VectorIndex.load(bad)
    with pytest.raises(TypeError, match="mmap"):
        gt.VectorIndex.load(path, mmap="no")


def test_constant_returns_ratios_follow_empyrical():
    """Item 17 over every ratio: constant returns give empyrical's inf/NaN, never 1e16."""
    ep = pytest.importorskip("empyrical")
    for c in (0.001, -0.001, 0.0, 1 / 3 * 0.01, 0.1):
        r = np.full(40, c)
        report = risk.risk_report(r)
        for name, ours, theirs in (("sharpe", risk.sharpe, ep.sharpe_ratio),
                                   ("sortino", risk.sortino, ep.sortino_ratio),
                                   ("calmar", risk.calmar, ep.calmar_ratio)):
            want = float(theirs(r))
            for got in (float(ours(r)), float(report[name])):
                assert got == want or (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9), (
                    name, c, got, want)
        # Kelly needs a win and a loss: a constant series has at most one of them
        assert math.isnan(float(risk.kelly_fraction(r))) and math.isnan(float(report["kelly_fraction"]))


if __name__ == "__main__":  # the subprocess side of the capped sweeps
    import resource
    import warnings

    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    warnings.simplefilter("ignore")
    {"ints": _int_sweep, "huge": _huge_sweep}[sys.argv[1]]()


def test_work_memory_refusals_name_the_call_and_its_size(monkeypatch):
    """The refusal text is formatted only when a call is refused (it is built lazily on the
    one-series hot path) and still names the call and its size."""
    from gpu_trader._internal import validation

    monkeypatch.setattr(validation, "WORK_MEMORY_LIMIT", 64)
    r = np.random.default_rng(0).normal(0, 0.01, (3, 50))
    with pytest.raises(ValueError, match=r"on 3 series, 1 levels would need about .* GiB"):
        gt.risk.cvar(r)
    with pytest.raises(ValueError, match=r"of 3 series would need about .* GiB"):
        gt.correlation.corr(r)
