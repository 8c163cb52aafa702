"""Trading strategies on the indicators: long/short/flat signals and a simple backtest.

Strategies (rules in :mod:`gpu_trader._internal.strategy_loops`; a NaN input, e.g. during an
indicator's lookback, gives 0 = flat):

* :class:`Momentum` ``(fast, slow)``: long when EMA(fast) > EMA(slow), short when below.
* :class:`MeanReversion` ``(window, nstd)``: long when close < SMA - nstd*SD, short when
  close > SMA + nstd*SD (SD: population standard deviation over ``window``, the
  Bollinger band's, computed as ``upper - middle`` of ``bollinger(window, nstd=1)``).

Batch, parameter grids (``cpu`` and ``cuda``): :func:`momentum` and
:func:`mean_reversion` take ``close`` of shape ``(..., T)`` (time last) and scalar or
sequence parameters; sequences form an outer-product grid of leading axes
(docs/design.md#conventions), so ``momentum(close, fast=range(5, 25), slow=range(30, 130, 2))`` runs
1000 parameter sets over every symbol in one call: the distinct EMA windows are
computed once (one batched indicator call) and one kernel derives every set's
signals and P&L. They return :class:`StrategyResult` ``(signals, pnl)``: signals int8
``(*grid, *batch, T)`` in {-1, 0, 1}, pnl float64 ``(*grid, *batch)``.

P&L convention (per unit notional, simple returns summed, no compounding): the
signal of bar t (known at its close) is held over t -> t+1 and earns
``signal[t] * (close[t+1]/close[t] - 1)``; each position change pays
``cost_bps / 1e4 * |signal[t] - signal[t-1]|`` (starting flat). Non-finite bar
returns earn 0. Average over symbols for a per-parameter-set figure:
``result.pnl.mean(axis=-1)``.

Memory-bounded sweeps (``cpu`` and ``cuda``): :func:`momentum_sweep` and
:func:`mean_reversion_sweep` take the arguments of :func:`momentum` and :func:`mean_reversion`
(plus ``periods_per_year`` and ``max_memory``) and return a :class:`SweepResult` of
per-(parameter set, series) statistics -- P&L (equal to :func:`momentum`'s), Sharpe ratio,
maximum drawdown, turnover, hit rate -- without materializing the signals: they run in chunks
of the parameter grid and of the series whose working memory stays within ``max_memory``
bytes (default :data:`SWEEP_MEMORY`), so a 10,000-set grid over 500 symbols x 2520 bars needs
no more memory than its statistics plus one chunk. The result does not depend on the
chunking (on ``cuda``, up to the rounding of the indicators' scan path, which a small chunk
of long series may take).

Several strategies at once: :class:`StrategyRunner` computes the union of their
features once (an EMA shared by two strategies is computed once; all EMA windows in
one batched indicator call, all Bollinger windows in another) and all signals in one
kernel call.

One-bar streaming (CPU): ``Momentum(10, 30).stream(n_symbols)`` or
``StrategyRunner([...]).stream(n_symbols)`` give a :class:`StrategyStream` whose
``update(close_row)`` returns the new signals (int8) in a few microseconds; its
outputs equal the batch signals bar by bar (float64 input), because it runs the
same rule on :class:`gpu_trader.FeatureStream` values, which equal the batch
indicators exactly.

Limits (``ValueError``, checked before anything is computed): windows are integers in
``[1, 100000]`` (``[2, 100000]`` for mean reversion; TA-Lib's cap), a call runs at most
:data:`gpu_trader._internal.validation.MAX_GRID` parameter sets or strategies, and its signals
hold at most :data:`gpu_trader._internal.validation.MAX_ELEMENTS` values. Inputs may be read-only
(pandas' copy-on-write columns) and are never written.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from ._internal import strategy_loops, sweep_plan
from .backend import get_backend, resolve
from .indicators import bollinger, ema
from ._internal.stream_input import host_rows
from .streaming import FeatureStream
from ._internal.validation import (MAX_GRID, MAX_WINDOW, WORK_MEMORY_LIMIT, check_allocation, check_count,
                                   check_flag, check_float, check_floats, check_grid_size, check_windows,
                                   check_periods_per_year, check_work_memory, positive_number)
from .profiling import annotate, annotate_methods
from .risk import MAX_PERIODS_PER_YEAR

__all__ = ["Momentum", "MeanReversion", "StrategyResult", "momentum", "mean_reversion", "StrategyRunner",
           "StrategyStream", "SweepResult", "momentum_sweep", "mean_reversion_sweep", "SWEEP_MEMORY"]

SWEEP_MEMORY = 1 << 30
"""Default ``max_memory`` of :func:`momentum_sweep` and :func:`mean_reversion_sweep`: 1 GiB."""


class StrategyResult(NamedTuple):
    """``signals``: int8 ``(*grid, *batch, T)`` in {-1, 0, 1}; ``pnl``: float64 ``(*grid, *batch)``
    (see the module docstring for the P&L convention)."""

    signals: Any
    pnl: Any


class SweepResult(NamedTuple):
    """Statistics of :func:`momentum_sweep` / :func:`mean_reversion_sweep` on the backend's device.

    Per (parameter set, series), with ``s[t]`` the signal of bar ``t`` (``s[-1] = 0``) and
    ``x[t] = s[t-1] * ret[t] - cost * |s[t] - s[t-1]|`` the P&L of bar ``t`` (``t = 0 .. T-1``;
    ``ret`` the bar's simple return, 0 where not finite and at ``t = 0``; ``cost = cost_bps / 1e4``),
    each float64 of shape ``(*grid, *batch)`` like :func:`momentum`'s ``pnl``:

    * ``pnl``: ``sum(x)`` per unit notional, :func:`momentum`'s ``pnl`` (the same loop body and
      order of summation: bit for bit on ``cpu``);
    * ``sharpe``: ``mean(x) / std(x, ddof=1) * sqrt(periods_per_year)`` over all ``T`` bars
      (flat bars count, as zero returns); NaN when ``T < 2``; a zero ``std`` (a constant ``x``,
      its rounding residue included, as in :func:`gpu_trader.risk.sharpe`) gives ``+inf`` or
      ``-inf`` by the sign of the mean, and NaN for ``0 / 0`` (never in the market, no cost);
    * ``max_drawdown``: the largest fall of the cumulative P&L ``x[0] + .. + x[t]`` below its
      running maximum, the start (0) counting as a peak; >= 0, in P&L units (returns summed,
      not a fraction of compounded wealth); 0 when it never falls;
    * ``turnover``: ``sum(|s[t] - s[t-1]|)``, units of position traded per unit notional over
      the series (entering from flat counts; the P&L paid ``cost * turnover``);
    * ``hit_rate``: the fraction of the bars held in a position (``s[t-1] != 0``) whose gross
      return ``s[t-1] * ret[t]`` is > 0 (a bar without a finite return is a miss); NaN when
      the series is never in the market.
    """

    pnl: Any
    sharpe: Any
    max_drawdown: Any
    turnover: Any
    hit_rate: Any


def _check_cost(cost_bps) -> float:
    return check_float(cost_bps, "cost_bps", minimum=0.0) / 1e4


@annotate_methods
@dataclass(frozen=True)
class Momentum:
    """EMA crossover: +1 when EMA(fast) > EMA(slow), -1 when below, 0 when equal or NaN.

    ``fast`` is not required to be below ``slow``: with ``fast > slow`` the rule is the
    contrarian crossover (the signal of the swapped pair, negated), which a parameter
    sweep may want to cover; ``fast == slow`` is always flat."""

    fast: int = 10
    slow: int = 30

    def __post_init__(self) -> None:  # stored as Python ints (np.int32(10) is accepted)
        object.__setattr__(self, "fast", check_count(self.fast, "fast", 1, MAX_WINDOW))
        object.__setattr__(self, "slow", check_count(self.slow, "slow", 1, MAX_WINDOW))

    @property
    def name(self) -> str:
        return f"momentum({self.fast},{self.slow})"

    def _rule(self, rows) -> tuple:
        """(kind, row of a, row of b, k) given the feature-row lookup of :func:`_feature_rows`."""
        return strategy_loops.MOMENTUM, rows["ema", self.fast], rows["ema", self.slow], 0.0

    def stream(self, n_symbols: int) -> "StrategyStream":
        """A one-bar-at-a-time form; ``update(close_row)`` returns int8 ``(n_symbols,)``."""
        return StrategyStream([self], n_symbols, squeeze=True)


@annotate_methods
@dataclass(frozen=True)
class MeanReversion:
    """Bollinger mean reversion: +1 below SMA - nstd*SD, -1 above SMA + nstd*SD, else 0."""

    window: int = 20
    nstd: float = 2.0

    def __post_init__(self) -> None:  # stored as a Python int and float
        object.__setattr__(self, "window", check_count(self.window, "window", 2, MAX_WINDOW))
        object.__setattr__(self, "nstd", check_float(self.nstd, "nstd", minimum=0.0))

    @property
    def name(self) -> str:
        return f"mean_reversion({self.window},{self.nstd:g})"

    def _rule(self, rows) -> tuple:
        return strategy_loops.MEAN_REVERSION, rows["mid", self.window], rows["sd", self.window], float(self.nstd)

    def stream(self, n_symbols: int) -> "StrategyStream":
        """A one-bar-at-a-time form; ``update(close_row)`` returns int8 ``(n_symbols,)``."""
        return StrategyStream([self], n_symbols, squeeze=True)


def _feature_rows(ema_windows: tuple, bb_windows: tuple) -> dict[tuple[str, int], int]:
    """Row of each feature in the stacked feature array: ``("ema", w)`` for each EMA window,
    then ``("mid", w)`` (SMA) and ``("sd", w)`` (population SD) for each Bollinger window."""
    keys = [("ema", w) for w in ema_windows] + [("mid", w) for w in bb_windows] + [("sd", w) for w in bb_windows]
    return {k: i for i, k in enumerate(keys)}


def _batch_features(be, close, ema_windows: tuple, bb_windows: tuple):
    """The stacked ``(R, ..., T)`` features of :func:`_feature_rows`: one batched EMA call over
    every EMA window and one Bollinger(window, nstd=1) call over every Bollinger window
    (SD = upper - middle)."""
    parts = []
    if ema_windows:
        parts.append(ema(close, ema_windows, backend=be.name).reshape((len(ema_windows),) + close.shape))
    if bb_windows:
        upper, middle, _ = bollinger(close, bb_windows, 1.0, backend=be.name)
        shape = (len(bb_windows),) + close.shape
        parts += [middle.reshape(shape), (upper - middle).reshape(shape)]
    return parts[0] if len(parts) == 1 else be.xp.concatenate(parts)


def _stream_spec(ema_windows: tuple, bb_windows: tuple) -> dict:
    """The :class:`gpu_trader.FeatureStream` spec computing the same features."""
    spec = {f"ema_{w}": ("ema", {"window": w}) for w in ema_windows}
    spec.update({f"bb1_{w}": ("bollinger", {"window": w, "nstd": 1.0}) for w in bb_windows})
    return spec


def _stream_feature(values: dict, key: tuple[str, int]):
    """One feature row of :func:`_feature_rows` from a :class:`FeatureStream` update."""
    kind, w = key
    if kind == "ema":
        return values[f"ema_{w}"]
    middle = values[f"bb1_{w}_middle"]
    return middle if kind == "mid" else values[f"bb1_{w}_upper"] - middle


_RULES: dict = {}


def _rule_columns(rules) -> tuple[np.ndarray, ...]:
    """``(kinds, a_idx, b_idx, ks)`` arrays of a rule list ``[(kind, a row, b row, k)]``."""
    return tuple(np.array(v, dtype=dt) for v, dt in zip(zip(*rules), (np.int64,) * 3 + (np.float64,)))


def _rule_arrays(rules: tuple) -> tuple[np.ndarray, ...]:
    """:func:`_rule_columns`, memoized (rule lists of the batch calls and streams repeat)."""
    hit = _RULES.get(rules)
    if hit is None:
        if len(_RULES) > 1024:
            _RULES.clear()
        hit = _RULES[rules] = _rule_columns(rules)
    return hit


def _backtest(be, close, ema_windows: tuple, bb_windows: tuple, rules, cost, grid_shape, what: str):
    """Run rules ``[(kind, a row, b row, k)]`` (rows of :func:`_feature_rows`) over close (..., T):
    the size of the output is checked first, then the features are computed and the
    kernel runs. Returns a :class:`StrategyResult` with leading axes ``grid_shape``."""
    batch, T = close.shape[:-1], close.shape[-1]
    n = math.prod(batch)
    P = len(rules)
    check_allocation(P * n * T, what)
    kinds, a_idx, b_idx, ks = _rule_arrays(tuple(rules))
    if n == 0 or T == 0:
        sig = be.xp.zeros((P, n, T), dtype=np.int8)
        pnl = be.xp.zeros((P, n), dtype=np.float64)
    else:
        feats = _batch_features(be, close, ema_windows, bb_windows)
        c = be.contiguous(close.reshape(n, T))
        f = be.contiguous(feats.reshape(feats.shape[0], n, T))
        sig, pnl = be.ops("strategies").backtest(c, f, kinds, a_idx, b_idx, ks, cost)
    return StrategyResult(sig.reshape(grid_shape + batch + (T,)), pnl.reshape(grid_shape + batch))


def _restore(restore, result: StrategyResult) -> StrategyResult:
    """``result`` with its signals rewrapped by :func:`resolve`'s ``restore`` (None: arrays in)."""
    if restore is None:
        return result
    return StrategyResult(restore(result.signals), result.pnl)


