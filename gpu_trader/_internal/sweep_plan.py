"""How a strategy sweep is cut into chunks that fit a memory budget (arithmetic only, no arrays).

A sweep runs one rule over a two-axis parameter grid (``A x B`` values: momentum's fast x slow,
mean reversion's window x nstd) and ``n`` series of ``T`` bars, keeping only the float64
statistics of each (parameter set, series): ``N_STATS * 8 * A * B * n`` bytes of result. The
work is cut into chunks: a *tile* of the grid (a block of at most ``a_block`` A values x at
most ``b_block`` B values) over a block of at most ``symbols`` series. A chunk computes the
indicator rows its tile needs for its series, runs the sweep kernel, copies its statistics
into the result and frees everything before the next chunk starts.

Working memory of one chunk of ``s`` series, ``sets`` parameter sets and ``rows`` indicator
rows (``itemsize`` bytes each; ``peak_rows`` counts the indicator call's own temporaries, e.g.
Bollinger's three bands before the deviation is derived), whichever phase is larger:

* computing the indicators: ``peak_rows * s * T * itemsize``;
* the kernel: ``rows * copies * s * T * itemsize`` (``copies`` is the ops module's
  ``SWEEP_FEATURE_COPIES``: 2 where the kernel reads a transposed copy) plus
  :data:`RETURN_BYTES` per bar for the bar returns and their temporaries,

plus ``N_STATS * 8 * sets * s`` for the chunk's statistics and ``RULE_BYTES * sets`` for its
rule arrays. :func:`plan` keeps the whole grid in one tile and as many series per chunk as fit;
only when a single series of the whole grid does not fit does it halve the tile along the axis
that saves more, until one series of one tile fits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .strategy_loops import N_STATS

__all__ = ["SweepPlan", "plan", "chunk_bytes", "result_bytes", "RETURN_BYTES", "RULE_BYTES"]

RETURN_BYTES = 48
"""Bytes per (series, bar) for the bar returns (float64), the temporaries that derive them and,
on a GPU, the time-major copies of the close and the returns."""
RULE_BYTES = 160
"""Bytes per parameter set of a tile's rules: the Python list of ``(kind, row, row, k)`` tuples
and the four arrays made from it."""

RowsBound = Callable[[int, int], "tuple[int, int]"]
"""``(a, b) -> (rows, peak_rows)``: at most how many indicator rows a tile of ``a x b`` values
needs, and the indicator calls' peak in rows."""


@dataclass(frozen=True)
class SweepPlan:
    """Tiles of ``a_block x b_block`` grid values over ``symbols`` series at a time; ``bytes`` is
    the estimated peak (result plus the largest chunk)."""

    a_block: int
    b_block: int
    symbols: int
    bytes: int


def result_bytes(n_sets: int, n_series: int) -> int:
    """Bytes of a sweep's result: ``N_STATS`` float64 values per (parameter set, series)."""
    return N_STATS * 8 * n_sets * n_series


def chunk_bytes(sets: int, rows: int, peak_rows: int, series: int, T: int, itemsize: int, copies: int) -> int:
    """Working memory of one chunk (see the module docstring)."""
    per_bar = max(peak_rows * itemsize, rows * copies * itemsize + RETURN_BYTES)
    return series * (T * per_bar + N_STATS * 8 * sets) + RULE_BYTES * sets


def plan(grid: tuple[int, int], n: int, T: int, itemsize: int, copies: int, budget: int,
         rows_bound: RowsBound, what: str) -> SweepPlan:
    """The chunking of a sweep over ``grid = (A, B)`` values and ``n`` series of ``T`` bars whose
    peak stays within ``budget`` bytes; ``ValueError`` naming ``max_memory`` (and ``what``)
    when even one series of one parameter set does not fit."""
    A, B = grid
    result = result_bytes(A * B, n)
    avail = budget - result

    def one_series(a: int, b: int) -> int:
        rows, peak = rows_bound(a, b)
        return chunk_bytes(a * b, rows, peak, 1, T, itemsize, copies)

    a, b = A, B
    while one_series(a, b) > avail:
        halved = [(one_series(-(-a // 2), b), -a, "a"), (one_series(a, -(-b // 2)), -b, "b")]
        options = [h for h, side in zip(halved, (a, b)) if side > 1]
        if not options:
            need = result + one_series(1, 1)
            raise ValueError(f"{what}: max_memory={budget} bytes is too small; the statistics take {result} bytes and "
                             f"the smallest chunk (one series, one parameter set) needs {need - result} more")
        _, _, axis = min(options)
        if axis == "a":
            a = -(-a // 2)
        else:
            b = -(-b // 2)
    per_series = one_series(a, b)
    symbols = max(1, min(n, avail // per_series)) if n else 1
    return SweepPlan(a, b, symbols, result + chunk_bytes(a * b, *rows_bound(a, b), symbols, T, itemsize, copies))
