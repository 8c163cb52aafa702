"""The ``features`` suite: indicators (docs/design.md#benchmarks-and-targets).

Cases: each indicator on one series of 20, 100 and 1000 bars, with TA-Lib's call on
the same series as reference (the 100-bar cases' targets ask the CPU to be at least as
fast: ``features.<name>_100``); the full ``features()`` pipeline on 100 bars (reference:
TA-Lib computing the same set, VWAP with NumPy); one ``FeatureStream.update`` of one
symbol in its fastest documented form, a ``(5,)`` row and a preallocated ``out`` (reference
``talib_stream``: TA-Lib 0.8's O(1) stream handles for the same set, VWAP as two rolling
``SUM`` handles, returning the values as a tuple; n/a with an older TA-Lib); and each indicator over
a batch of symbols x 2520 bars (``BATCH_SHAPES``: 200 quick, 500 standard, 2000 full)
with TA-Lib looped over symbols (and ``bottleneck.move_mean`` for SMA) as references and
a copy of the inputs as the bandwidth yardstick (its CPU multiple judged at the full size only:
smaller inputs copy from cache, ``features.batched*_small``).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import gpu_trader

from ..data import FIELDS, random_walk_ohlcv
from ..harness import Reference, SkipCase, Workload

__all__ = ["workloads"]

SINGLE_BARS = (20, 100, 1000)
PEER_BARS = 100  # the single-series length whose target includes the TA-Lib ratio
BATCH_SHAPES = {"quick": (200, 2520), "standard": (500, 2520), "full": (2000, 2520)}
FULL_FEATURES_BARS = 100
STREAM_HISTORY_BARS = 100
STREAM_ROWS = 4096  # distinct new bars the streaming case cycles through
ITEMSIZE = 8  # float64 bytes


@dataclass(frozen=True)
class _Indicator:
    """One public indicator call and its TA-Lib twin ``talib(talib_module, *arrays)``; ``kwargs``:
    the call's parameters, in signature order."""

    label: str
    fn: str
    fields: tuple[str, ...]
    n_out: int
    talib: Callable[..., Any] | None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _sma(window: int) -> _Indicator:
    return _Indicator(f"sma({window})", "sma", ("close",), 1, lambda ta, c: ta.SMA(c, window), {"window": window})


_EMA = _Indicator("ema(20)", "ema", ("close",), 1, lambda ta, c: ta.EMA(c, 20), {"window": 20})
_RSI = _Indicator("rsi(14)", "rsi", ("close",), 1, lambda ta, c: ta.RSI(c, 14), {"window": 14})
_MACD = _Indicator("macd(12,26,9)", "macd", ("close",), 3, lambda ta, c: ta.MACD(c, 12, 26, 9),
                   {"fast": 12, "slow": 26, "signal": 9})
_BOLLINGER = _Indicator("bollinger(20,2)", "bollinger", ("close",), 3,
                        lambda ta, c: ta.BBANDS(c, 20, 2.0, 2.0, 0), {"window": 20, "nstd": 2.0})
_ATR = _Indicator("atr(14)", "atr", ("high", "low", "close"), 1,
                  lambda ta, h, l, c: ta.ATR(h, l, c, 14), {"window": 14})
_STOCH = _Indicator("stoch(5,3,3)", "stoch", ("high", "low", "close"), 2,
                    lambda ta, h, l, c: ta.STOCH(h, l, c, 5, 3, 0, 3, 0))
_OBV = _Indicator("obv", "obv", ("close", "volume"), 1, lambda ta, c, v: ta.OBV(c, v))
_VWAP = _Indicator("vwap(20)", "vwap", ("high", "low", "close", "volume"), 1, None, {"window": 20})

SINGLE = [(_sma(w), "features.sma") for w in (10, 20, 50)] + [
    (_EMA, "features.ema"), (_RSI, "features.rsi"), (_MACD, "features.macd"), (_BOLLINGER, "features.bollinger"),
    (_ATR, "features.atr"),
]
BATCHED = [
    (_sma(20), "features.batched_sma"), (_EMA, "features.batched"), (_RSI, "features.batched"),
    (_MACD, "features.batched"), (_BOLLINGER, "features.batched"), (_ATR, "features.batched"),
    (_STOCH, "features.batched"), (_OBV, "features.batched"), (_VWAP, "features.batched_vwap"),
]


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def _looped(fn: Callable[..., Any], ta: Any, rows: list[tuple[np.ndarray, ...]]) -> list[Any]:
    """TA-Lib over the symbols, keeping every result as a user would (discarding them would
    let malloc hand the same cache-hot buffer back on every row, which our batch cannot do)."""
    return [fn(ta, *row) for row in rows]


