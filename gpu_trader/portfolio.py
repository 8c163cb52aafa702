"""Positions, cash and P&L: one thread-safe book, and batched accounting for many books.

:class:`Portfolio` is the one-event path (CPU, plain Python + NumPy): average-cost
positions (long and short, flips through zero), realized and unrealized P&L, single
and batched trade processing with a commission model, snapshots, and a vectorized
position-limit check. Every method takes the portfolio's lock, so concurrent updates
from many threads never lose an update.

:func:`batch_apply_fills` and :func:`batch_pnl` do the same accounting for many
portfolios at once on a backend (``cpu``: numba + NumPy; ``cuda``: numba.cuda + CuPy).

Accounting identity (held exactly up to rounding, and property-tested)::

    cash + market_value == initial_cash + realized + unrealized - commissions

where ``market_value = sum(qty * last_price)`` and ``unrealized = sum(qty * (last_price -
avg_cost))``. ``last_price`` is the latest mark (:meth:`Portfolio.mark`) or fill price.
Units: quantities in instrument units (signed: long > 0), prices in currency per unit,
P&L and cash in currency.
"""
from __future__ import annotations

import itertools
import math
import sys
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .backend import resolve
from .commissions import NO_COMMISSION, CommissionModel, commission_for
from ._internal import sizing_xp
from ._internal.position_loops import fill_step
from ._internal.validation import check_count, nonnegative_number, positive_number, real_number
from .profiling import annotate, annotate_methods

__all__ = ["Position", "PortfolioSnapshot", "BookExposure", "Portfolio", "batch_apply_fills", "batch_pnl",
           "batch_exposure"]


def _check_symbol(symbol, name: str = "symbol") -> str:
    """A non-empty str (a subclass such as ``np.str_`` becomes a plain str), else ``ValueError``."""
    if type(symbol) is str and symbol:
        return symbol
    if not isinstance(symbol, str):
        raise ValueError(f"{name} must be a non-empty str, got a {type(symbol).__name__}")
    if not symbol:
        raise ValueError(f"{name} must be a non-empty str, got ''")
    return str.__str__(symbol)


def _check_limit(limit, name: str) -> float | None:
    """A position limit: ``None`` (not checked) or a real number >= 0 (``inf`` allowed)."""
    if limit is None:
        return None
    v = real_number(limit, name, finite=False)
    if v < 0.0:
        raise ValueError(f"{name} must be >= 0, got {limit!r}")
    return v


MAX_CAPACITY = 1 << 20
_INF = math.inf


@dataclass(frozen=True, slots=True)
class Position:
    """One position at one moment (immutable).

    ``quantity`` signed; ``avg_cost`` average entry price (0 when flat); ``last_price``
    latest mark or fill price; ``realized_pnl`` gross of commissions.
    """

    symbol: str
    quantity: float
    avg_cost: float
    last_price: float
    realized_pnl: float

    @property
    def market_value(self) -> float:
        return self.quantity * self.last_price

    @property
    def unrealized_pnl(self) -> float:
        return self.quantity * (self.last_price - self.avg_cost)


@annotate_methods
@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """A consistent, immutable copy of a portfolio (taken under its lock).

    Arrays are read-only float64 ``(n_positions,)``, aligned with ``symbols``.
    ``realized_pnl`` includes positions removed since; ``commissions`` is the total paid.
    """

    cash: float
    initial_cash: float
    commissions: float
    realized_pnl: float
    symbols: tuple[str, ...]
    quantities: np.ndarray
    avg_costs: np.ndarray
    last_prices: np.ndarray
    position_realized: np.ndarray

    @property
    def market_value(self) -> float:
        return float(self.quantities @ self.last_prices)

    @property
    def unrealized_pnl(self) -> float:
        return float(self.quantities @ (self.last_prices - self.avg_costs))

    @property
    def equity(self) -> float:
        return self.cash + self.market_value

    @property
    def total_pnl(self) -> float:
        return self.realized_pnl + self.unrealized_pnl - self.commissions

    def position(self, symbol: str) -> Position | None:
        try:
            i = self.symbols.index(symbol)
        except ValueError:
            return None
        return Position(symbol, float(self.quantities[i]), float(self.avg_costs[i]),
                        float(self.last_prices[i]), float(self.position_realized[i]))


