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

import math
import sys
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .backend import resolve
from .commissions import NO_COMMISSION, CommissionModel
from .position_math import fill_step
from .profiling import annotate, annotate_methods

__all__ = ["Position", "PortfolioSnapshot", "Portfolio", "batch_apply_fills", "batch_pnl"]

_isfinite = math.isfinite


def _check_symbol(symbol) -> str:
    if type(symbol) is not str or not symbol:
        raise ValueError(f"symbol must be a non-empty str, got {symbol!r}")
    return symbol


def _check_price(price, name: str = "price") -> float:
    p = _check_quantity(price, name)
    if not p > 0.0:
        raise ValueError(f"{name} must be > 0, got {price!r}")
    return p


def _check_commission(commission, name: str = "commission") -> float:
    c = _check_quantity(commission, name)
    if c < 0.0:
        raise ValueError(f"{name} must be >= 0 (a fee paid), got {commission!r}")
    return c


def _check_quantity(quantity, name: str = "quantity") -> float:
    try:
        q = float(quantity)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(quantity).__name__}") from None
    if not _isfinite(q):
        raise ValueError(f"{name} must be finite, got {quantity!r}")
    return q


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


def _frozen(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


@annotate_methods
class Portfolio:
    """Cash plus average-cost positions, safe to update from many threads.

    ``cash``: starting cash (currency, finite). ``commission``: a
    :mod:`gpu_trader.commissions` model (or any ``(quantity, price) -> float``)
    charged on every fill unless the fill names its own commission.

    Positions live in struct-of-arrays form (one slot per symbol), so whole-book
    queries (market value, limit checks, snapshots) are single NumPy expressions.
    Bad input raises ``TypeError``/``ValueError`` naming the argument and leaves the
    portfolio unchanged; a batch is validated in full before any of it is booked.
    """

    def __init__(self, cash: float = 0.0, *, commission: CommissionModel | None = None, capacity: int = 64) -> None:
        c = _check_quantity(cash, "cash")
        if commission is not None and not callable(commission):
            raise TypeError("commission must be a commission model (callable(quantity, price))")
        self._lock = threading.Lock()
        self._commission = commission or NO_COMMISSION
        self._cash = c
        self._initial_cash = c
        self._commissions = 0.0
        self._closed_realized = 0.0  # realized P&L of positions removed from the book
        self._slot: dict[str, int] = {}
        self._symbols: list[str] = []
        cap = max(int(capacity), 1)
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

    # -- write -----------------------------------------------------------------------
    def mark(self, symbol: str, price: float) -> None:
        """Set the mark price of a held symbol (unknown symbols are ignored)."""
        p = _check_price(price)
        with self._lock:
            i = self._slot.get(symbol)
            if i is not None:
                self._last[i] = p

    def mark_many(self, prices: Mapping[str, float]) -> None:
        """Set several marks at once (validated in full first; unknown symbols ignored)."""
        checked = [(s, _check_price(p, f"prices[{s!r}]")) for s, p in prices.items()]
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
        _check_symbol(symbol)
        q = _check_quantity(quantity)
        a = _check_price(avg_cost, "avg_cost") if q else 0.0
        last = _check_price(last_price, "last_price") if last_price is not None else (a or None)
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

    def _book(self, symbol: str, quantity: float, price: float, commission: float) -> float:
        """Book one validated fill; the caller holds the lock."""
        i = self._slot.get(symbol)
        if i is None:
            i = self._new_slot(symbol)
        q, a, realized = fill_step(self._q.item(i), self._avg.item(i), quantity, price)
        self._q[i] = q
        self._avg[i] = a
        self._last[i] = price
        if realized:
            self._real[i] += realized
        self._cash -= quantity * price + commission
        self._commissions += commission
        return realized

    def apply_fill(self, symbol: str, quantity: float, price: float, commission: float | None = None) -> float:
        """Book one fill: ``quantity`` signed (buy > 0), at ``price`` (> 0).

        ``commission`` defaults to the portfolio's model. Cash falls by ``quantity *
        price + commission``; the position follows :func:`~gpu_trader.position_math.fill_step`.
        Returns the P&L this fill realized (gross of commission).
        """
        _check_symbol(symbol)
        q = _check_quantity(quantity)
        p = _check_price(price)
        c = self._commission(q, p) if commission is None else _check_commission(commission)
        with self._lock:
            return self._book(symbol, q, p, c)

    def apply_fills(
        self,
        symbols: Sequence[str],
        quantities: Iterable[float],
        prices: Iterable[float],
        commissions: Iterable[float] | None = None,
    ) -> float:
        """Book a batch of fills in order, atomically: every fill is validated first
        (``ValueError`` naming the index; nothing is booked), then all are booked under
        one lock acquisition. Returns the total realized P&L of the batch."""
        qs = list(quantities)
        ps = list(prices)
        n = len(symbols)
        if len(qs) != n or len(ps) != n:
            raise ValueError(f"symbols, quantities and prices must have the same length, got {n}, {len(qs)}, {len(ps)}")
        cs = None if commissions is None else list(commissions)
        if cs is not None and len(cs) != n:
            raise ValueError(f"commissions must have length {n}, got {len(cs)}")
        model = self._commission
        rows = []
        for k in range(n):
            s, q, p = symbols[k], qs[k], ps[k]
            if type(s) is not str or not s:
                raise ValueError(f"symbols[{k}] must be a non-empty str, got {s!r}")
            q = float(q)
            p = float(p)
            if not _isfinite(q):
                raise ValueError(f"quantities[{k}] must be finite, got {q!r}")
            if not (p > 0.0 and _isfinite(p)):
                raise ValueError(f"prices[{k}] must be finite and > 0, got {p!r}")
            c = model(q, p) if cs is None else _check_commission(cs[k], f"commissions[{k}]")
            rows.append((s, q, p, c))
        book = self._book
        total = 0.0
        with self._lock:
            for s, q, p, c in rows:
                total += book(s, q, p, c)
        return total

    def __repr__(self) -> str:
        return f"Portfolio(cash={self._cash:.2f}, positions={len(self._symbols)})"


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
    (its price is ignored, may be NaN). NaN or inf in a quantity, or in the price of a
    non-zero fill, raises ``ValueError``. Accounting is float64 on every backend.

    Returns ``(quantities, avg_costs, realized)`` of shape ``S`` on the backend, float64;
    the inputs are not modified. Same rules per position as :meth:`Portfolio.apply_fill`.
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
    if not bool(xp.isfinite(fq).all()):
        raise ValueError("fill_quantities must be finite")
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