def _momentum_tile(fasts: tuple, slows: tuple) -> tuple:
    """``(EMA windows, Bollinger windows, rules)`` of momentum over ``fasts x slows`` (the
    rules' rows index :func:`_feature_rows` of those windows)."""
    windows = tuple(sorted(set(fasts) | set(slows)))
    rows = _feature_rows(windows, ())
    return windows, (), [(strategy_loops.MOMENTUM, rows["ema", f], rows["ema", s], 0.0)
                         for f, s in itertools.product(fasts, slows)]


def _reversion_tile(windows: tuple, nstds: tuple) -> tuple:
    """The same for mean reversion over ``windows x nstds``."""
    uniq = tuple(sorted(set(windows)))
    rows = _feature_rows((), uniq)
    return (), uniq, [(strategy_loops.MEAN_REVERSION, rows["mid", w], rows["sd", w], k)
                      for w, k in itertools.product(windows, nstds)]


@annotate
def momentum(close, fast=10, slow=30, *, cost_bps=0.0, backend=None) -> StrategyResult:
    """EMA-crossover signals and backtest P&L over a parameter grid (see module docstring).

    close: (..., T) float (pandas in: signals as pandas); fast, slow: int >= 1 or
    sequences (outer-product grid axes ``(len(fast), len(slow))``, leading);
    cost_bps >= 0. Returns :class:`StrategyResult`.
    """
    fasts, fast_grid = check_windows(fast, "fast", 1, MAX_WINDOW)
    slows, slow_grid = check_windows(slow, "slow", 1, MAX_WINDOW)
    check_grid_size((len(fasts), len(slows)), "momentum")
    cost = _check_cost(cost_bps)
    be, (c,), restore = resolve((close,), ("close",), backend)
    ema_windows, _, rules = _momentum_tile(fasts, slows)
    grid = tuple(len(v) for v, g in ((fasts, fast_grid), (slows, slow_grid)) if g)
    return _restore(restore, _backtest(be, c, ema_windows, (), rules, cost, grid, "momentum"))


