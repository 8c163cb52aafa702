"""Benchmarks: declared workloads, a timing harness, targets and reports.

``gpu-trader bench`` (:mod:`gpu_trader.cli`) and the pytest-benchmark files in
``benches/`` run the same :class:`Workload` objects. A suite is a module listed in
:data:`gpu_trader.bench.suites.SUITES`.
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..backend import get_backend
from .harness import FULL, QUICK, CaseResult, Reference, SkipCase, TimingPolicy, Workload, run_workload
from .suites import SUITES, workloads

__all__ = [
    "SUITES", "Workload", "Reference", "SkipCase", "CaseResult", "TimingPolicy", "run", "workloads",
]


def run(
    suites: Iterable[str],
    backends: Iterable[str],
    quick: bool = False,
    on_result: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Run every workload of ``suites`` on every backend in ``backends``, one at a time.

    Unknown suite or backend names raise ``ValueError`` before anything runs.
    ``on_result`` is called after each case (progress reporting).
    """
    bes = [get_backend(name) for name in backends]
    plan = [(suite, workloads(suite, quick)) for suite in suites]
    policy = QUICK if quick else FULL
    results = []
    for suite, wls in plan:
        for be in bes:
            for wl in wls:
                res = run_workload(suite, wl, be, policy)
                results.append(res)
                if on_result is not None:
                    on_result(res)
    return results