def _gt_setup(ind: _Indicator, shape: tuple[int, ...]) -> Callable[[Any], Any]:
    """Our call on the same data, parameters positional as in the TA-Lib twin (``ind.kwargs`` is
    in signature order)."""
    def setup(be):
        data = random_walk_ohlcv(shape)
        arrays = [be.asarray(data[f]) for f in ind.fields]
        return functools.partial(getattr(gpu_trader, ind.fn), *arrays, *ind.kwargs.values(), backend=be.name)

    return setup


def _talib_reference(ind: _Indicator, shape: tuple[int, ...]) -> Reference:
    """TA-Lib on the same data: one call for one series, a Python loop over symbols for a batch."""

    def setup():
        import talib

        arrays = [random_walk_ohlcv(shape)[f] for f in ind.fields]
        if len(shape) == 1:
            return functools.partial(ind.talib, talib, *arrays)
        rows = [tuple(a[i] for a in arrays) for i in range(shape[0])]
        return functools.partial(_looped, ind.talib, talib, rows)

    return Reference("talib", setup, _call, requires="talib")


def _bottleneck_sma_reference(window: int, shape: tuple[int, ...]) -> Reference:
    def setup():
        import bottleneck

        return functools.partial(bottleneck.move_mean, random_walk_ohlcv(shape)["close"], window, axis=-1)

    return Reference("bottleneck", setup, _call, requires="bottleneck")


def _single(ind: _Indicator, target: str, bars: int) -> Workload:
    shape = (bars,)
    return Workload(
        name=f"{ind.label} {bars} bars", sizes={"bars": bars},
        setup=_gt_setup(ind, shape), run=_call, items=bars, target=f"{target}_{bars}" if bars == PEER_BARS else target,
        references=(_talib_reference(ind, shape),),
    )


def _batched(ind: _Indicator, target: str, shape: tuple[int, int], size: str) -> Workload:
    """One indicator over ``shape`` (symbols x bars); below the full size the ``<target>_small``
    targets apply (no copy multiple: those inputs copy from cache), except for VWAP, whose copy of
    four inputs outweighs its one output at every size."""
    refs = []
    if ind.talib is not None:
        refs.append(_talib_reference(ind, shape))
    if ind.fn == "sma":
        refs.append(_bottleneck_sma_reference(ind.kwargs["window"], shape))
    n, bars = shape
    return Workload(
        name=f"{ind.label} {n}x{bars}", sizes={"symbols": n, "bars": bars},
        setup=_gt_setup(ind, shape), run=_call, items=n * bars,
        target=target if size == "full" or ind.talib is None else f"{target}_small",  # VWAP: 1 output, 4 inputs
        references=tuple(refs),
        copy_inputs=lambda state: state.args[:len(ind.fields)],  # the input arrays, not the parameters
        bytes_moved=(len(ind.fields) + ind.n_out) * n * bars * ITEMSIZE,
    )


def _numpy_vwap(high, low, close, volume, window: int) -> np.ndarray:
    """Rolling VWAP of the typical price via cumulative sums; NaN for the first window-1 bars."""
    pv = np.concatenate(([0.0], np.cumsum((high + low + close) / 3.0 * volume)))
    vv = np.concatenate(([0.0], np.cumsum(volume)))
    out = np.full(close.shape, np.nan)
    out[window - 1:] = (pv[window:] - pv[:-window]) / (vv[window:] - vv[:-window])
    return out


def _talib_features(ta, high, low, close, volume) -> None:
    """The default ``features()`` spec computed with TA-Lib (VWAP, not in TA-Lib, with NumPy)."""
    ta.SMA(close, 20)
    ta.EMA(close, 20)
    ta.RSI(close, 14)
    ta.MACD(close, 12, 26, 9)
    ta.BBANDS(close, 20, 2.0, 2.0, 0)
    ta.ATR(high, low, close, 14)
    ta.STOCH(high, low, close, 5, 3, 0, 3, 0)
    ta.OBV(close, volume)
    _numpy_vwap(high, low, close, volume, 20)