@annotate
def mean_reversion(close, window=20, nstd=2.0, *, cost_bps=0.0, backend=None) -> StrategyResult:
    """Bollinger mean-reversion signals and backtest P&L over a parameter grid.

    close: (..., T) float; window: int >= 2 or a sequence; nstd: float >= 0 or a
    sequence (grid axes ``(len(window), len(nstd))``). One Bollinger(window, 1) per
    distinct window serves every nstd. Returns :class:`StrategyResult`.
    """
    windows, window_grid = check_windows(window, "window", 2, MAX_WINDOW)
    nstds, nstd_grid = check_floats(nstd, "nstd", 0.0)
    check_grid_size((len(windows), len(nstds)), "mean_reversion")
    cost = _check_cost(cost_bps)
    be, (c,), restore = resolve((close,), ("close",), backend)
    _, bb_windows, rules = _reversion_tile(windows, nstds)
    grid = tuple(len(v) for v, g in ((windows, window_grid), (nstds, nstd_grid)) if g)
    return _restore(restore, _backtest(be, c, (), bb_windows, rules, cost, grid, "mean_reversion"))


def _check_budget(max_memory) -> int:
    if max_memory is None:
        return SWEEP_MEMORY
    budget = positive_number(max_memory, "max_memory")
    if budget > WORK_MEMORY_LIMIT:
        raise ValueError(f"max_memory must be at most WORK_MEMORY_LIMIT = {WORK_MEMORY_LIMIT} bytes, "
                         f"got {max_memory!r}")
    return int(budget)


