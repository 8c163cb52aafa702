"""Streaming risk: one bar of asset returns at a time, for every book at once.

:class:`RiskStream` holds ``n_books`` books (portfolios), each a fixed vector of weights over
the same ``n_assets`` assets, and per :meth:`RiskStream.update` (one ``(n_assets,)`` row of
simple asset returns) advances, for all books in one compiled call:

* the assets' **EWMA covariance** (RiskMetrics, zero-mean): :meth:`RiskStream.cov` equals
  ``correlation.ewma_cov(R, halflife)`` on the ``(n_assets, T)`` history ``R`` so far;
* each book's **return** ``w . r`` over the assets it holds (nonzero weights), summed in asset
  order; NaN when one of its held assets' returns is NaN (its other metrics skip that bar, as
  the batch functions drop NaNs);
* ``volatility_ewma`` ``sqrt(w' S w)`` (per period) with ``S`` the EWMA covariance, over the
  held assets, and ``var_ewma`` ``-z sigma`` with ``z`` the standard normal ``1 - level``
  quantile: the RiskMetrics (zero-mean) parametric VaR of the book under that covariance;
* ``var_parametric``: the sample (mean, ddof-1 std) parametric VaR of the book's returns so
  far, ``risk.var_parametric`` of its return series;
* ``var_historical`` and ``cvar`` over the book's last ``window`` bars (its valid returns among
  them): ``risk.var_historical``/``risk.cvar`` of that window;
* ``drawdown`` (current) and ``max_drawdown`` of the book's compounded wealth, and its
  ``sharpe`` ratio (``periods_per_year``, ``risk_free``), over all its bars so far.

Exactness contract
------------------
Let ``b`` be the ``(n_books, T)`` book returns the stream produced (its ``"return"`` values,
bar by bar: each equal to ``W @ r`` up to summation order). After the bars ``0 .. t`` (fed by
:meth:`~RiskStream.warmup` and/or :meth:`~RiskStream.update`, in any split), on the CPU backend:

* ``var_historical`` and ``cvar`` equal ``risk.var_historical(b[:, t-window+1 : t+1], level)``
  and ``risk.cvar(...)`` **bit for bit** (the window's sorted valid returns and the batch's own
  order-statistic formula); ``max_drawdown`` equals ``risk.max_drawdown(b[:, :t+1])`` bit for
  bit (the same products and maxima in the same order);
* ``sharpe`` and ``var_parametric`` equal ``risk.sharpe``/``risk.var_parametric`` of
  ``b[:, :t+1]`` to about 1e-12 relative: the mean and the excess sum are the batch's own sums,
  the standard deviation is Welford's one-pass update instead of the batch's two passes (the
  same zero-dispersion rule, :func:`gpu_trader._internal.risk_xp.rounding_residue`);
* :meth:`~RiskStream.cov` equals ``correlation.ewma_cov`` of the history to about 1e-12
  relative (a recursion instead of the batch's explicit weights ``decay ** age``), pairwise
  complete over NaNs as the batch; ``volatility_ewma`` equals ``sqrt(w' S w)`` of that matrix
  over the held assets to the same order, relative to ``|w|' |S| |w|``.

Where the batch function refuses the data (a series or window without a valid value; fewer
than two for a standard deviation), the stream gives NaN, as it does before the first bar.
A pair of assets that have never been valid on the same bar has a NaN covariance, and a book
holding both a NaN ``volatility_ewma`` and ``var_ewma``. Long-short books can have
``w' S w < 0`` from a pairwise-complete ``S`` that is not positive semidefinite: NaN too.

Cost per bar: O(n_assets^2 / 2) for the covariance, O(nonzero weights) for the book returns,
O(1) per book for the EWMA variance (O(held^2) for a book whose held assets were ever only
partly missing on a bar), O(moves) per book for the sorted window (the distance between the
leaving and the entering value's ranks, at most ``window``), O(levels x tail) for the
quantiles. ``update(row, out=out)`` allocates nothing.

Inputs are never written; read-only and non-contiguous rows are read in place when float64
(other real dtypes, float32 included, are converted exactly); a bool row, a masked array or a
non-real dtype is a ``TypeError``. A refused argument leaves the stream unchanged. numba is
imported when the first stream is constructed (``get_backend("cpu").ops("risk_stream")``),
never at ``import gpu_trader``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import get_backend, host_input
from .profiling import annotate_methods
from .risk import MAX_PERIODS_PER_YEAR, _tail_probabilities
from ._internal.risk_xp import check_levels, normal_quantile
from ._internal.validation import (
    MAX_WINDOW, check_allocation, check_count, check_float, check_out_array, check_periods_per_year,
    finite_real_array,
)

__all__ = ["RiskStream", "FIXED_KEYS", "LEVEL_KEYS"]

FIXED_KEYS = ("return", "drawdown", "max_drawdown", "sharpe", "volatility_ewma")
"""Per-book values without a level, one row each of ``out`` (in this order)."""
LEVEL_KEYS = ("var_ewma", "var_parametric", "var_historical", "cvar")
"""Per-book values at each level (losses, positive), ``len(levels)`` rows each of ``out`` after
:data:`FIXED_KEYS`."""

_F8 = np.dtype(np.float64)
_NDARRAY = np.ndarray
# warmup converts a non-float64 history to float64 in chunks of at most this many values
_WARMUP_CHUNK_ELEMENTS = 1 << 20


@annotate_methods
class RiskStream:
    """Per-bar risk of many books over the same assets (see the module docstring).

    ``RiskStream(n_assets, weights, halflife, window, level=0.99, periods_per_year=252,
    risk_free=0.0)``:

    * ``weights``: ``(n_books, n_assets)`` finite real numbers (``(n_assets,)``: one book),
      copied; a zero weight means the asset is not held. :meth:`set_weights` replaces them;
    * ``halflife`` (> 0, in bars) of the EWMA covariance, as ``correlation.ewma_cov``;
    * ``window`` (1 .. ``MAX_WINDOW`` bars) of historical VaR and CVaR;
    * ``level``: a confidence ``0.5 <= level < 1`` or a sequence of them (as ``risk``);
    * ``periods_per_year`` and ``risk_free`` (per period) of the Sharpe ratio, as ``risk.sharpe``.

    :meth:`update` ``(row) -> {key: float64 array}`` advances every book by one bar: the
    :data:`FIXED_KEYS` are ``(n_books,)``, the :data:`LEVEL_KEYS` ``(n_books,)`` for one level and
    ``(len(level), n_books)`` for a sequence; ``update(row, out=out)`` writes the values into a
    ``(n_rows, n_books)`` float64 array instead, row ``rows[key]`` (an int, or a slice for
    a level key). :meth:`warmup` feeds a ``(T, n_assets)`` history at once; :meth:`cov` is the
    current EWMA covariance; :meth:`reset` forgets every bar.
    """

    def __init__(self, n_assets: int, weights: Any, halflife: float, window: int, level: Any = 0.99,
                 periods_per_year: float = 252, risk_free: float = 0.0) -> None:
        n = check_count(n_assets, "n_assets", 1)
        w = self._check_weights(weights, n)
        h = check_float(halflife, "halflife", positive=True)
        self.window = check_count(window, "window", 1, MAX_WINDOW)
        qs, self._grid = _tail_probabilities(level)
        self.levels: tuple[float, ...] = check_levels(level)[0]
        self.periods_per_year = check_periods_per_year(periods_per_year, MAX_PERIODS_PER_YEAR)
        self.risk_free = check_float(risk_free, "risk_free")
        self.halflife = h
        self.n_assets = n
        self.n_books = w.shape[0]
        n_levels = len(qs)
        n_rows = len(FIXED_KEYS) + len(LEVEL_KEYS) * n_levels
        self.n_rows = n_rows
        """Rows of :meth:`update`'s ``out``: ``len(FIXED_KEYS) + len(LEVEL_KEYS) * len(levels)``."""
        ops = get_backend("cpu").ops("risk_stream")  # fetched once: update runs per bar
        check_allocation(2 * n * n + self.n_books * (2 * self.window + ops.BOOK_SIZE + n_rows + 2 * n),
                         f"RiskStream(n_assets={n}, n_books={self.n_books}, window={self.window})'s state")
        self.rows: dict[str, int | slice] = {key: i for i, key in enumerate(FIXED_KEYS)}
        for i, key in enumerate(LEVEL_KEYS):
            first = len(FIXED_KEYS) + i * n_levels
            self.rows[key] = slice(first, first + n_levels)
        self._ops = ops
        self._advance = ops.advance_kernel
        self._lv = np.array([qs, [normal_quantile(q) for q in qs]], dtype=np.float64)
        self._decay = 0.5 ** (1.0 / h)  # as correlation.ewma_cov
        self._out = np.empty((n_rows, self.n_books), dtype=np.float64)
        self._out_shape = self._out.shape
        self._row = np.empty((1, n), dtype=np.float64)
        self._shape1 = (n,)
        self._set_csr(w)
        self.reset()

    # -- weights ----------------------------------------------------------------------
    @staticmethod
    def _check_weights(weights: Any, n: int) -> np.ndarray:
        w = finite_real_array(weights, "weights")
        if w.ndim == 1:
            w = w[None]
        if w.ndim != 2 or w.shape[1] != n or w.shape[0] < 1:
            raise ValueError(f"weights must have shape (n_books, n_assets={n}) with n_books >= 1 "
                             f"(or ({n},) for one book), got {np.shape(weights)}")
        return w

    def _set_csr(self, w: np.ndarray) -> None:
        """The weights as compressed rows (held assets in ascending order), and a copy."""
        held = w != 0.0
        self._weights = w
        self._wptr = np.concatenate([[0], np.cumsum(held.sum(axis=1))]).astype(np.int64)
        self._widx = np.ascontiguousarray(np.nonzero(held)[1], dtype=np.int64)
        self._wval = np.ascontiguousarray(w[held], dtype=np.float64)
        self._wt = np.ascontiguousarray(w.T)

    @property
    def weights(self) -> np.ndarray:
        """The books' weights ``(n_books, n_assets)`` (a copy)."""
        return self._weights.copy()

    def set_weights(self, weights: Any) -> dict[str, np.ndarray]:
        """Replace the books' weights (same shape ``(n_books, n_assets)``) from the next bar on.

        Each book's return series (its window, drawdown, Sharpe ratio) continues; its
        ``volatility_ewma`` and ``var_ewma`` are recomputed at once from the assets' EWMA
        covariance with the new weights. Returns the values with the new weights (as
        :meth:`values`)."""
        w = self._check_weights(weights, self.n_assets)
        if w.shape[0] != self.n_books:
            raise ValueError(f"weights must keep n_books={self.n_books} rows, got {w.shape[0]}")
        self._set_csr(w)
        self._ops.reweight_kernel(self._wptr, self._widx, self._wval, self._num, self._den, self._g,
                                  self._book, self._srt, self._lv, self._out)
        if self.n_bars == 0:
            self._out.fill(np.nan)
        return self.values()

    # -- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every bar seen: the next bar is the first of every book's history."""
        ops, n, b = self._ops, self.n_assets, self.n_books
        self._num = np.zeros((n, n), dtype=np.float64)
        self._den = np.zeros((n, n), dtype=np.float64)
        g = np.zeros(ops.G_SIZE, dtype=np.float64)
        g[ops.G_DECAY] = self._decay
        g[ops.G_COMMON] = 1.0
        g[ops.G_RF] = self.risk_free
        g[ops.G_SQRT_PPY] = math.sqrt(self.periods_per_year)
        self._g = g
        self._book = np.zeros((b, ops.BOOK_SIZE), dtype=np.float64)
        self._book[:, ops.B_WEALTH] = 1.0
        self._book[:, ops.B_PEAK] = 1.0
        self._book[:, ops.B_RETURN] = np.nan
        self._ring = np.full((b, self.window), np.nan)
        self._srt = np.zeros((b, self.window), dtype=np.float64)
        self._out.fill(np.nan)
        self.n_bars = 0

    def values(self) -> dict[str, np.ndarray]:
        """The values of the latest bar (all NaN before the first), as fresh arrays."""
        return self._values(self._out)

    def _values(self, out: np.ndarray) -> dict[str, np.ndarray]:
        res = {}
        for key, rows in self.rows.items():
            v = out[rows].copy()
            res[key] = v[0] if type(rows) is slice and not self._grid else v
        return res

    def cov(self) -> np.ndarray:
        """The assets' EWMA covariance ``(n_assets, n_assets)`` float64 after the latest bar (a
        fresh array; NaN for a pair never valid on the same bar, all NaN before the first)."""
        out = np.empty((self.n_assets, self.n_assets), dtype=np.float64)
        self._ops.cov_kernel(self._num, self._den, self._g, out)
        return out

    def __repr__(self) -> str:
        return (f"RiskStream(n_assets={self.n_assets}, n_books={self.n_books}, halflife={self.halflife}, "
                f"window={self.window}, levels={list(self.levels)}, n_bars={self.n_bars})")

    # -- one bar ----------------------------------------------------------------------
    def update(self, row: Any, out: np.ndarray | None = None) -> Any:
        """Advance every book by one bar of asset returns ``row`` ``(n_assets,)`` (a scalar when
        ``n_assets == 1``; NaN: a missing return). Returns ``{key: float64 array}`` (see the
        class docstring), or ``out`` when given: a writeable float64 ``numpy.ndarray`` of shape
        ``(n_rows, n_books)`` that receives the values (any strides), so that nothing is
        allocated per bar. A refused ``row`` or ``out`` (``TypeError``/``ValueError`` naming
        it) leaves the stream unchanged."""
        if type(row) is _NDARRAY and row.dtype is _F8 and row.shape == self._shape1:
            bars = row[None]  # one bar as the kernel's (1, n_assets) history, read in place
        else:
            bars = self._convert_row(row)
        if out is not None and (type(out) is not _NDARRAY or out.dtype is not _F8 or out.shape != self._out_shape
                                or not out.flags.writeable):
            self._check_out(out)
        self._advance(bars, self._num, self._den, self._g, self._wptr, self._widx, self._wval, self._wt,
                      self._book, self._ring, self._srt, self._lv, self._out)
        self.n_bars += 1
        if out is None:
            return self._values(self._out)
        out[...] = self._out
        return out

    def _convert_row(self, row: Any) -> np.ndarray:
        """``row`` as a ``(1, n_assets)`` float64 array (the row buffer when converted)."""
        arr = host_input(row, "row")
        if arr.dtype.kind == "b":
            raise TypeError("row must hold real numbers (returns), not bool")
        if arr.shape != self._shape1 and not (self.n_assets == 1 and arr.shape == ()):
            raise ValueError(f"row must have shape (n_assets,) = {self._shape1}, got {arr.shape}")
        if arr.dtype == _F8 and arr.shape == self._shape1:
            return arr[None]
        self._row[0] = arr
        return self._row

    def _check_out(self, out: Any) -> None:
        """``TypeError``/``ValueError`` naming ``out`` unless it can receive an update's values."""
        check_out_array(out, self._out_shape, "(n_rows, n_books)")

    # -- many bars ---------------------------------------------------------------------
    def warmup(self, history: Any) -> dict[str, np.ndarray]:
        """Feed a ``(T, n_assets)`` history of asset returns (bars in time order, one row per
        bar, as :meth:`update` takes them; a pandas DataFrame with time along the index and one
        column per asset works) in one compiled call, leaving the state exactly as ``T``
        :meth:`update` calls would. ``T`` may be 0. The stream continues from its current state
        (call :meth:`reset` first to start over). Returns the values of the last bar (as
        :meth:`values`)."""
        arr = host_input(history, "history")
        if arr.dtype.kind == "b":
            raise TypeError("history must hold real numbers (returns), not bool")
        n = self.n_assets
        if arr.ndim == 1 and n == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != n:
            raise ValueError(f"history must have shape (T, n_assets={n}), got {arr.shape}")
        T = arr.shape[0]
        chunk = max(1, T if arr.dtype == _F8 else min(T, _WARMUP_CHUNK_ELEMENTS // n))
        for a in range(0, T, chunk):
            part = arr[a:a + chunk]
            if part.dtype != _F8:
                part = part.astype(np.float64)
            self._advance(part, self._num, self._den, self._g, self._wptr, self._widx, self._wval, self._wt,
                          self._book, self._ring, self._srt, self._lv, self._out)
            self.n_bars += part.shape[0]
        return self.values()
