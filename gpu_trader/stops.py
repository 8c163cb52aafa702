"""Stop levels: percent, ATR multiple, trailing and chandelier stops, a streaming trailing stop,
and the stop check over a book.

Levels are prices (currency per unit). ``side="long"`` places the stop below the price (a
long position exits when the price falls to it), ``side="short"`` above. Batched functions
take arrays with time last, ``(..., T)`` (one series ``(T,)``, symbols x time ``(n, T)``),
return float64 on the backend of the first array (:mod:`gpu_trader.backend`) and never
modify their inputs; float32, read-only and non-contiguous inputs are accepted.

* :func:`percent_stop`: ``entry * (1 - percent)`` (long) or ``entry * (1 + percent)`` (short);
* :func:`atr_stop`: ``entry -+ multiple * ATR(window)`` at every bar, the TA-Lib ATR of
  :func:`gpu_trader.indicators.atr` (NaN during its lookback);
* :func:`trailing_stop`: from the entry bar ``start`` on, the tightest (highest for a
  long, lowest for a short) of ``price * (1 -+ percent) -+ multiple * atr`` over the bars
  since entry: it never loosens. ``price`` is the series the stop trails (the close, or the
  high for a long and the low for a short); NaN before ``start`` and until the first
  bar with a valid value; a NaN bar leaves the stop where it is;
* :func:`chandelier_exit`: ``highest high(window) - multiple * ATR(window)`` (long) or
  ``lowest low(window) + multiple * ATR(window)`` (short), NaN where the window holds a NaN
  or ATR has no value (not ratcheted: apply :func:`trailing_stop` to it to make it one-way);
* :class:`TrailingStopStream`: :func:`trailing_stop` one bar at a time for many symbols,
  equal to the batch bar by bar;
* :class:`ChandelierStream`: :func:`chandelier_exit` one bar at a time for many symbols,
  equal to the batch bar by bar (its ATR is a :class:`~gpu_trader.streaming.FeatureStream`'s);
* :func:`stop_check`: which positions a price reaches the stop of; :func:`stop_orders`: the
  market orders closing a :class:`~gpu_trader.portfolio.Portfolio`'s stopped positions.

The recurrences run the row bodies of :mod:`gpu_trader._internal.stop_loops` (numba on the
CPU, numba.cuda on the GPU) through ``backend.ops("sizing")``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import numpy as np

from .backend import resolve
from .indicators import atr as _atr
from .orders import BUY, SELL, Order, market_order
from .profiling import annotate, annotate_methods
from ._internal.validation import check_allocation, check_count, nonnegative_number, real_array, real_number

__all__ = ["percent_stop", "atr_stop", "trailing_stop", "chandelier_exit", "TrailingStopStream",
           "ChandelierStream", "stop_check", "stop_orders", "SIDES"]

SIDES = ("long", "short")


def _short_side(side) -> bool:
    if side not in SIDES or not isinstance(side, str):
        raise ValueError(f"side must be 'long' or 'short', got {side!r}"[:200])
    return side == "short"


def _series(arrays: tuple, names: tuple, backend):
    """The inputs on one backend as float64 arrays of one shape ``(..., T)``, with the backend
    and its ``sizing`` ops (``AreaNotImplemented`` for a backend without them)."""
    be, out, _ = resolve(arrays, names, backend)
    ops = be.ops("sizing")
    return be, ops, [x.astype(ops.xp.float64, copy=False) for x in out]


def _rows(xp, x):
    """``x`` ``(..., T)`` as a C-contiguous float64 ``(R, T)`` array (``T`` may be 0)."""
    return xp.ascontiguousarray(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]), dtype=xp.float64)


@annotate
def percent_stop(entry, percent, *, side: str = "long", backend=None):
    """``entry * (1 - percent)`` for a long, ``entry * (1 + percent)`` for a short, elementwise:
    ``entry`` an array of entry prices (any shape), ``percent`` a number in ``[0, 1)`` (0.02 = 2 %).
    NaN entries give NaN."""
    short = _short_side(side)
    f = nonnegative_number(percent, "percent")
    if f >= 1.0:
        raise ValueError(f"percent must be < 1 (a fraction of the entry price), got {percent!r}")
    _, _, (e,) = _series((entry,), ("entry",), backend)
    return e * (1.0 + f) if short else e * (1.0 - f)


@annotate
def atr_stop(entry, high, low, close, *, window: int = 14, multiple: float = 3.0, side: str = "long",
             backend=None):
    """``entry - multiple * ATR`` (long) or ``entry + multiple * ATR`` (short) at every bar:
    ``high``, ``low``, ``close`` ``(..., T)``; ``entry`` ``(...)`` (one price per series; a
    number for one series ``(T,)``) or ``(..., T)``; ``window`` the ATR window, ``multiple`` >= 0.
    Returns ``(..., T)``, NaN during the ATR's lookback."""
    short = _short_side(side)
    k = nonnegative_number(multiple, "multiple")
    be, ops, (h, lo, c) = _series((high, low, close), ("high", "low", "close"), backend)
    a = ops.xp.asarray(_atr(h, lo, c, window, backend=be), dtype=ops.xp.float64)
    if h.ndim == 1 and isinstance(entry, numbers.Real) and not isinstance(entry, (bool, np.bool_)):
        e = _number_or_nan(entry, "entry")  # one series: its entry price, a number (NaN gives NaN)
        return e + k * a if short else e - k * a
    _, _, (e,) = _series((entry,), ("entry",), be)
    if e.shape == h.shape[:-1]:
        e = e[..., None]
    elif e.shape != h.shape:
        raise ValueError(f"entry must have shape {h.shape[:-1]} (one per series) or {h.shape}, got {e.shape}")
    return e + k * a if short else e - k * a


