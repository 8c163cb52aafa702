"""The ``portfolio`` suite: positions, P&L, trades, snapshots, concurrency, commissions,
the position-limit check, and batched P&L over many portfolios
(docs/design.md#benchmarks-and-targets).

One-event cases run on the CPU backend only (other backends skip): position update
and add + remove (two operations per call), unrealized P&L of one position, total P&L
of a 50-position book, trade processing (one fill; batches of 10, 50, 100 fills),
snapshots of 10, 50, 100 positions, concurrent access (2, 4, 8 threads each booking
``CONCURRENT_FILLS`` fills into one book through a pre-started thread pool; every
call checks that no update was lost), the three commission models, and the
position-limit check over 100 positions.

Batched cases run on every backend: ``batch_pnl`` of 10,000 portfolios x 500 assets at
one mark and of 1,000 portfolios x 500 assets along 252 daily prices (one GEMM), and
``batch_apply_fills`` of 10 fills into each of 1,000 x 500 positions (quick: a tenth
of every batch; standard and full alike). Their yardstick is a copy of the inputs on the device.

Sizing, stops and exposure (issue 17): one-event sizing (:mod:`gpu_trader.sizing`'s five rules,
host only), realized P&L of a 50-position book, the exposure metrics of a 100-position book and
the streaming trailing stop of 500 symbols (host only); batched on every backend, with a
NumPy expression computing the same thing timed in the same run as the CPU's peer
(``ratio:numpy``): fixed fractional sizing of 1,000 books x 500 symbols (lot-rounded),
``batch_exposure`` of 1,000 books x 500 assets, ``trailing_stop`` (ATR multiple) and
``chandelier_exit`` of 500 symbols x 2,520 bars (peer: ``np.fmax.accumulate``; pandas
rolling max for the chandelier), and the maximum drawdown of 1,000 books x 252 days
(``risk.max_drawdown``; peer: cumulative product and running maximum). Quick sizes are a
tenth of the books and symbols.

Thread pools: left at their defaults (numba and BLAS use every core), as a user's
process would.
"""
from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...commissions import FixedCommission, PercentageCommission, TieredCommission
from ... import risk, sizing, stops
from ...portfolio import Portfolio, batch_apply_fills, batch_exposure, batch_pnl
from ..harness import Reference, SkipCase, Workload

__all__ = ["workloads"]

TRADE_BATCHES = (1, 10, 50, 100)
SNAPSHOT_SIZES = (10, 50, 100)
THREADS = (2, 4, 8)
CONCURRENT_FILLS = 100  # per thread per call
PNL_PORTFOLIOS = {"quick": 1_000, "standard": 10_000, "full": 10_000}
ASSETS, DAYS = 500, 252
FILLS_PER_POSITION = 10
ITEMSIZE = 8


def _cpu_only(be) -> None:
    if be.name != "cpu":
        raise SkipCase("the one-event portfolio path runs on the host (CPU)")


def _book(n: int, cash: float = 1e9) -> Portfolio:
    pf = Portfolio(cash, commission=PercentageCommission(5e-4, minimum=1.0))
    rng = np.random.default_rng(n)
    for i in range(n):
        pf.apply_fill(f"S{i}", float(rng.integers(-500, 500) or 1), float(rng.uniform(10, 200)))
    pf.mark_many({f"S{i}": float(p) for i, p in enumerate(rng.uniform(10, 200, n))})
    return pf


def _case(name, sizes, make, target, unit="op", items=1, cpu_only=True) -> Workload:
    def setup(be):
        if cpu_only:
            _cpu_only(be)
        return make(be)

    return Workload(name=name, sizes=sizes, setup=setup, run=lambda f: f(), items=items, unit=unit, target=target)


def _position_update(be):
    pf = _book(50)
    prices = itertools.cycle([10.0, 11.0, 12.0])
    return lambda: pf.set_position("S3", 250.0, next(prices))


def _position_add_remove(be):
    pf = _book(50)
    return lambda: (pf.set_position("NEW", 100.0, 42.0), pf.remove_position("NEW"))


def _unrealized_one(be):
    pf = _book(50)
    return lambda: pf.unrealized_pnl("S7")


def _total_pnl(be):
    pf = _book(50)
    return pf.total_pnl


def _trades(n: int):
    def make(be):
        pf = _book(100)
        rng = np.random.default_rng(1)
        syms = [f"S{i}" for i in rng.integers(0, 100, n)]
        qs = rng.integers(-50, 50, n).astype(float).tolist()
        ps = rng.uniform(10, 200, n).tolist()
        if n == 1:
            s, q, p = syms[0], qs[0] or 1.0, ps[0]
            return lambda: pf.apply_fill(s, q, p)
        return lambda: pf.apply_fills(syms, qs, ps)

    return make