class _Grid(NamedTuple):
    """A sweep's rule on a two-axis grid: ``tile(a_values, b_values) -> (ema windows, Bollinger
    windows, rules)`` for a block of each axis, ``rows_bound`` as :data:`sweep_plan.RowsBound`."""

    a: tuple
    b: tuple
    tile: Any
    rows_bound: Any


def _sweep(be, close, grid: _Grid, cost: float, ppy: float, budget: int, grid_shape: tuple, what: str) -> SweepResult:
    """Run a sweep over close ``(..., T)`` in the chunks of :func:`sweep_plan.plan`."""
    batch, T = close.shape[:-1], close.shape[-1]
    n = math.prod(batch)
    A, B = len(grid.a), len(grid.b)
    check_allocation(strategy_loops.N_STATS * A * B * n, what)
    check_work_memory(sweep_plan.result_bytes(A * B, n), what)
    ops = be.ops("strategies")
    plan = sweep_plan.plan((A, B), n, T, close.dtype.itemsize, ops.SWEEP_FEATURE_COPIES, budget, grid.rows_bound, what)
    stats = be.xp.empty((strategy_loops.N_STATS, A, B, n), dtype=np.float64)
    c = be.contiguous(close.reshape(n, T))
    for a0 in range(0, A, plan.a_block):
        for b0 in range(0, B, plan.b_block):
            a_vals, b_vals = grid.a[a0:a0 + plan.a_block], grid.b[b0:b0 + plan.b_block]
            ema_windows, bb_windows, rules = grid.tile(a_vals, b_vals)
            arrays = _rule_columns(rules)  # (not memoized: a sweep's grid is large and rarely repeats)
            for i0 in range(0, n, plan.symbols):
                out = stats[:, a0:a0 + len(a_vals), b0:b0 + len(b_vals), i0:i0 + plan.symbols]
                out[...] = _sweep_chunk(be, ops, c[i0:i0 + plan.symbols], ema_windows, bb_windows, arrays, cost,
                                        math.sqrt(ppy)).reshape(out.shape)
    return SweepResult(*(stats[q].reshape(grid_shape + batch) for q in range(strategy_loops.N_STATS)))