def _starts(xp, start, shape: tuple) -> Any:
    """``start`` (an int or integers of shape ``shape[:-1]``) as int64 ``(R,)`` on ``xp``; a
    start beyond ``T`` is stored as ``T`` (all NaN either way; no int64 overflow or wrap)."""
    lead, T = shape[:-1], shape[-1]
    if isinstance(start, (int, np.integer)) and not isinstance(start, (bool, np.bool_)):
        if int(start) < 0:
            raise ValueError("start must be >= 0 (the entry bar of each series)")
        s = np.full(lead, min(int(start), T), dtype=np.int64)
    else:
        s = real_array(start, "start")
        if s.dtype.kind not in "iu":
            raise TypeError(f"start must be an int or an integer array, got dtype {s.dtype}")
        if s.shape != lead:
            raise ValueError(f"start must be an int or have shape {lead} (one entry bar per series), got {s.shape}")
    if s.size and int(s.min()) < 0:
        raise ValueError("start must be >= 0 (the entry bar of each series)")
    s = np.minimum(s, T)  # a uint64 beyond int64 would wrap negative: clip first (exactly, in its own dtype)
    return xp.asarray(np.ascontiguousarray(s.reshape(-1), dtype=np.int64))


@annotate
def trailing_stop(price, *, percent: float = 0.0, atr=None, multiple: float = 0.0, side: str = "long",
                  start=0, backend=None):
    """Trailing stop levels ``(..., T)`` of ``price`` ``(..., T)`` (see the module docstring):
    the tightest ``price * (1 - percent) - multiple * atr`` (long; ``+`` for a short) since the
    entry bar ``start`` (an int, or ints of shape ``(...)``; >= 0, a start beyond ``T`` gives
    all NaN). ``percent`` in ``[0, 1)``, ``multiple`` >= 0, ``atr`` None or an array of
    ``price``'s shape (e.g. :func:`gpu_trader.indicators.atr`; needed when ``multiple > 0``,
    ``ValueError`` otherwise); NaN in ``atr`` skips the bar."""
    short = _short_side(side)
    f = nonnegative_number(percent, "percent")
    if f >= 1.0:
        raise ValueError(f"percent must be < 1, got {percent!r}")
    k = nonnegative_number(multiple, "multiple")
    if atr is None:
        if k:  # as TrailingStopStream.update: never trail by a multiple of an ATR that is not there
            raise ValueError("atr is needed: multiple > 0 trails by an ATR multiple")
        _, ops, (p,) = _series((price,), ("price",), backend)
        a = None
    else:
        _, ops, (p, a) = _series((price, atr), ("price", "atr"), backend)
    xp = ops.xp
    out = ops.trailing_stop(_rows(xp, p), None if a is None else _rows(xp, a),
                                         _starts(xp, start, p.shape), f, k, short)
    return out.reshape(p.shape)


