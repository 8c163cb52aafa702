"""Average-cost position accounting, written once for every backend.

:func:`fill_step` is the whole bookkeeping of one fill against one position. It uses
only scalar arithmetic and branches, so the very same function runs

* as plain Python (the one-event path of :class:`gpu_trader.portfolio.Portfolio`),
* compiled by ``numba.njit`` (the CPU batch driver, :mod:`gpu_trader.cpu_fallback.portfolio`),
* compiled by ``numba.cuda.jit(device=True)`` (the GPU kernel, :mod:`gpu_trader.kernels.portfolio`),

and the three cannot drift apart. :func:`mark_to_market` is written against an array
module ``xp`` (NumPy or CuPy) for the same reason.

Conventions: quantities are signed (long > 0, short < 0), in units of the instrument;
prices and average costs in currency per unit; realized P&L in currency, gross of
commissions (commissions are booked separately by the portfolio).
"""
from __future__ import annotations

import functools

__all__ = ["fill_step", "fill_row", "mark_to_market", "jitable"]


def fill_step(qty, avg_cost, fill_qty, fill_price):
    """Apply one fill to one position with average-cost accounting.

    ``qty``/``avg_cost``: the position before (signed quantity, average entry price;
    ``avg_cost`` is 0 for a flat position). ``fill_qty``: signed traded quantity
    (buy > 0, sell < 0); ``fill_price``: the execution price.

    Returns ``(new_qty, new_avg_cost, realized)``:

    * opening or adding (same sign, or from flat): the average cost is the
      quantity-weighted mean of the old cost and the fill price; nothing is realized;
    * reducing: the average cost is unchanged and ``closed * (price - avg_cost)`` is
      realized (sign-adjusted for shorts);
    * closing to flat: average cost 0;
    * flipping through zero: the whole old position is closed (realized as above) and
      the remainder opens a new position at the fill price.

    A zero ``fill_qty`` returns the position unchanged. NaN inputs propagate into
    the result (callers validate fills before booking them).
    """
    if fill_qty == 0.0:
        return qty, avg_cost, 0.0
    new_qty = qty + fill_qty
    if qty == 0.0 or (qty > 0.0) == (fill_qty > 0.0):
        return new_qty, (qty * avg_cost + fill_qty * fill_price) / new_qty, 0.0
    if abs(fill_qty) <= abs(qty):
        closed = -fill_qty  # same sign as qty
        realized = closed * (fill_price - avg_cost)
        if new_qty == 0.0:
            return 0.0, 0.0, realized
        return new_qty, avg_cost, realized
    realized = qty * (fill_price - avg_cost)  # the whole old position closes
    return new_qty, fill_price, realized


def fill_row(r, qty, avg_cost, realized, fill_qty, fill_price):
    """Apply the fills of row ``r`` in order, in place: ``fill_qty[r, k]``, ``fill_price[r, k]``
    for k along the last axis, onto ``qty[r]``, ``avg_cost[r]`` and ``realized[r]``.

    The loop body of both batch backends (see :func:`jitable`).
    """
    q, a, z = qty[r], avg_cost[r], realized[r]
    for k in range(fill_qty.shape[1]):
        q, a, dz = fill_step(q, a, fill_qty[r, k], fill_price[r, k])
        z += dz
    qty[r] = q
    avg_cost[r] = a
    realized[r] = z


def mark_to_market(xp, qty, avg_cost, prices):
    """Market value and unrealized P&L of many portfolios at once.

    ``qty``, ``avg_cost``: ``(n_portfolios, n_assets)``; ``prices``: ``(n_assets,)``
    (one mark) or ``(n_assets, T)`` (a price path, time last). Returns
    ``(market_value, unrealized)``, each ``(n_portfolios,)`` or ``(n_portfolios, T)``:
    ``market_value = qty @ prices`` and ``unrealized = market_value - sum(qty * avg_cost)``.
    One GEMM (GEMV) plus row-wise dot products; the result has the inputs' float dtype.
    """
    market_value = qty @ prices
    basis = xp.einsum("ij,ij->i", qty, avg_cost)  # row dot products, no (P, A) temporary
    if market_value.ndim == 2:
        basis = basis[:, None]
    return market_value, market_value - basis


@functools.lru_cache(maxsize=1)
def jitable():
    """Register :func:`fill_step` and :func:`fill_row` with numba (once, on first use, so
    importing this module stays free of numba) and return ``fill_row``, now callable from
    ``numba.njit`` and ``numba.cuda.jit`` code alike."""
    from numba.extending import register_jitable

    register_jitable(fill_step)
    return register_jitable(fill_row)