def _full_features(bars: int) -> Workload:
    shape = (bars,)

    def setup(be):
        data = random_walk_ohlcv(shape)
        ohlcv = {f: be.asarray(data[f]) for f in FIELDS}
        return functools.partial(gpu_trader.features, ohlcv, backend=be.name)

    def reference_setup():
        import talib

        data = random_walk_ohlcv(shape)
        return functools.partial(_talib_features, talib, *(data[f] for f in ("high", "low", "close", "volume")))

    return Workload(
        name=f"features() {bars} bars", sizes={"bars": bars},
        setup=setup, run=_call, items=bars, target="features.full",
        references=(Reference("talib", reference_setup, _call, requires="talib"),),
    )


def _stream_setup(be):
    """One symbol's stream in its fastest documented form: each new bar a ``(5,)`` float64 OHLCV
    row, the values written into one preallocated ``(len(keys), 1)`` array (``update(row, out=)``)."""
    if be.name != "cpu":
        raise SkipCase("the streaming case runs on the cpu backend only")
    stream_cls = getattr(gpu_trader, "FeatureStream", None)
    if stream_cls is None:
        raise SkipCase("gpu_trader.FeatureStream is not available yet")
    data = random_walk_ohlcv((1, STREAM_HISTORY_BARS + STREAM_ROWS), seed=1)
    stream = stream_cls(1)
    stream.warmup({f: data[f][:, :STREAM_HISTORY_BARS] for f in FIELDS})
    rows = [
        np.array([data[f][0, t] for f in FIELDS])
        for t in range(STREAM_HISTORY_BARS, STREAM_HISTORY_BARS + STREAM_ROWS)
    ]
    next_row = itertools.cycle(rows).__next__
    out = np.empty((len(stream.keys), 1))
    return lambda: stream.update(next_row(), out=out)


def _talib_stream_setup() -> Callable[[], tuple[float, ...]]:
    """TA-Lib 0.8's stream handles for the default spec, opened on the streaming case's history,
    fed the same cycle of new bars; one call updates every handle and returns the values in the
    order of ``FeatureStream.keys`` (a tuple of floats: one symbol; the same work as the stream
    writing them into its ``out`` array)."""
    import talib
    from talib import stream

    if not hasattr(stream, "Stream"):
        raise SkipCase(f"TA-Lib {talib.__version__} has no stream handles (TA-Lib >= 0.8)")
    data = random_walk_ohlcv((1, STREAM_HISTORY_BARS + STREAM_ROWS), seed=1)
    high, low, close, volume = (np.ascontiguousarray(data[f][0]) for f in ("high", "low", "close", "volume"))
    pv = (high + low + close) / 3.0 * volume
    h, l, c, v, p = (a[:STREAM_HISTORY_BARS] for a in (high, low, close, volume, pv))
    sma, ema, rsi = stream.SMA(c, 20), stream.EMA(c, 20), stream.RSI(c, 14)
    macd, bbands = stream.MACD(c, 12, 26, 9), stream.BBANDS(c, 20, 2.0, 2.0, 0)
    atr, stoch, obv = stream.ATR(h, l, c, 14), stream.STOCH(h, l, c, 5, 3, 0, 3, 0), stream.OBV(c, v)
    pv_sum, v_sum = stream.SUM(p, 20), stream.SUM(v, 20)
    rows = list(zip(*(a[STREAM_HISTORY_BARS:].tolist() for a in (high, low, close, volume))))
    next_row = itertools.cycle(rows).__next__

    def update() -> tuple[float, ...]:
        hi, lo, cl, vo = next_row()
        return (sma.update(cl), ema.update(cl), rsi.update(cl), *macd.update(cl), *bbands.update(cl),
                atr.update(hi, lo, cl), *stoch.update(hi, lo, cl), obv.update(cl, vo),
                pv_sum.update((hi + lo + cl) / 3.0 * vo) / v_sum.update(vo))

    return update


def _stream_update() -> Workload:
    return Workload(
        name="FeatureStream.update 1 symbol", sizes={"symbols": 1, "history_bars": STREAM_HISTORY_BARS},
        setup=_stream_setup, run=_call, items=1, unit="update", target="features.stream",
        references=(Reference("talib_stream", _talib_stream_setup, _call, requires="talib"),),
    )


def workloads(size: str) -> list[Workload]:
    """All cases of the suite; ``size`` picks the batch (``BATCH_SHAPES``)."""
    shape = BATCH_SHAPES[size]
    out = [_single(ind, target, bars) for bars in SINGLE_BARS for ind, target in SINGLE]
    out.append(_full_features(FULL_FEATURES_BARS))
    out.append(_stream_update())
    out.extend(_batched(ind, target, shape, size) for ind, target in BATCHED)
    return out
