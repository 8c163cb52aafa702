"""The ``strategies`` suite: signals, multi-strategy, streaming, parameter sweep (docs/design.md#benchmarks-and-targets).

Cases and references (timed in the same run, on the host):

* momentum(10, 30) and mean-reversion(20, 2) on 100 bars of trending, ranging and
  sideways (random-walk) data: reference ``talib_numpy`` (TA-Lib indicators, NumPy
  rule and P&L, as a user would write it);
* a :class:`StrategyRunner` of 2, 5 and 10 strategies on 100 bars: reference the same
  strategies one after the other with TA-Lib + NumPy;
* one bar of a :class:`StrategyStream` (momentum(10, 30), one symbol) and building one
  (``initialization``);
* the batched sweep: momentum over 20 fast x 50 slow = 1000 parameter sets x 500
  symbols x 2520 bars, signals and P&L in one call (``--full``; standard: 20 x 10 sets
  x 100 symbols, quick: 10 x 5 sets x 20 symbols);
  reference ``cpu``, the same call on the cpu backend (only timed where CuPy
  imports, i.e. on GPU machines, for the ``GPU >= 20x CPU`` target).

Threads: the CPU sweep uses numba's default pool (all cores); nothing else here
is multi-threaded.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Callable

import numpy as np

from ... import strategies as S
from ..data import random_walk_ohlcv
from ..harness import Reference, SkipCase, Workload
from ..memory import suite_cache

__all__ = ["workloads"]

BARS = 100
SWEEPS = {  # size -> fast windows, slow windows, symbols, bars
    "quick": (list(range(5, 25, 2)), list(range(30, 130, 20)), 20, 2520),
    "standard": (list(range(5, 25)), list(range(30, 130, 10)), 100, 2520),
    "full": (list(range(5, 25)), list(range(30, 130, 2)), 500, 2520),
}
MULTI = (S.Momentum(10, 30), S.MeanReversion(20, 2.0), S.Momentum(5, 20), S.MeanReversion(10, 1.5),
         S.Momentum(20, 50), S.Momentum(10, 50), S.MeanReversion(20, 1.0), S.MeanReversion(30, 2.0),
         S.Momentum(5, 30), S.MeanReversion(15, 2.5))


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


@suite_cache(maxsize=4)
def market(kind: str, bars: int = BARS) -> np.ndarray:
    """One series of closes: ``trend`` (drift 0.3 %/bar), ``range`` (a sine, 20-bar cycle,
    plus noise) or ``sideways`` (a driftless random walk)."""
    rng = np.random.default_rng(11)
    noise = rng.normal(0, 0.005, bars)
    t = np.arange(bars)
    if kind == "trend":
        return 100 * np.exp(np.cumsum(0.003 + noise))
    if kind == "range":
        return 100 * (1 + 0.03 * np.sin(2 * np.pi * t / 20)) * np.exp(noise)
    return 100 * np.exp(np.cumsum(noise))


def _talib_numpy(ta, strategy, close, cost=0.0):
    """Signals and P&L of one strategy with TA-Lib indicators and NumPy (the reference)."""
    if isinstance(strategy, S.Momentum):
        a, b = ta.EMA(close, strategy.fast), ta.EMA(close, strategy.slow)
        sig = np.where(a > b, 1, np.where(a < b, -1, 0))
    else:
        ma, sd = ta.SMA(close, strategy.window), ta.STDDEV(close, strategy.window, 1.0)
        k = strategy.nstd
        sig = np.where(close < ma - k * sd, 1, np.where(close > ma + k * sd, -1, 0))
    ret = np.zeros_like(close)
    ret[1:] = close[1:] / close[:-1] - 1
    prev = np.concatenate(([0], sig[:-1]))
    return sig.astype(np.int8), float(np.sum(prev * ret) - cost * np.abs(sig - prev).sum())


def _talib_ref(strategies, close_fn: Callable[[], np.ndarray]) -> Reference:
    def setup():
        import talib

        close = close_fn()
        return lambda: [_talib_numpy(talib, s, close) for s in strategies]

    return Reference("talib_numpy", setup, _call, requires="talib")


def _signal(strategy, kind: str) -> Workload:
    fn = S.momentum if isinstance(strategy, S.Momentum) else S.mean_reversion
    params = (strategy.fast, strategy.slow) if isinstance(strategy, S.Momentum) else (strategy.window, strategy.nstd)

    def setup(be):
        return functools.partial(fn, be.asarray(market(kind)), *params, backend=be.name)

    return Workload(
        name=f"{strategy.name} {kind} {BARS} bars", sizes={"bars": BARS}, setup=setup, run=_call, items=BARS,
        target="strategies.signal", references=(_talib_ref([strategy], lambda: market(kind)),),
    )


def _multi(n: int) -> Workload:
    runner = S.StrategyRunner(list(MULTI[:n]))

    def setup(be):
        return functools.partial(runner.run, be.asarray(market("sideways")), backend=be.name)

    return Workload(
        name=f"multi-strategy {n} strategies {BARS} bars", sizes={"strategies": n, "bars": BARS}, setup=setup,
        run=_call, items=n * BARS, target="strategies.multi",
        references=(_talib_ref(MULTI[:n], lambda: market("sideways")),),
    )


def _host_only(be):
    if be.name != "cpu":
        raise SkipCase("the streaming strategy runs on the cpu backend only")


def _update() -> Workload:
    def setup(be):
        _host_only(be)
        closes = market("sideways", 4096)
        stream = S.Momentum(10, 30).stream(1)
        stream.warmup(closes[:BARS])
        feed = itertools.cycle(closes.tolist()).__next__
        return lambda: stream.update(feed())

    return Workload(name="StrategyStream.update one bar (momentum, 1 symbol)", sizes={"symbols": 1}, setup=setup,
                    run=_call, items=1, unit="update", target="strategies.update")


def _init() -> Workload:
    def setup(be):
        _host_only(be)
        return functools.partial(S.Momentum(10, 30).stream, 1)

    return Workload(name="StrategyStream initialization (momentum, 1 symbol)", sizes={"symbols": 1}, setup=setup,
                    run=_call, items=1, unit="stream", target="strategies.init")


def _sweep(fast, slow, n_symbols: int, bars: int) -> Workload:
    P = len(fast) * len(slow)

    def close():
        return random_walk_ohlcv((n_symbols, bars))["close"]

    def setup(be):
        return functools.partial(S.momentum, be.asarray(close()), fast, slow, cost_bps=1.0, backend=be.name)

    def cpu_setup():
        return functools.partial(S.momentum, close(), fast, slow, cost_bps=1.0, backend="cpu")

    return Workload(
        name=f"momentum sweep {P} params x {n_symbols} symbols x {bars} bars",
        sizes={"param_sets": P, "symbols": n_symbols, "bars": bars}, setup=setup, run=_call,
        items=P * n_symbols * bars, target="strategies.sweep",
        references=(Reference("cpu", cpu_setup, _call, requires="cupy"),),
    )


def workloads(size: str) -> list[Workload]:
    """All cases; ``size`` picks the sweep (``SWEEPS``)."""
    out = [_signal(s, kind) for s in (S.Momentum(10, 30), S.MeanReversion(20, 2.0))
           for kind in ("trend", "range", "sideways")]
    out += [_multi(n) for n in (2, 5, 10)]
    out += [_update(), _init()]
    fast, slow, n, bars = SWEEPS[size]
    out.append(_sweep(fast, slow, n, bars))
    return out