def _sweep_chunk(be, ops, close, ema_windows: tuple, bb_windows: tuple, rules: tuple, cost: float, scale: float):
    """Statistics ``(N_STATS, P, n)`` of one chunk; its features are freed on return."""
    feats = _batch_features(be, close, ema_windows, bb_windows)
    return ops.sweep(close, be.contiguous(feats), *rules, cost, scale)


@annotate
def momentum_sweep(close, fast=10, slow=30, *, cost_bps=0.0, periods_per_year=252, max_memory=None,
                   backend=None) -> SweepResult:
    """:func:`momentum`'s P&L and summary statistics over a parameter grid, signals not kept.

    close: (..., T) float; fast, slow: int >= 1 or sequences (grid axes
    ``(len(fast), len(slow))``, leading); cost_bps >= 0; periods_per_year: the Sharpe ratio's
    annualization (in ``(0, MAX_PERIODS_PER_YEAR]``, 252 for daily bars); max_memory: bytes or
    None. Returns :class:`SweepResult` (statistics defined there).

    The signals are never materialized: the work runs in chunks (tiles of the parameter grid x
    blocks of series, :mod:`gpu_trader._internal.sweep_plan`) whose peak memory, the result
    included, stays within ``max_memory`` bytes (host memory on ``cpu``, device memory on
    ``cuda``; default :data:`SWEEP_MEMORY`, at most
    :data:`gpu_trader._internal.validation.WORK_MEMORY_LIMIT`). A budget too small for the
    result plus one series of one parameter set is a ``ValueError`` naming ``max_memory``.
    Input conventions as :func:`momentum` (a DataFrame's columns are the batch axis; the
    statistics are arrays, not pandas). Limits as there, except that without signals
    ``P x n x T`` is not bounded (the ``5 x P x n`` statistics are).
    """
    fasts, fast_grid = check_windows(fast, "fast", 1, MAX_WINDOW)
    slows, slow_grid = check_windows(slow, "slow", 1, MAX_WINDOW)
    check_grid_size((len(fasts), len(slows)), "momentum_sweep")
    cost, ppy, budget = _check_cost(cost_bps), check_periods_per_year(periods_per_year, MAX_PERIODS_PER_YEAR), _check_budget(max_memory)
    be, (c,), _ = resolve((close,), ("close",), backend)
    n_windows = len(set(fasts) | set(slows))
    n_fast, n_slow = len(set(fasts)), len(set(slows))

    def rows_bound(a: int, b: int) -> tuple[int, int]:  # one EMA row per distinct window
        rows = min(n_windows, min(a, n_fast) + min(b, n_slow))
        return rows, rows

    grid = tuple(len(v) for v, g in ((fasts, fast_grid), (slows, slow_grid)) if g)
    return _sweep(be, c, _Grid(fasts, slows, _momentum_tile, rows_bound), cost, ppy, budget, grid, "momentum_sweep")