@annotate
def chandelier_exit(high, low, close, *, window: int = 22, multiple: float = 3.0, side: str = "long",
                    backend=None):
    """Chandelier exit ``(..., T)``: ``rolling max(high, window) - multiple * ATR(window)`` for a
    long, ``rolling min(low, window) + multiple * ATR(window)`` for a short (ATR:
    :func:`gpu_trader.indicators.atr`, TA-Lib). NaN where the window holds a NaN or ATR has no
    value yet (its lookback is ``window`` bars)."""
    short = _short_side(side)
    w = check_count(window, "window", 1, 100_000)
    k = nonnegative_number(multiple, "multiple")
    be, ops, (h, lo, c) = _series((high, low, close), ("high", "low", "close"), backend)
    xp = ops.xp
    a = xp.asarray(_atr(h, lo, c, w, backend=be), dtype=xp.float64)
    ext = ops.rolling_extreme(_rows(xp, lo if short else h), w, short).reshape(h.shape)
    return ext + k * a if short else ext - k * a


@annotate_methods
class TrailingStopStream:
    """:func:`trailing_stop` one bar at a time for ``n_symbols`` symbols.

    ``TrailingStopStream(n_symbols, *, percent=0.0, multiple=0.0, side="long", active=True)``:
    ``active`` False starts every symbol flat (no stop until :meth:`enter`).

    * :meth:`update` ``(price, atr=None) -> (n_symbols,) float64``: advance every symbol by one
      bar (``price``, ``atr`` ``(n_symbols,)``; ``atr`` needed when ``multiple > 0``) and return
      the stops (NaN for a symbol without a position, or before its first valid bar);
    * :meth:`enter` ``(symbols)``: the given symbol indices (an int, a sequence, a boolean
      mask) open a position: their stop restarts with the next :meth:`update`, as the batch
      does at ``start``;
    * :meth:`exit` ``(symbols)``: the given symbols go flat (stop NaN until they enter again).

    The rule is :func:`gpu_trader._internal.stop_loops.ratchet` of
    :func:`~gpu_trader._internal.stop_loops.trailing_candidate`, as NumPy over symbols: the
    values equal :func:`trailing_stop` with the entry bars as ``start``, bar by bar.
    """

    def __init__(self, n_symbols: int, *, percent: float = 0.0, multiple: float = 0.0, side: str = "long",
                 active: bool = True) -> None:
        n = check_count(n_symbols, "n_symbols", 1, 1 << 24)
        self.short = _short_side(side)
        self.percent = nonnegative_number(percent, "percent")
        if self.percent >= 1.0:
            raise ValueError(f"percent must be < 1, got {percent!r}")
        self.multiple = nonnegative_number(multiple, "multiple")
        self.n_symbols = n
        self._level = np.full(n, np.nan)
        self._active = np.full(n, bool(active))

    @property
    def levels(self) -> np.ndarray:
        """The current stops, a read-only ``(n_symbols,)`` float64 copy."""
        out = self._level.copy()
        out.flags.writeable = False
        return out

    def _index(self, symbols) -> np.ndarray:
        idx = np.asarray(symbols)
        if idx.dtype == bool:
            if idx.shape != (self.n_symbols,):
                raise ValueError(f"a symbols mask must have shape ({self.n_symbols},), got {idx.shape}")
            return np.flatnonzero(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"symbols must be indices (ints) or a boolean mask, got dtype {idx.dtype}")
        idx = idx.reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_symbols):
            raise ValueError(f"symbols must be indices in [0, {self.n_symbols})")
        return idx

    def enter(self, symbols) -> None:
        i = self._index(symbols)
        self._active[i] = True
        self._level[i] = np.nan

    def exit(self, symbols) -> None:
        i = self._index(symbols)
        self._active[i] = False
        self._level[i] = np.nan

    def _bar(self, x, name: str) -> np.ndarray:
        arr = real_array(x, name)
        if arr.shape != (self.n_symbols,):
            raise ValueError(f"{name} must have shape ({self.n_symbols},), got {arr.shape}")
        return arr.astype(np.float64, copy=False)

    def update(self, price, atr=None) -> np.ndarray:
        p = self._bar(price, "price")
        if atr is None:
            if self.multiple:
                raise ValueError("atr is needed: this stream trails by an ATR multiple")
            a = 0.0
        else:
            a = self._bar(atr, "atr")
        if self.short:
            cand = p * (1.0 + self.percent) + self.multiple * a
            tighter = cand < self._level
        else:
            cand = p * (1.0 - self.percent) - self.multiple * a
            tighter = cand > self._level
        valid = ~np.isnan(cand) & self._active
        take = valid & (tighter | np.isnan(self._level))
        self._level[take] = cand[take]
        return self._level.copy()


