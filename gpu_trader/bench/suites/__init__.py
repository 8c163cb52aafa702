"""Registry of benchmark suites.

A suite is a module with ``workloads(quick: bool) -> list[Workload]`` (see
:class:`gpu_trader.bench.harness.Workload`). Adding one is two steps: write the
module here, add its name below. Modules are imported only when their suite runs.
"""
from __future__ import annotations

import importlib

from ..harness import Workload

__all__ = ["SUITES", "workloads"]

# suite name -> module defining ``workloads(quick)``
SUITES: dict[str, str] = {  # in the order of docs/design.md#benchmarks-and-targets
    "market_data": "gpu_trader.bench.suites.market_data",
    "features": "gpu_trader.bench.suites.features",
    "strategies": "gpu_trader.bench.suites.strategies",
    "orders": "gpu_trader.bench.suites.orders",
    "risk": "gpu_trader.bench.suites.risk",
    "portfolio": "gpu_trader.bench.suites.portfolio",
    "vectors": "gpu_trader.bench.suites.vectors",
    "end_to_end": "gpu_trader.bench.suites.end_to_end",
}


def workloads(suite: str, quick: bool) -> list[Workload]:
    """The workloads of ``suite`` (``quick``: CI sizes). Unknown names raise ``ValueError``."""
    module = SUITES.get(suite)
    if module is None:
        raise ValueError(f"unknown suite {suite!r}; known suites: {', '.join(SUITES)}")
    return importlib.import_module(module).workloads(quick)