@annotate
def mean_reversion_sweep(close, window=20, nstd=2.0, *, cost_bps=0.0, periods_per_year=252, max_memory=None,
                         backend=None) -> SweepResult:
    """:func:`mean_reversion`'s P&L and summary statistics over a parameter grid, signals not kept.

    close: (..., T) float; window: int >= 2 or a sequence; nstd: float >= 0 or a sequence
    (grid axes ``(len(window), len(nstd))``); other arguments, chunking and memory as
    :func:`momentum_sweep`. Returns :class:`SweepResult`.
    """
    windows, window_grid = check_windows(window, "window", 2, MAX_WINDOW)
    nstds, nstd_grid = check_floats(nstd, "nstd", 0.0)
    check_grid_size((len(windows), len(nstds)), "mean_reversion_sweep")
    cost, ppy, budget = _check_cost(cost_bps), check_periods_per_year(periods_per_year, MAX_PERIODS_PER_YEAR), _check_budget(max_memory)
    be, (c,), _ = resolve((close,), ("close",), backend)
    n_windows = len(set(windows))

    def rows_bound(a: int, b: int) -> tuple[int, int]:
        # SMA and SD rows per window; Bollinger's call peaks at 3 bands + SD + the stacked 2 rows
        rows = 2 * min(a, n_windows)
        return rows, 3 * rows

    grid = tuple(len(v) for v, g in ((windows, window_grid), (nstds, nstd_grid)) if g)
    return _sweep(be, c, _Grid(windows, nstds, _reversion_tile, rows_bound), cost, ppy, budget, grid,
                  "mean_reversion_sweep")


def _check_strategies(strategies) -> tuple:
    items = tuple(strategies) if isinstance(strategies, (list, tuple)) else None
    if not items or not all(isinstance(s, (Momentum, MeanReversion)) for s in items):
        raise TypeError("strategies must be a non-empty list of Momentum / MeanReversion instances")
    if len(items) > MAX_GRID:
        raise ValueError(f"strategies: {len(items)} given; at most {MAX_GRID} run in one call")
    return items


@annotate_methods
class StrategyRunner:
    """Several strategies over the same data, sharing their feature computation.

    ``StrategyRunner([Momentum(10, 30), Momentum(10, 50), MeanReversion(20, 2)])``:
    the union of the strategies' indicators is computed once (one batched EMA call over
    every distinct EMA window -- EMA(10) once for both momentum rules -- and one
    Bollinger call over every distinct window) and all signals by one kernel call.

    * ``run(close, cost_bps=0.0, backend=None) -> {strategy.name: StrategyResult}``
      (close ``(..., T)``; each result as from :func:`momentum` with scalar parameters);
    * ``stream(n_symbols) -> StrategyStream`` whose ``update(close_row)`` returns int8
      ``(n_strategies, n_symbols)`` in the runner's order.
    """

    def __init__(self, strategies: Sequence[Momentum | MeanReversion]) -> None:
        self.strategies = _check_strategies(strategies)
        self.names = tuple(s.name for s in self.strategies)
        moms = [s for s in self.strategies if isinstance(s, Momentum)]
        self._ema = tuple(sorted({w for s in moms for w in (s.fast, s.slow)}))
        self._bb = tuple(sorted({s.window for s in self.strategies if isinstance(s, MeanReversion)}))
        self._rows = _feature_rows(self._ema, self._bb)
        self._rules = tuple(s._rule(self._rows) for s in self.strategies)

    def run(self, close, *, cost_bps=0.0, backend=None) -> dict[str, StrategyResult]:
        cost = _check_cost(cost_bps)
        be, (c,), restore = resolve((close,), ("close",), backend)
        res = _backtest(be, c, self._ema, self._bb, self._rules, cost, (len(self._rules),), "StrategyRunner.run")
        return {name: _restore(restore, StrategyResult(res.signals[i], res.pnl[i]))
                for i, name in enumerate(self.names)}

    def stream(self, n_symbols: int) -> "StrategyStream":
        return StrategyStream(self.strategies, n_symbols)


