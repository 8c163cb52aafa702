"""Deterministic synthetic market data for the benchmarks.

Prices follow a geometric random walk (1 % daily volatility, starting at 100);
volumes are log-normal around 1e6. The same ``(shape, seed)`` always gives the
same arrays, so every run, backend and reference library sees identical input. The
cache is a :func:`~gpu_trader.bench.memory.suite_cache`: emptied after each suite.
"""
from __future__ import annotations

import numpy as np

from .memory import suite_cache

__all__ = ["FIELDS", "random_walk_ohlcv"]

FIELDS = ("open", "high", "low", "close", "volume")


@suite_cache(maxsize=8)
def random_walk_ohlcv(shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """OHLCV bars of ``shape`` (time on the last axis), float64, C-contiguous.

    Returns ``{"open", "high", "low", "close", "volume"}`` -> read-only arrays of
    ``shape`` (cached: callers must not write to them; copy first if needed).
    Prices are in currency units, volumes in shares; high >= max(open, close) and
    low <= min(open, close) on every bar.
    """
    shape = tuple(int(n) for n in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape}")
    rng = np.random.default_rng(seed)
    log_ret = rng.normal(0.0, 0.01, size=shape)
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=-1))
    open_ = np.empty_like(close)
    open_[..., 0] = 100.0
    open_[..., 1:] = close[..., :-1]
    wick = np.abs(rng.normal(0.0, 0.005, size=(2,) + shape))
    out = {
        "open": open_,
        "high": np.maximum(open_, close) * (1.0 + wick[0]),
        "low": np.minimum(open_, close) * (1.0 - wick[1]),
        "close": close,
        "volume": np.round(rng.lognormal(np.log(1e6), 0.5, size=shape)),
    }
    for arr in out.values():
        arr.flags.writeable = False
    return out