@annotate_methods
class ChandelierStream:
    """:func:`chandelier_exit` one bar at a time for ``n_symbols`` symbols.

    ``ChandelierStream(n_symbols, *, window=22, multiple=3.0, side="long")`` (the arguments of
    :func:`chandelier_exit`; one side for every symbol, as there).

    * :meth:`update` ``(high, low, close) -> (n_symbols,) float64``: advance every symbol by one
      bar (each row ``(n_symbols,)``, any real dtype) and return the levels of that bar;
    * :meth:`warmup` ``(high, low, close) -> (n_symbols,) float64``: feed a history of
      ``(n_symbols, T)`` bars (``(T,)`` for one symbol; ``T`` may be 0) as ``T`` updates would,
      returning the levels of its last bar;
    * :meth:`reset`: forget every bar seen; :attr:`levels`: the latest levels.

    After the bars ``[:t+1]`` (fed in any split of warmups and updates) the levels equal
    ``chandelier_exit(high[:, :t+1], low[:, :t+1], close[:, :t+1], ...)[:, -1]`` exactly, and,
    the batch being causal, its column ``t`` for any longer history: NaN for the first
    ``window - 1`` bars, where the last ``window`` highs (lows for a short) hold a NaN, and
    where the ATR has no value (:class:`~gpu_trader.streaming.FeatureStream` with one ``atr``
    entry, equal to :func:`gpu_trader.indicators.atr` bar by bar). The rolling extreme is the
    maximum (minimum) of a ring buffer of the last ``window`` values per symbol: O(window) per
    symbol and bar, in NumPy. Inputs are read, never written; a refused row or history
    (``TypeError``/``ValueError`` naming it) leaves the stream unchanged.
    """

    def __init__(self, n_symbols: int, *, window: int = 22, multiple: float = 3.0, side: str = "long") -> None:
        from .streaming import FeatureStream

        n = check_count(n_symbols, "n_symbols", 1, 1 << 24)
        self.short = _short_side(side)
        self.window = check_count(window, "window", 1, 100_000)
        self.multiple = nonnegative_number(multiple, "multiple")
        self.n_symbols = n
        check_allocation(n * self.window, f"ChandelierStream(n_symbols={n}, window={self.window})'s ring buffer")
        self._atr = FeatureStream(n, {"atr": ("atr", {"window": self.window})})
        self._ring = np.empty((n, self.window), dtype=np.float64)
        self._level = np.empty(n, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen: the next bar is the first of every symbol's history."""
        self._atr.reset()
        self._ring.fill(np.nan)
        self._level.fill(np.nan)
        self._pos = 0  # the ring's column the next bar goes to (the oldest bar's)
        self.n_bars = 0

    @property
    def levels(self) -> np.ndarray:
        """The latest levels, a read-only ``(n_symbols,)`` float64 copy (NaN before the first bar)."""
        out = self._level.copy()
        out.flags.writeable = False
        return out

    def __repr__(self) -> str:
        side = "short" if self.short else "long"
        return (f"ChandelierStream(n_symbols={self.n_symbols}, window={self.window}, multiple={self.multiple}, "
                f"side={side!r}, n_bars={self.n_bars})")

    def _set_levels(self, atr: np.ndarray) -> np.ndarray:
        """The levels from the ring's extreme and ``atr`` ``(n_symbols,)``, as the batch computes them."""
        if self.short:
            np.add(self._ring.min(axis=1), self.multiple * atr, out=self._level)
        else:
            np.subtract(self._ring.max(axis=1), self.multiple * atr, out=self._level)
        return self._level.copy()

    def _row(self, x, name: str) -> np.ndarray:
        arr = real_array(x, name)
        if arr.shape != (self.n_symbols,):
            raise ValueError(f"{name} must have shape ({self.n_symbols},), got {arr.shape}")
        return arr.astype(np.float64, copy=False)

    def update(self, high, low, close) -> np.ndarray:
        """Advance every symbol by one bar; returns the ``(n_symbols,)`` float64 levels of that bar."""
        h, lo, c = self._row(high, "high"), self._row(low, "low"), self._row(close, "close")
        atr = self._atr.update({"high": h, "low": lo, "close": c})["atr"]
        self._ring[:, self._pos] = lo if self.short else h
        self._pos = (self._pos + 1) % self.window
        self.n_bars += 1
        return self._set_levels(atr)

    def _history(self, x, name: str) -> np.ndarray:
        arr = real_array(x, name)
        if arr.ndim == 1 and self.n_symbols == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[0] != self.n_symbols:
            raise ValueError(f"{name} must have shape (n_symbols={self.n_symbols}, T), got {arr.shape}")
        return arr

    def warmup(self, high, low, close) -> np.ndarray:
        """Feed ``T`` bars of every symbol (``(n_symbols, T)`` arrays, ``(T,)`` for one symbol),
        as ``T`` calls of :meth:`update` would; returns the levels of the last bar (the current
        levels when ``T`` is 0)."""
        h, lo, c = self._history(high, "high"), self._history(low, "low"), self._history(close, "close")
        if not h.shape[1] == lo.shape[1] == c.shape[1]:
            raise ValueError(f"high, low and close differ in length (T): {h.shape[1]}, {lo.shape[1]}, {c.shape[1]}")
        T = h.shape[1]
        if not T:
            return self._level.copy()
        atr = self._atr.warmup({"high": h, "low": lo, "close": c})["atr"]
        m = min(T, self.window)  # only the last window bars stay in the ring
        cols = (self._pos + (T - m) + np.arange(m)) % self.window
        self._ring[:, cols] = (lo if self.short else h)[:, T - m:]
        self._pos = (self._pos + T) % self.window
        self.n_bars += T
        return self._set_levels(atr)


@annotate
def stop_check(quantities, prices, stops, *, backend=None):
    """Which positions are stopped out, elementwise over broadcast arrays: a long (``quantity
    > 0``) whose price is at or below its stop, a short (``< 0``) at or above it. NaN prices or
    stops never stop; a zero quantity never does. Returns a bool array on the backend."""
    from .sizing import batch_arrays

    xp, (q, p, s) = batch_arrays({"quantities": quantities, "prices": prices, "stops": stops}, backend)
    return xp.asarray(((q > 0) & (p <= s)) | ((q < 0) & (p >= s)))


def _number_or_nan(value, name: str) -> float:
    """A real number as a float, NaN included (a NaN never stops); ``TypeError`` otherwise."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isnan(value):
        return math.nan
    return real_number(value, name, finite=False)


@annotate
def stop_orders(portfolio, prices: Mapping[str, float], stops: Mapping[str, float]) -> list[Order]:
    """Market orders closing every position of ``portfolio`` (a
    :class:`~gpu_trader.portfolio.Portfolio`) that :func:`stop_check` finds stopped out at
    ``prices`` (symbol -> last price) against ``stops`` (symbol -> stop level): a sell of the
    whole long, a buy of the whole short, in the book's symbol order. Symbols missing from
    either mapping are not checked. ``TypeError``/``ValueError`` name a bad price or stop."""
    if not isinstance(prices, Mapping) or not isinstance(stops, Mapping):
        raise TypeError("prices and stops must be mappings symbol -> price")
    out = []
    for symbol, pos in portfolio.positions().items():
        q = pos.quantity
        if not q or symbol not in prices or symbol not in stops:
            continue
        px = _number_or_nan(prices[symbol], f"prices[{symbol!r}]")
        level = _number_or_nan(stops[symbol], f"stops[{symbol!r}]")
        if (q > 0 and px <= level) or (q < 0 and px >= level):
            out.append(market_order(symbol, SELL if q > 0 else BUY, abs(q)))
    return out