@annotate_methods
class StrategyStream:
    """One-bar-at-a-time signals for ``n_symbols`` symbols (CPU; the pipeline's hot path).

    ``update(close_row) -> int8 array``: ``close_row`` is the new bar's closes, shape
    ``(n_symbols,)`` (a float when ``n_symbols == 1``); returns the signals of that
    bar, ``(n_symbols,)`` for a single strategy (``Strategy.stream``) or
    ``(n_strategies, n_symbols)`` for a runner, a fresh array each call; it is
    ``signals(features(close_row))``, the two steps callable apart (e.g. to time them). It keeps
    :class:`gpu_trader.FeatureStream` state (O(window) floats per symbol) and equals the
    batch signals at every bar. ``warmup(history)`` feeds ``(n_symbols, T)`` closes at
    once (returns the last bar's signals); ``reset()`` forgets everything.

    Every update advances all symbols by one bar. When bars complete per symbol at
    different times (a :class:`gpu_trader.marketdata.BarAggregator` emits them one by
    one), keep one stream per symbol (``n_symbols=1``) and call
    ``stream.update(bar.close)`` with each completed bar.
    """

    def __init__(self, strategies, n_symbols: int, *, squeeze: bool = False) -> None:
        self._squeeze = check_flag(squeeze, "squeeze")
        runner = strategies if isinstance(strategies, StrategyRunner) else StrategyRunner(strategies)
        self._features = FeatureStream(n_symbols, _stream_spec(runner._ema, runner._bb))
        self.n_symbols = self._features.n_symbols
        self.names = runner.names
        self._keys = tuple(runner._rows)
        self._rules = _rule_arrays(runner._rules)
        self._feats = np.empty((len(self._keys), self.n_symbols), dtype=np.float64)
        self._close = np.empty(self.n_symbols, dtype=np.float64)
        self._signals_now = get_backend("cpu").ops("strategies").signals_now  # looked up once

    def reset(self) -> None:
        self._features.reset()

    def signals(self, values=None) -> np.ndarray:
        """The signals of the latest bar from its feature ``values`` (what :meth:`features`
        returned; ``None``: the stream's current values): the second half of :meth:`update`."""
        feats = self._feats
        if values is None:
            values = self._features.values
        for i, key in enumerate(self._keys):
            feats[i] = _stream_feature(values, key)
        out = np.empty((len(self.names), self.n_symbols), dtype=np.int8)
        self._signals_now(*self._rules, self._close, feats, out)
        return out[0] if self._squeeze else out

    def features(self, close_row) -> dict:
        """Advance the streaming features by one bar (the first half of :meth:`update`;
        ``update(row) == signals(features(row))``): returns the features' values (a dict of
        ``(n_symbols,)`` arrays, valid until the next call)."""
        row = close_row
        if type(row) is not np.ndarray or row.dtype.kind not in "fiub":  # the plain cases stay cheap
            row = np.array(row) if type(row) is float else host_rows(row, "close_row")
        values = self._features.update(row)
        self._close[:] = row
        return values

    def update(self, close_row) -> np.ndarray:
        return self.signals(self.features(close_row))

    def warmup(self, history) -> np.ndarray:
        """Feed closes ``(n_symbols, T)`` (``(T,)`` when ``n_symbols == 1``; a DataFrame has time
        along its index, one column per symbol); returns the last bar's signals."""
        hist = host_rows(history, "history")
        if hist.ndim == 1:
            hist = hist.reshape(1, -1)
        values = self._features.warmup({"close": hist})
        if hist.shape[-1]:
            self._close[:] = hist[:, -1]
        return self.signals(values)