def _snapshot(n: int):
    def make(be):
        return _book(n).snapshot

    return make


def _concurrent(n_threads: int):
    def make(be):
        pf = Portfolio(1e12, commission=FixedCommission(1.0))
        pool = ThreadPoolExecutor(max_workers=n_threads)
        syms = [f"S{i}" for i in range(10)]

        def worker(k):
            for i in range(CONCURRENT_FILLS):
                pf.apply_fill(syms[(i + k) % 10], 1.0, 100.0)

        def call():
            before = sum(pf.quantity(s) for s in syms)
            for f in [pool.submit(worker, k) for k in range(n_threads)]:
                f.result()
            if sum(pf.quantity(s) for s in syms) - before != n_threads * CONCURRENT_FILLS:
                raise AssertionError("lost update under concurrent access")

        return call

    return make


def _commission(model):
    def make(be):
        return lambda: model(250.0, 101.5)

    return make


def _limit_check(be):
    pf = _book(100)
    return lambda: pf.check_position_limits(max_quantity=1e6, max_notional=1e9)


def _pnl_data(n_portfolios: int, path: bool):
    rng = np.random.default_rng(7)
    q = rng.integers(-100, 100, (n_portfolios, ASSETS)).astype(np.float64)
    a = rng.uniform(10, 200, (n_portfolios, ASSETS))
    p = rng.uniform(10, 200, (ASSETS, DAYS) if path else (ASSETS,))
    return q, a, p


def _batch_pnl(n_portfolios: int, path: bool) -> Workload:
    def setup(be):
        q, a, p = (be.asarray(x) for x in _pnl_data(n_portfolios, path))
        return (lambda: batch_pnl(q, a, p, backend=be.name)), (q, a, p)

    out = n_portfolios * (DAYS if path else 1) * 2
    days = DAYS if path else 1
    return Workload(
        name=f"batch_pnl {n_portfolios}x{ASSETS}" + (f"x{DAYS} days" if path else " (one mark)"),
        sizes={"portfolios": n_portfolios, "assets": ASSETS, "days": days}, setup=setup,
        run=lambda s: s[0](), items=n_portfolios * days, unit="portfolio-mark",
        copy_inputs=lambda s: s[1],
        bytes_moved=(2 * n_portfolios * ASSETS + ASSETS * days + out) * ITEMSIZE,
    )


def _batch_fills(n_portfolios: int) -> Workload:
    def setup(be):
        rng = np.random.default_rng(3)
        shape = (n_portfolios, ASSETS)
        q = rng.integers(-100, 100, shape).astype(np.float64)
        a = np.where(q != 0, rng.uniform(10, 200, shape), 0.0)
        fq = rng.integers(-50, 50, shape + (FILLS_PER_POSITION,)).astype(np.float64)
        fp = rng.uniform(10, 200, shape + (FILLS_PER_POSITION,))
        arrays = tuple(be.asarray(x) for x in (q, a, fq, fp))
        return (lambda: batch_apply_fills(*arrays, backend=be.name)), arrays

    n_pos = n_portfolios * ASSETS
    return Workload(
        name=f"batch_apply_fills {n_portfolios}x{ASSETS}x{FILLS_PER_POSITION} fills",
        sizes={"portfolios": n_portfolios, "assets": ASSETS, "fills": FILLS_PER_POSITION}, setup=setup,
        run=lambda s: s[0](), items=n_pos * FILLS_PER_POSITION, unit="fill",
        copy_inputs=lambda s: s[1],
        bytes_moved=(2 * n_pos + 2 * n_pos * FILLS_PER_POSITION + 3 * n_pos) * ITEMSIZE,
    )


TIERS = [(1e4, 1e-3), (1e5, 5e-4), (math.inf, 2e-4)]

# -- sizing, stops, exposure, realized P&L, drawdown ------------------------------------------
SIZING_BOOKS = {"quick": 100, "standard": 1_000, "full": 1_000}
STOP_SHAPES = {"quick": (50, 2520), "standard": (500, 2520), "full": (500, 2520)}
STREAM_SYMBOLS = 500
ATR_MULTIPLE, CHANDELIER_WINDOW = 3.0, 22
ONE_EVENT_SIZING = {
    "fixed fractional": (sizing.fixed_fractional_size, (100_000.0, 0.01, 2.5)),
    "Kelly": (sizing.kelly_size, (100_000.0, 42.0, sizing.kelly_fraction(0.55, 1.3, multiplier=0.5))),
    "volatility target": (sizing.volatility_target_size, (100_000.0, 0.01, 1.7)),
    "by value": (sizing.value_size, (25_000.0, 42.0)),
    "by weight": (sizing.weight_size, (100_000.0, 0.05, 42.0)),
}


