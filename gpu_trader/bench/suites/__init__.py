"""Registry of benchmark suites.

A suite is a module with ``workloads(size: str) -> list[Workload]`` (see
:class:`gpu_trader.bench.harness.Workload`), ``size`` one of
:data:`~gpu_trader.bench.harness.SIZES`: ``"quick"`` (CI smoke sizes), ``"standard"``
(the default: every case, sizes large enough to be meaningful and small enough that a
whole run fits in a few minutes on 2 cores) or ``"full"`` (the published sizes the
targets name). Adding a suite is two steps: write the module here, add its name below.
Modules are imported only when their suite is declared.
"""
from __future__ import annotations

import importlib

from ..harness import DEFAULT_SIZE, SIZES, Workload

__all__ = ["SUITES", "workloads", "check_size"]

# suite name -> module defining ``workloads(size)``
SUITES: dict[str, str] = {  # in the order of docs/design.md#benchmarks-and-targets
    "market_data": "gpu_trader.bench.suites.market_data",
    "features": "gpu_trader.bench.suites.features",
    "strategies": "gpu_trader.bench.suites.strategies",
    "orders": "gpu_trader.bench.suites.orders",
    "risk": "gpu_trader.bench.suites.risk",
    "portfolio": "gpu_trader.bench.suites.portfolio",
    "vectors": "gpu_trader.bench.suites.vectors",
    "trajectories": "gpu_trader.bench.suites.trajectories",
    "end_to_end": "gpu_trader.bench.suites.end_to_end",
    "feeds": "gpu_trader.bench.suites.feeds",
}


def check_size(size: str) -> str:
    """``size`` when it is one of :data:`~gpu_trader.bench.harness.SIZES`, else ``ValueError``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return size


def workloads(suite: str, size: str = DEFAULT_SIZE) -> list[Workload]:
    """The workloads of ``suite`` at ``size`` (see the module docstring). Unknown names raise ``ValueError``."""
    module = SUITES.get(suite)
    if module is None:
        raise ValueError(f"unknown suite {suite!r}; known suites: {', '.join(SUITES)}")
    return importlib.import_module(module).workloads(check_size(size))
