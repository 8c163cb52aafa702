"""What each indicator is: its code, inputs, outputs, parameters and lookback.

Pure Python (no numba import), so the public modules can use it at import time.
"""
from __future__ import annotations

# Indicator codes (compile-time constants inside the dispatchers).
SMA, EMA, WMA, RSI, MACD, BBANDS, ATR, STOCH, OBV, VWAP = range(10)

# name -> (code, number of array inputs, number of outputs, parameter names)
SPECS = {
    "sma": (SMA, 1, 1, ("window",)),
    "ema": (EMA, 1, 1, ("window",)),
    "wma": (WMA, 1, 1, ("window",)),
    "rsi": (RSI, 1, 1, ("window",)),
    "macd": (MACD, 1, 3, ("fast", "slow", "signal")),
    "bollinger": (BBANDS, 1, 3, ("window", "nstd")),
    "atr": (ATR, 3, 1, ("window",)),
    "stoch": (STOCH, 3, 2, ("fastk", "slowk", "slowd")),
    "obv": (OBV, 2, 1, ()),
    "vwap": (VWAP, 4, 1, ("window",)),
}


# name -> ((parameter, default or None when required, minimum or None for reals), ...)
# Minimums follow TA-Lib's accepted ranges; every integer parameter is also at most TA-Lib's
# 100000 (gpu_trader._internal.validation.MAX_WINDOW), checked before any compiled code sees it.
PARAMETERS = {
    "sma": (("window", None, 1),),
    "ema": (("window", None, 1),),
    "wma": (("window", None, 1),),
    "rsi": (("window", 14, 2),),
    "macd": (("fast", 12, 2), ("slow", 26, 2), ("signal", 9, 1)),
    "bollinger": (("window", 20, 2), ("nstd", 2.0, None)),
    "atr": (("window", 14, 1),),
    "stoch": (("fastk", 5, 1), ("slowk", 3, 1), ("slowd", 3, 1)),
    "obv": (),
    "vwap": (("window", None, 1),),
}

# Names of the outputs of multi-output indicators (used by ``features`` keys).
OUTPUT_NAMES = {
    "macd": ("line", "signal", "hist"),
    "bollinger": ("upper", "middle", "lower"),
    "stoch": ("k", "d"),
}

# Which OHLCV fields each indicator reads, in argument order.
INPUT_FIELDS = {
    "sma": ("close",), "ema": ("close",), "wma": ("close",), "rsi": ("close",),
    "macd": ("close",), "bollinger": ("close",),
    "atr": ("high", "low", "close"), "stoch": ("high", "low", "close"),
    "obv": ("close", "volume"), "vwap": ("high", "low", "close", "volume"),
}


def check_name(name, where: str) -> str:
    """``name`` when it is an indicator's name (a key of :data:`SPECS`): ``TypeError`` for a
    non-``str``, ``ValueError`` for an unknown name, both prefixed with ``where``."""
    if not isinstance(name, str):
        raise TypeError(f"{where}: the indicator must be named by a str, got {type(name).__name__}")
    if name not in SPECS:
        raise ValueError(f"{where}: unknown indicator {name!r}; known: {', '.join(sorted(SPECS))}")
    return name


def lookback(name: str, params) -> int:
    """Number of leading NaN outputs after the first valid input (TA-Lib's ``*_Lookback``)."""
    if name in ("sma", "wma", "bollinger", "vwap"):
        return int(params[0]) - 1
    if name == "ema":
        return int(params[0]) - 1
    if name in ("rsi", "atr"):
        return int(params[0])
    if name == "macd":
        fast, slow, signal = (int(p) for p in params)
        return max(fast, slow) - 1 + signal - 1
    if name == "stoch":
        return int(params[0]) - 1 + int(params[1]) - 1 + int(params[2]) - 1
    return 0