def _one_event_sizing(label: str) -> Workload:
    fn, args = ONE_EVENT_SIZING[label]
    return _case(f"sizing one event, {label}", {"orders": 1}, lambda be: lambda: fn(*args, lot_size=1.0),
                 "sizing.one_event")


def _realized(be):
    return _book(50).realized_pnl


def _exposure_one(be):
    pf = _book(100)
    return lambda: pf.exposure_metrics(2.0)


def _stream_step(be):
    _cpu_only(be)
    rng = np.random.default_rng(11)
    stream = stops.TrailingStopStream(STREAM_SYMBOLS, percent=0.0, multiple=ATR_MULTIPLE)
    bars = itertools.cycle([(100 + rng.normal(0, 1, STREAM_SYMBOLS), np.abs(rng.normal(1, 0.2, STREAM_SYMBOLS)))
                            for _ in range(16)])
    return lambda: stream.update(*next(bars))


def _numpy_peer(make) -> Reference:
    """``make()`` -> a zero-argument NumPy call computing the case's result on the host."""
    return Reference("numpy", make, lambda f: f())


def _sizing_data(books: int):
    rng = np.random.default_rng(21)
    return rng.uniform(1e5, 1e6, (books, 1)), rng.uniform(0.5, 5.0, ASSETS)


def _numpy_fixed_fractional(books: int):
    equity, dist = _sizing_data(books)

    def call():
        size = np.maximum(equity * 0.01, 0.0) / np.where(dist > 0, dist, np.nan)
        return np.floor(size + 1e-9)

    return call


def _batch_sizing(books: int) -> Workload:
    def setup(be):
        equity, dist = (be.asarray(x) for x in _sizing_data(books))
        return lambda: sizing.batch_fixed_fractional_size(equity, 0.01, dist, lot_size=1.0, backend=be.name)

    return Workload(name=f"batch fixed fractional sizing {books}x{ASSETS}", sizes={"books": books, "symbols": ASSETS},
                    setup=setup, run=lambda f: f(), items=books * ASSETS, unit="position", target="sizing.batch",
                    references=(_numpy_peer(lambda: _numpy_fixed_fractional(books)),))


def _exposure_data(books: int):
    rng = np.random.default_rng(22)
    q = rng.integers(-100, 100, (books, ASSETS)).astype(np.float64)
    return q, rng.uniform(10, 200, ASSETS), rng.uniform(1e5, 1e6, books)


def _numpy_exposure(books: int):
    q, p, cash = _exposure_data(books)

    def call():
        value = q * p
        gross, net = np.abs(value).sum(axis=1), value.sum(axis=1)
        equity = cash + net
        return gross, net, gross / equity, np.maximum(2.0 * equity - gross, 0), value / equity[:, None], \
            np.count_nonzero(q, axis=1)

    return call


def _batch_exposure(books: int) -> Workload:
    def setup(be):
        q, p, cash = (be.asarray(x) for x in _exposure_data(books))
        return lambda: batch_exposure(q, p, cash, max_leverage=2.0, backend=be.name)

    return Workload(name=f"batch exposure metrics {books}x{ASSETS}", sizes={"books": books, "assets": ASSETS},
                    setup=setup, run=lambda f: f(), items=books, unit="book", target="sizing.exposure_batch",
                    references=(_numpy_peer(lambda: _numpy_exposure(books)),))


def _bars(shape):
    rng = np.random.default_rng(23)
    close = 100 + np.cumsum(rng.normal(0, 1, shape), axis=1)
    return close + rng.uniform(0, 1, shape), close - rng.uniform(0, 1, shape), close


def _trailing(shape) -> Workload:
    def setup(be):
        high, low, close = _bars(shape)
        atr = np.abs(np.random.default_rng(24).normal(1, 0.2, shape))
        h, a = be.asarray(high), be.asarray(atr)
        return lambda: stops.trailing_stop(h, atr=a, multiple=ATR_MULTIPLE, backend=be.name)

    def peer():
        high, _, _ = _bars(shape)
        atr = np.abs(np.random.default_rng(24).normal(1, 0.2, shape))
        return lambda: np.fmax.accumulate(high - ATR_MULTIPLE * atr, axis=1)

    n, t = shape
    return Workload(name=f"trailing stop (ATR multiple) {n}x{t} bars", sizes={"symbols": n, "bars": t}, setup=setup,
                    run=lambda f: f(), items=n * t, unit="bar", target="sizing.stops_batch",
                    references=(_numpy_peer(peer),))


