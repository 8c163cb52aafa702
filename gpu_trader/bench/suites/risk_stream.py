"""Streaming risk cases of the ``risk`` suite (docs/design.md#benchmarks-and-targets).

``RiskStream.update``: one new bar of asset returns for every book at once (EWMA covariance,
book returns, EWMA and parametric VaR, rolling historical VaR/CVaR, drawdown, Sharpe), the
values written into one preallocated array, for 100 books x 50 assets (target
``risk_stream.update``) and 1000 books x 500 assets (``risk_stream.update_1000``; smaller at
the quick size). Its peer ``batch`` is what one would do without a stream: recompute the batch
functions on the trailing window every bar (``correlation.ewma_cov`` of the assets,
``risk.var_historical``, ``risk.cvar``, ``risk.var_parametric``, ``risk.max_drawdown``,
``risk.sharpe`` of the books' returns), on the cpu backend, timed interleaved with ours. The
peer's parametric VaR, maximum drawdown and Sharpe cover the trailing window, where the stream's
cover the whole history: the peer does less work than an exact recomputation, so the ratio is a
lower bound of the stream's advantage.

``RiskStream.warmup``: a stream built from ``WARMUP_BARS`` bars of history in one call
(``risk_stream.warmup``), against the same bars fed by as many ``update`` calls (``updates``).
The cases run on the cpu backend only (a stream is host state).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from ..harness import Reference, SkipCase, Workload

__all__ = ["workloads", "UPDATE_SHAPES", "WINDOW", "WARMUP_BARS"]

WINDOW = 250
HALFLIFE = 20.0
LEVEL = 0.99
ROWS = 512  # distinct new bars the update cases cycle through
# (books, assets) of the update cases per run size: the standard one, then the large one
UPDATE_SHAPES = {"quick": ((100, 50), (200, 100)), "standard": ((100, 50), (1000, 500)),
                 "full": ((100, 50), (1000, 500))}
WARMUP_BARS = {"quick": 252, "standard": 2520, "full": 2520}


def _data(books: int, assets: int, bars: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(books, assets)`` (about a third of the assets held per book) and fat-tailed
    daily returns ``(bars, assets)``."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(books, assets)) * (rng.random((books, assets)) < 0.35)
    return w, rng.standard_t(4, size=(bars, assets)) * 0.01 + 0.0003


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def _cpu_only(be) -> None:
    if be.name != "cpu":
        raise SkipCase("the streaming risk cases run on the cpu backend only")


def _update_setup(books: int, assets: int) -> Callable[[Any], Callable[[], Any]]:
    def setup(be):
        from gpu_trader.risk_stream import RiskStream

        _cpu_only(be)
        w, r = _data(books, assets, WINDOW + ROWS)
        stream = RiskStream(assets, w, HALFLIFE, WINDOW, LEVEL)
        stream.warmup(r[:WINDOW])
        out = np.empty((stream.n_rows, books))
        next_row = itertools.cycle(list(r[WINDOW:])).__next__
        return lambda: stream.update(next_row(), out=out)

    return setup


def _batch_setup(books: int, assets: int) -> Callable[[], Callable[[], Any]]:
    """Without a stream: each bar, append the bar and recompute every batch function on the
    trailing window (the ring of the last ``WINDOW`` bars, rolled)."""

    def setup():
        from gpu_trader import correlation, risk

        w, r = _data(books, assets, WINDOW + ROWS)
        hist = r[:WINDOW].T.copy()  # (assets, WINDOW)
        book = w @ hist  # (books, WINDOW)
        next_row = itertools.cycle(list(r[WINDOW:])).__next__

        def run():
            x = next_row()
            hist[:, :-1] = hist[:, 1:]
            hist[:, -1] = x
            book[:, :-1] = book[:, 1:]
            book[:, -1] = w @ x
            return (correlation.ewma_cov(hist, HALFLIFE, backend="cpu"),
                    risk.var_historical(book, LEVEL, backend="cpu"), risk.cvar(book, LEVEL, backend="cpu"),
                    risk.var_parametric(book, LEVEL, backend="cpu"), risk.max_drawdown(book, backend="cpu"),
                    risk.sharpe(book, backend="cpu"))

        return run

    return setup


def _update(books: int, assets: int, target: str) -> Workload:
    return Workload(
        name=f"RiskStream.update {books} books x {assets} assets", sizes={"books": books, "assets": assets,
                                                                          "window": WINDOW},
        setup=_update_setup(books, assets), run=_call, items=books, unit="book", target=target,
        references=(Reference("batch", _batch_setup(books, assets), _call),),
    )


def _warmup(bars: int) -> Workload:
    books, assets = UPDATE_SHAPES["standard"][0]
    w, r = _data(books, assets, bars)

    def setup(be):
        from gpu_trader.risk_stream import RiskStream

        _cpu_only(be)
        stream = RiskStream(assets, w, HALFLIFE, WINDOW, LEVEL)

        def run():
            stream.reset()
            return stream.warmup(r)

        return run

    def updates_setup():
        from gpu_trader.risk_stream import RiskStream

        stream = RiskStream(assets, w, HALFLIFE, WINDOW, LEVEL)
        out = np.empty((stream.n_rows, books))
        rows = list(r)

        def run():
            stream.reset()
            for x in rows:
                stream.update(x, out=out)
            return out

        return run

    return Workload(
        name=f"RiskStream.warmup {books} books x {assets} assets x {bars} bars",
        sizes={"books": books, "assets": assets, "bars": bars}, setup=setup, run=_call, items=bars,
        target="risk_stream.warmup", references=(Reference("updates", updates_setup, _call),),
    )


def workloads(size: str) -> list[Workload]:
    """The update cases (100 x 50, and the large shape of ``size``) and the warmup case."""
    (small, large) = UPDATE_SHAPES[size]
    return [_update(*small, "risk_stream.update"), _update(*large, "risk_stream.update_1000"),
            _warmup(WARMUP_BARS[size])]
