"""gpu-trader: batched trading compute on GPU (CuPy, numba.cuda) and CPU (NumPy, numba).

``import gpu_trader`` is cheap: numba, CuPy and the kernels load on first use.
"""
from .backend import available_backends, get_backend, set_backend, to_numpy, use_backend
from .indicators import atr, bollinger, ema, features, macd, obv, rsi, sma, stoch, vwap, wma
from .montecarlo import EuropeanOptions, MonteCarloVaR, var_monte_carlo
from .streaming import FeatureStream

__version__ = "0.1.0"

__all__ = [
    "available_backends", "get_backend", "set_backend", "use_backend", "to_numpy",
    "sma", "ema", "wma", "rsi", "macd", "bollinger", "atr", "stoch", "obv", "vwap", "features",
    "FeatureStream",
    "var_monte_carlo", "EuropeanOptions", "MonteCarloVaR",
]