def _chandelier(shape) -> Workload:
    def setup(be):
        h, lo, c = (be.asarray(x) for x in _bars(shape))
        return lambda: stops.chandelier_exit(h, lo, c, window=CHANDELIER_WINDOW, multiple=ATR_MULTIPLE,
                                             backend=be.name)

    def pandas_peer():
        import pandas as pd

        high, low, close = _bars(shape)
        return lambda: pd.DataFrame(high.T).rolling(CHANDELIER_WINDOW).max()

    n, t = shape
    return Workload(name=f"chandelier exit {n}x{t} bars", sizes={"symbols": n, "bars": t}, setup=setup,
                    run=lambda f: f(), items=n * t, unit="bar", target="sizing.chandelier",
                    references=(Reference("pandas", pandas_peer, lambda f: f(), requires="pandas"),))


def _drawdown(books: int) -> Workload:
    def returns():
        return np.random.default_rng(25).standard_t(4, size=(books, 252)) * 0.01

    def setup(be):
        r = be.asarray(returns())
        return lambda: risk.max_drawdown(r, backend=be.name)

    def peer():
        r = returns()

        def call():
            wealth = np.cumprod(1.0 + r, axis=1)
            return (1.0 - wealth / np.maximum.accumulate(wealth, axis=1)).max(axis=1)

        return call

    return Workload(name=f"max drawdown {books} books x 252 days", sizes={"books": books, "days": 252}, setup=setup,
                    run=lambda f: f(), items=books * 252, unit="day", target="sizing.drawdown",
                    references=(_numpy_peer(peer),))


def workloads(size: str) -> list[Workload]:
    """All cases; ``size`` picks the batched cases' portfolios (``PNL_PORTFOLIOS``)."""
    out = [
        _case("position update (set_position)", {"positions": 50}, _position_update, "portfolio.position"),
        _case("position add + remove (2 ops)", {"positions": 50}, _position_add_remove, "portfolio.position_pair"),
        _case("unrealized P&L, one position", {"positions": 1}, _unrealized_one, "portfolio.unrealized"),
        _case("total P&L, 50 positions", {"positions": 50}, _total_pnl, "portfolio.total_pnl"),
    ]
    for n in TRADE_BATCHES:
        label = "trade processing, one fill" if n == 1 else f"trade processing, batch of {n}"
        target = "portfolio.trade" if n == 1 else "portfolio.trade_batch"
        out.append(_case(label, {"trades": n}, _trades(n), target, unit="trade", items=n))
    out += [_case(f"snapshot, {n} positions", {"positions": n}, _snapshot(n), "portfolio.snapshot")
            for n in SNAPSHOT_SIZES]
    out += [_case(f"concurrent access, {t} threads x {CONCURRENT_FILLS} fills", {"threads": t},
                  _concurrent(t), "portfolio.concurrent", unit="trade", items=t * CONCURRENT_FILLS)
            for t in THREADS]
    for label, model in (("fixed", FixedCommission(1.0)), ("percentage", PercentageCommission(5e-4, 1.0)),
                         ("tiered", TieredCommission(TIERS, 1.0))):
        out.append(_case(f"commission, {label}", {"fills": 1}, _commission(model), "portfolio.commission"))
    out.append(_case("position limit check, 100 positions", {"positions": 100}, _limit_check,
                     "portfolio.limit_check"))
    n_pf = PNL_PORTFOLIOS[size]
    out += [_batch_pnl(n_pf, False), _batch_pnl(n_pf // 10, True), _batch_fills(n_pf // 10)]
    out += [_one_event_sizing(label) for label in ONE_EVENT_SIZING]
    out += [
        _case("realized P&L, 50 positions", {"positions": 50}, _realized, "sizing.realized"),
        _case("exposure metrics, 100 positions", {"positions": 100}, _exposure_one, "sizing.exposure_one"),
        _case(f"trailing stop stream step, {STREAM_SYMBOLS} symbols", {"symbols": STREAM_SYMBOLS}, _stream_step,
              "sizing.stop_stream", unit="symbol", items=STREAM_SYMBOLS),
    ]
    books = SIZING_BOOKS[size]
    out += [_batch_sizing(books), _batch_exposure(books), _trailing(STOP_SHAPES[size]), _chandelier(STOP_SHAPES[size]),
            _drawdown(books)]
    return out
