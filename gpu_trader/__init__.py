"""gpu-trader: batched trading compute on GPU (CuPy, numba.cuda) and CPU (NumPy, numba).

``import gpu_trader`` is cheap: numba, CuPy and the kernels load on first use. It never
fails because of ``GPU_TRADER_BACKEND``: a value naming an unknown or absent backend
raises ``ValueError`` (naming the variable) from the first call that uses the default
backend (see :mod:`gpu_trader.backend`).
"""
from .backend import available_backends, get_backend, set_backend, to_numpy, use_backend
from .indicators import atr, bollinger, ema, features, macd, obv, rsi, sma, stoch, vwap, wma
from .montecarlo import EuropeanOptions, MonteCarloVaR, var_monte_carlo
from .streaming import FeatureStream
from . import correlation, profiling, risk
from .patterns import PatternMemory
from .vectors import VectorIndex, VectorIndexFileError

__version__ = "0.1.0"

# Trading-loop names, imported on first use (``gpu_trader.Portfolio`` loads only that module).
_LAZY = {
    **dict.fromkeys(("Order", "OrderReport", "OrderRejection", "Rejection", "RiskLimits", "Exposure", "market_order",
                     "limit_order", "stop_order", "stop_limit_order", "check_order", "validate_order",
                     "order_for_signal"), "orders"),
    **dict.fromkeys(("Broker", "BrokerAck", "SimulatedBroker", "CircuitBreaker", "BrokerError", "BrokerTimeout"),
                    "brokers"),
    **dict.fromkeys(("OrderManager", "SymbolRouter"), "order_manager"),
    **dict.fromkeys(("Portfolio", "PortfolioSnapshot", "Position", "BookExposure", "batch_apply_fills", "batch_pnl",
                     "batch_exposure"), "portfolio"),
    **dict.fromkeys(("FixedFractional", "Kelly", "VolatilityTarget", "ByValue", "ByWeight"), "sizing"),
    **dict.fromkeys(("TrailingStopStream", "ChandelierStream"), "stops"),
    **dict.fromkeys(("FixedCommission", "PercentageCommission", "TieredCommission"), "commissions"),
    **dict.fromkeys(("Tick", "Quote", "parse_tick", "parse_quote", "parse_ticks", "parse_quotes", "TickIngestor",
                     "QuoteIngestor", "quote_metrics", "aggregate_bars", "Bars", "Bar", "BarAggregator",
                     "MarketDataError", "MessageRejection"), "marketdata"),
    **dict.fromkeys(("Momentum", "MeanReversion", "StrategyResult", "momentum", "mean_reversion", "StrategyRunner",
                     "StrategyStream", "SweepResult", "momentum_sweep", "mean_reversion_sweep"), "strategies"),
    **dict.fromkeys(("TradingPipeline", "PipelineStats"), "pipeline"),
    **dict.fromkeys(("WebSocketFeed", "FeedBar", "FeedControl", "FeedDecoder"), "feeds"),
    **dict.fromkeys(("PipelineMetrics", "serve_metrics"), "metrics"),
    **dict.fromkeys(("RiskStream",), "risk_stream"),
    **dict.fromkeys(("TrajectoryStore",), "trajectories"),
    **dict.fromkeys(("read_ohlcv", "write_results"), "data_io"),
}


# Public modules reachable as attributes (``gt.marketdata.MessageRejection``), imported on first use.
_MODULES = frozenset(set(_LAZY.values()) | {"distributed", "distances"})


def __getattr__(name):
    import importlib

    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gpu_trader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "available_backends", "get_backend", "set_backend", "use_backend", "to_numpy",
    "sma", "ema", "wma", "rsi", "macd", "bollinger", "atr", "stoch", "obv", "vwap", "features",
    "FeatureStream",
    "risk", "correlation",
    *_LAZY,
    "VectorIndex", "VectorIndexFileError", "PatternMemory",
    "var_monte_carlo", "EuropeanOptions", "MonteCarloVaR",
]