@dataclass(frozen=True, slots=True)
class BookExposure:
    """Exposure metrics of one book at its last prices (:meth:`Portfolio.exposure_metrics`).

    ``gross`` ``sum |q * last|`` and ``net`` ``sum q * last`` (currency); ``equity`` ``cash +
    net``; ``leverage`` ``gross / equity`` (NaN when ``equity <= 0``); ``buying_power``
    ``max(max_leverage * equity - gross, 0)``; ``weights`` symbol -> ``q * last / equity``
    (NaN when ``equity <= 0``) for every non-zero position; ``positions`` their count.
    """

    gross: float
    net: float
    equity: float
    leverage: float
    buying_power: float
    weights: Mapping[str, float]
    positions: int


def _frozen(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


@annotate_methods
class Portfolio:
    """Cash plus average-cost positions, safe to update from many threads.

    ``cash``: starting cash (currency, finite). ``commission``: a
    :mod:`gpu_trader.commissions` model (or any ``(quantity, price) -> float``)
    charged on every fill unless the fill names its own commission; its answer must be
    a finite real >= 0 (see :func:`~gpu_trader.commissions.commission_for`), else the
    fill is refused. ``capacity``: initial number of position slots (an int in
    ``[1, 2**20]``; the book grows as needed).

    Positions live in struct-of-arrays form (one slot per symbol), so whole-book
    queries (market value, limit checks, snapshots) are single NumPy expressions.
    Numbers are real numbers (Python or NumPy scalars, never ``bool``). Bad input
    raises ``TypeError``/``ValueError`` naming the argument and leaves the portfolio
    unchanged: a fill (or a whole batch) is validated in full, its commission
    included, before any of it is booked, so a fill is applied all-or-nothing.
    """

    def __init__(self, cash: float = 0.0, *, commission: CommissionModel | None = None, capacity: int = 64) -> None:
        c = real_number(cash, "cash")
        if commission is not None and not callable(commission):
            raise TypeError("commission must be a commission model (callable(quantity, price))")
        cap = check_count(capacity, "capacity", 1, MAX_CAPACITY)
        self._lock = threading.Lock()
        self._commission = NO_COMMISSION if commission is None else commission
        self._cash = c
        self._initial_cash = c
        self._commissions = 0.0
        self._closed_realized = 0.0  # realized P&L of positions removed from the book
        self._slot: dict[str, int] = {}
        self._symbols: list[str] = []
        self._q = np.zeros(cap)
        self._avg = np.zeros(cap)
        self._last = np.zeros(cap)
        self._real = np.zeros(cap)

    # -- slots -----------------------------------------------------------------------
    def _new_slot(self, symbol: str) -> int:
        i = len(self._symbols)
        if i == self._q.shape[0]:
            for name in ("_q", "_avg", "_last", "_real"):
                old = getattr(self, name)
                new = np.zeros(2 * i)
                new[:i] = old
                setattr(self, name, new)
        self._q[i] = self._avg[i] = self._last[i] = self._real[i] = 0.0
        self._symbols.append(symbol)
        self._slot[symbol] = i  # published last: lock-free readers never see a stale slot
        return i

    def _position(self, i: int) -> Position:
        return Position(self._symbols[i], self._q.item(i), self._avg.item(i), self._last.item(i), self._real.item(i))

    # -- read ------------------------------------------------------------------------
    @property
    def cash(self) -> float:
        return self._cash

    @property
    def initial_cash(self) -> float:
        return self._initial_cash

    @property
    def commissions(self) -> float:
        """Total commissions paid (currency)."""
        return self._commissions

    @property
    def commission_model(self):
        return self._commission

    @property
    def symbols(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._symbols)

    def __len__(self) -> int:
        return len(self._symbols)

    def quantity(self, symbol: str) -> float:
        """Signed quantity held in ``symbol`` (0.0 when there is no position). A lock-free
        read of one slot (writers fill a slot before publishing it), the fast lookup of
        pre-trade checks; it may miss a fill booked by another thread at the same moment."""
        i = self._slot.get(symbol)
        return 0.0 if i is None else self._q.item(i)

    def last_price(self, symbol: str) -> float | None:
        """Latest mark or fill price of ``symbol``; ``None`` when it is not held."""
        i = self._slot.get(symbol)
        return None if i is None else self._last.item(i)

    def position(self, symbol: str) -> Position | None:
        with self._lock:
            i = self._slot.get(symbol)
            return None if i is None else self._position(i)

    def positions(self) -> dict[str, Position]:
        with self._lock:
            return {s: self._position(i) for i, s in enumerate(self._symbols)}

    def market_value(self) -> float:
        with self._lock:
            n = len(self._symbols)
            return float(self._q[:n] @ self._last[:n])

    def unrealized_pnl(self, symbol: str | None = None) -> float:
        """Unrealized P&L of one position (0.0 if not held), or of the whole book."""
        with self._lock:
            if symbol is not None:
                i = self._slot.get(symbol)
                return 0.0 if i is None else self._q.item(i) * (self._last.item(i) - self._avg.item(i))
            n = len(self._symbols)
            return float(self._q[:n] @ (self._last[:n] - self._avg[:n]))

    def realized_pnl(self, symbol: str | None = None) -> float:
        """Realized P&L (gross of commissions) of one position, or of the whole book
        including positions removed since."""
        with self._lock:
            if symbol is not None:
                i = self._slot.get(symbol)
                return 0.0 if i is None else self._real.item(i)
            return self._closed_realized + float(self._real[: len(self._symbols)].sum())

    def total_pnl(self) -> float:
        """``realized + unrealized - commissions`` of the whole book."""
        with self._lock:
            n = len(self._symbols)
            q, last = self._q[:n], self._last[:n]
            return float(self._closed_realized + self._real[:n].sum() + q @ (last - self._avg[:n]) - self._commissions)

    def equity(self) -> float:
        """``cash + market value``."""
        with self._lock:
            n = len(self._symbols)
            return self._cash + float(self._q[:n] @ self._last[:n])

    def snapshot(self) -> PortfolioSnapshot:
        """A consistent immutable copy of the whole book."""
        with self._lock:
            n = len(self._symbols)
            return PortfolioSnapshot(
                self._cash, self._initial_cash, self._commissions,
                self._closed_realized + float(self._real[:n].sum()), tuple(self._symbols),
                _frozen(self._q[:n]), _frozen(self._avg[:n]), _frozen(self._last[:n]), _frozen(self._real[:n]),
            )

    def check_position_limits(self, max_quantity: float | None = None,
                              max_notional: float | None = None) -> tuple[str, ...]:
        """Symbols whose ``|quantity|`` exceeds ``max_quantity`` or whose ``|quantity| *
        last_price`` exceeds ``max_notional`` (either may be ``None``: not checked);
        ``()`` when all are within limits. One vectorized pass over the book."""
        max_quantity = _check_limit(max_quantity, "max_quantity")
        max_notional = _check_limit(max_notional, "max_notional")
        with self._lock:
            n = len(self._symbols)
            q = np.abs(self._q[:n])
            bad = None
            if max_quantity is not None:
                bad = q > max_quantity
            if max_notional is not None:
                over = q * self._last[:n] > max_notional
                bad = over if bad is None else bad | over
            if bad is None or not bad.any():
                return ()
            return tuple(self._symbols[i] for i in np.flatnonzero(bad))

    def position_count(self) -> int:
        """Number of non-zero positions (flat slots kept in the book are not counted). A
        lock-free read like :meth:`quantity` (one vectorized pass over the slots): the
        pre-trade check of ``RiskLimits.max_positions``."""
        return int(np.count_nonzero(self._q[: len(self._symbols)]))

    def exposure_metrics(self, max_leverage: float = 1.0) -> BookExposure:
        """Gross and net exposure, equity, leverage, buying power under ``max_leverage``
        (a real > 0), weights and position count of the book at its last prices, under
        the lock (one consistent view): :class:`BookExposure`, the one-book form of
        :func:`batch_exposure`."""
        lev = positive_number(max_leverage, "max_leverage")
        with self._lock:  # copy the view, compute outside: fills never wait on the arithmetic
            n = len(self._symbols)
            symbols, q, last, cash = self._symbols[:n], self._q[:n].copy(), self._last[:n].copy(), self._cash
        m = sizing_xp.exposure(np, q[None, :], last, np.array([cash]), lev)
        weights = {s: w for s, w, held in zip(symbols, m["weights"][0].tolist(), q.tolist()) if held}
        return BookExposure(float(m["gross"][0]), float(m["net"][0]), float(m["equity"][0]),
                            float(m["leverage"][0]), float(m["buying_power"][0]), weights, int(m["positions"][0]))

    # -- write -----------------------------------------------------------------------
    def mark(self, symbol: str, price: float) -> None:
        """Set the mark price (a finite real > 0) of a held symbol (unknown symbols are ignored)."""
        p = positive_number(price, "price")
        with self._lock:
            i = self._slot.get(symbol)
            if i is not None:
                self._last[i] = p

    def mark_many(self, prices: Mapping[str, float]) -> None:
        """Set several marks at once (validated in full first; unknown symbols ignored)."""
        if not isinstance(prices, Mapping):
            raise TypeError(f"prices must be a mapping symbol -> price, got {type(prices).__name__}")
        checked = [(s, positive_number(p, f"prices[{s!r}]")) for s, p in prices.items()]
        with self._lock:
            for s, p in checked:
                i = self._slot.get(s)
                if i is not None:
                    self._last[i] = p

    def set_position(self, symbol: str, quantity: float, avg_cost: float, last_price: float | None = None) -> None:
        """Add or overwrite a position without any cash flow (loading a book, a transfer).

        This is bookkeeping, not a trade: equity changes by the difference in market
        value and no P&L is booked. ``last_price`` defaults to ``avg_cost``.
        """
        symbol = _check_symbol(symbol)
        q = real_number(quantity, "quantity")
        a = positive_number(avg_cost, "avg_cost") if q else 0.0
        last = positive_number(last_price, "last_price") if last_price is not None else (a or None)
        with self._lock:
            i = self._slot.get(symbol)
            if i is None:
                i = self._new_slot(symbol)
            self._q[i] = q
            self._avg[i] = a
            if last is not None:
                self._last[i] = last

    def remove_position(self, symbol: str) -> Position | None:
        """Drop a symbol from the book without any cash flow; returns what was removed.
        Its realized P&L stays in the book's total."""
        with self._lock:
            i = self._slot.pop(symbol, None)
            if i is None:
                return None
            removed = self._position(i)
            self._closed_realized += removed.realized_pnl
            last = len(self._symbols) - 1
            if i != last:  # keep the arrays dense: move the last slot into the hole
                moved = self._symbols[last]
                for a in (self._q, self._avg, self._last, self._real):
                    a[i] = a[last]
                self._symbols[i] = moved
                self._slot[moved] = i  # after the copy: lock-free readers see whole slots
            self._symbols.pop()
            return removed

    def _held(self, i: int | None) -> tuple[float, float, float]:
        """``(quantity, avg_cost, realized)`` of slot ``i`` (zeros for ``None``: not held)."""
        return (0.0, 0.0, 0.0) if i is None else (self._q.item(i), self._avg.item(i), self._real.item(i))

    def _write(self, i: int | None, symbol: str, quantity: float, avg_cost: float, last: float,
               realized: float) -> None:
        """Store ``symbol``'s new values in slot ``i`` (a new slot for ``None``); the caller
        holds the lock."""
        if i is None:
            i = self._new_slot(symbol)
        self._q[i] = quantity
        self._avg[i] = avg_cost
        self._last[i] = last
        self._real[i] = realized

    def _book(self, symbol: str, quantity: float, price: float, commission: float) -> float:
        """Book one validated fill; the caller holds the lock. Every new value is computed
        (and checked, see :func:`_after_fill`) before the first write."""
        i = self._slot.get(symbol)
        position, realized, cash, commissions = _after_fill(
            self._held(i), self._cash, self._commissions, quantity, price, commission, "the fill")
        self._write(i, symbol, position[0], position[1], price, position[2])
        self._cash = cash
        self._commissions = commissions
        return realized

    def _book_all(self, rows: list[tuple[str, float, float, float]]) -> float:
        """Book validated fills ``(symbol, quantity, price, commission)`` in order, all or
        none; the caller holds the lock. The whole batch is computed (and checked) on a
        scratch copy of the positions it touches before the first write."""
        positions: dict[str, tuple[float, float, float]] = {}
        last: dict[str, float] = {}
        cash, commissions, total = self._cash, self._commissions, 0.0
        for k, (s, q, p, c) in enumerate(rows):
            held = positions[s] if s in positions else self._held(self._slot.get(s))
            positions[s], realized, cash, commissions = _after_fill(held, cash, commissions, q, p, c, f"fill [{k}]")
            last[s] = p
            total += realized
        for s, (q, a, r) in positions.items():
            self._write(self._slot.get(s), s, q, a, last[s], r)
        self._cash = cash
        self._commissions = commissions
        return total

    def apply_fill(self, symbol: str, quantity: float, price: float, commission: float | None = None) -> float:
        """Book one fill: ``quantity`` signed (buy > 0), at ``price`` (> 0).

        ``commission`` (>= 0) defaults to the portfolio's model. Cash falls by
        ``quantity * price + commission``; the position follows
        :func:`~gpu_trader._internal.position_loops.fill_step`. Everything, the model's commission
        included, is checked before anything is written, and so is the book after the fill
        (a fill so large that cash, the position, its cost or P&L would overflow the
        float64 range is a ``ValueError``): on ``TypeError``/``ValueError`` the book is
        unchanged. Returns the P&L this fill realized (gross of commission).
        """
        if type(symbol) is not str or not symbol:
            symbol = _check_symbol(symbol)
        q = quantity if type(quantity) is float and -_INF < quantity < _INF else real_number(quantity, "quantity")
        p = price if type(price) is float and 0.0 < price < _INF else positive_number(price, "price")
        if commission is None:
            c = commission_for(self._commission, q, p)
        else:
            c = nonnegative_number(commission, "commission")
        with self._lock:
            return self._book(symbol, q, p, c)

    def apply_fills(
        self,
        symbols: Sequence[str],
        quantities: Iterable[float],
        prices: Iterable[float],
        commissions: Iterable[float] | None = None,
    ) -> float:
        """Book a batch of fills in order, atomically: every fill, its commission (given,
        or the model's) included, is validated first (``TypeError``/``ValueError`` naming
        the index; nothing is booked), then the book after the whole batch is computed
        and checked like :meth:`apply_fill`'s, and only then written, under one lock
        acquisition. ``symbols`` is a sequence (a NumPy array of str included); the
        other arguments may be any iterables (read-only arrays included; never written),
        and each is read for at most ``len(symbols) + 1`` items. Returns the total
        realized P&L of the batch."""
        for name, arg in (("symbols", symbols), ("quantities", quantities), ("prices", prices),
                          ("commissions", commissions)):
            if isinstance(arg, (str, bytes)) or (arg is not None and not isinstance(arg, Iterable)):
                raise TypeError(f"{name} must be a sequence of fills' values, not a {type(arg).__name__}")
        if not hasattr(symbols, "__len__") or not hasattr(symbols, "__getitem__"):
            raise TypeError(f"symbols must be a sequence (with a length), got {type(symbols).__name__}")
        n = len(symbols)
        qs = _take(quantities, n, "quantities")
        ps = _take(prices, n, "prices")
        cs = None if commissions is None else _take(commissions, n, "commissions")
        rows = []
        for k in range(n):
            s = _check_symbol(symbols[k], f"symbols[{k}]")
            q = real_number(qs[k], f"quantities[{k}]")
            p = positive_number(ps[k], f"prices[{k}]")
            c = commission_for(self._commission, q, p) if cs is None else nonnegative_number(cs[k], f"commissions[{k}]")
            rows.append((s, q, p, c))
        with self._lock:
            return self._book_all(rows)

    def __repr__(self) -> str:
        return f"Portfolio(cash={self._cash:.2f}, positions={len(self._symbols)})"


def _take(values: Iterable, n: int, name: str) -> list:
    """The ``n`` items of ``values`` as a list (at most ``n + 1`` are read), else ``ValueError``."""
    items = list(itertools.islice(values, n + 1))
    if len(items) != n:
        raise ValueError(f"symbols, quantities and prices (and commissions) must have the same length: {n} "
                         f"symbols, {'more' if len(items) > n else len(items)} {name}")
    return items


def _after_fill(held: tuple[float, float, float], cash: float, commissions: float, quantity: float, price: float,
                commission: float, what: str) -> tuple[tuple[float, float, float], float, float, float]:
    """One fill applied to ``held`` = ``(quantity, avg_cost, realized)`` and the book's cash
    and commission total, without writing anything: ``((quantity, avg_cost, realized),
    realized by this fill, cash, commissions)``. ``ValueError`` naming ``what`` when a
    result is not finite (the fill is too large for float64 accounting)."""
    q, a, realized = fill_step(held[0], held[1], quantity, price)
    total_realized = held[2] + realized
    cash = cash - (quantity * price + commission)
    commissions = commissions + commission
    if not (math.isfinite(q) and math.isfinite(a) and math.isfinite(total_realized) and math.isfinite(cash)
            and math.isfinite(commissions)):
        raise ValueError(f"{what} ({quantity:g} at {price:g}) would overflow the book: cash, position, average "
                         "cost or P&L beyond the float64 range; nothing was booked")
    return (q, a, total_realized), realized, cash, commissions


# -- many portfolios at once (backend) --------------------------------------------------
def _values(*arrays):
    """pandas objects as their plain values: here rows are portfolios, not time, so the
    time-along-the-index convention of :func:`gpu_trader.backend.resolve` does not apply."""
    pd = sys.modules.get("pandas")
    if pd is None:
        return arrays
    return tuple(a.to_numpy() if isinstance(a, (pd.Series, pd.DataFrame)) else a for a in arrays)


@annotate
def batch_apply_fills(quantities, avg_costs, fill_quantities, fill_prices, *, realized=None, backend=None):
    """Apply K fills to each of many positions at once (e.g. portfolios x assets).

    ``quantities``, ``avg_costs`` (and ``realized``, default zeros): shape ``S`` (any,
    e.g. ``(n_portfolios, n_assets)``); ``fill_quantities``, ``fill_prices``: shape
    ``S + (K,)``, fills in time order along the last axis; a zero quantity is no fill
    (its price is ignored, may be NaN). NaN or inf in a position (quantity, average
    cost, realized), in a fill quantity, or in the price of a non-zero fill, raises
    ``ValueError``. Accounting is float64 on every backend.

    Returns ``(quantities, avg_costs, realized)`` of shape ``S`` on the backend, float64;
    the inputs may be read-only (pandas copy-on-write arrays, say) and are never
    modified. Same rules per position as :meth:`Portfolio.apply_fill`.
    """
    quantities, avg_costs, fill_quantities, fill_prices, realized = _values(
        quantities, avg_costs, fill_quantities, fill_prices, realized)
    be, (q, a), _ = resolve((quantities, avg_costs), ("quantities", "avg_costs"), backend)
    _, (fq, fp), _ = resolve((fill_quantities, fill_prices), ("fill_quantities", "fill_prices"), be)
    xp = be.xp
    if fq.shape[:-1] != q.shape:
        raise ValueError(f"fill_quantities has shape {fq.shape}; it must be quantities' shape {q.shape} + (K,)")
    if realized is None:
        z = xp.zeros(q.shape, dtype=xp.float64)
    else:
        _, (z,), _ = resolve((realized,), ("realized",), be)
        if z.shape != q.shape:
            raise ValueError(f"realized has shape {z.shape}; it must match quantities {q.shape}")
    for name, x in (("quantities", q), ("avg_costs", a), ("realized", z), ("fill_quantities", fq)):
        if not bool(xp.isfinite(x).all()):
            raise ValueError(f"{name} must be finite")
    if not bool((xp.isfinite(fp) & (fp > 0) | (fq == 0)).all()):
        raise ValueError("fill_prices must be finite and > 0 wherever fill_quantities is non-zero")
    shape = q.shape
    k = fq.shape[-1]
    out = be.ops("portfolio").apply_fills(
        q.reshape(-1), a.reshape(-1), z.reshape(-1), fq.reshape(-1, k), fp.reshape(-1, k)
    )
    return tuple(o.reshape(shape) for o in out)


@annotate
def batch_pnl(quantities, avg_costs, prices, *, backend=None):
    """Market value and unrealized P&L of many portfolios, at one mark or along a price path.

    ``quantities``, ``avg_costs``: ``(n_portfolios, n_assets)``; ``prices``:
    ``(n_assets,)`` or ``(n_assets, T)`` (time last). Returns ``(market_value,
    unrealized)`` each ``(n_portfolios,)`` or ``(n_portfolios, T)`` on the backend, in the
    inputs' float dtype (float32 stays float32; mixed dtypes compute in float64). NaN
    prices propagate to the portfolios holding (or with zero quantity in) that asset.
    pandas inputs are read as their values (rows: portfolios); results are arrays.
    Inputs may be read-only and are never modified.
    """
    quantities, avg_costs, prices = _values(quantities, avg_costs, prices)
    be, (q, a), _ = resolve((quantities, avg_costs), ("quantities", "avg_costs"), backend)
    _, (p,), _ = resolve((prices,), ("prices",), be)
    if q.ndim != 2:
        raise ValueError(f"quantities must be (n_portfolios, n_assets), got shape {q.shape}")
    if p.ndim not in (1, 2) or p.shape[0] != q.shape[1]:
        raise ValueError(f"prices must be (n_assets,) or (n_assets, T) with n_assets={q.shape[1]}, got {p.shape}")
    if p.dtype != q.dtype:
        q, a, p = (x.astype(be.xp.float64) for x in (q, a, p))
    return be.ops("portfolio").mark_to_market(q, a, p)


@annotate
def batch_exposure(quantities, prices, cash, *, max_leverage=1.0, backend=None):
    """Exposure metrics of many books at once.

    ``quantities`` ``(B, n)`` (signed units), ``prices`` ``(n,)`` or ``(B, n)``, ``cash``
    ``(B,)`` (or a number); ``max_leverage`` a real > 0. Returns a dict of arrays on the
    backend: ``gross``, ``net``, ``equity``, ``leverage``, ``buying_power`` float64 ``(B,)``,
    ``weights`` float64 ``(B, n)`` and ``positions`` int64 ``(B,)``, defined as in
    :class:`BookExposure` (:func:`gpu_trader._internal.sizing_xp.exposure`). A NaN price
    makes the sums of every book NaN (holding that asset or not, as in :func:`batch_pnl`);
    ``equity <= 0`` gives NaN leverage and weights. Inputs (read-only, float32, non-contiguous accepted)
    are never modified.
    """
    from .sizing import batch_arrays

    lev = positive_number(max_leverage, "max_leverage")
    quantities, prices, cash = _values(quantities, prices, cash)
    xp, (q, p, c) = batch_arrays({"quantities": quantities, "prices": prices, "cash": cash}, backend,
                                  broadcast=False)
    if getattr(q, "ndim", 0) != 2:
        raise ValueError(f"quantities must be (n_books, n_assets), got shape {getattr(q, 'shape', ())}")
    if getattr(p, "shape", None) not in ((q.shape[1],), q.shape):
        raise ValueError(f"prices must be ({q.shape[1]},) or {q.shape}, got shape {getattr(p, 'shape', ())}")
    if getattr(c, "shape", (q.shape[0],)) != (q.shape[0],):
        raise ValueError(f"cash must be a number or ({q.shape[0]},), got shape {c.shape}")
    return sizing_xp.exposure(xp, q, p, c, lev)
