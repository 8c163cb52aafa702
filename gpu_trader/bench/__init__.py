"""Benchmarks: declared workloads, a timing harness, targets and reports.

``gpu-trader bench`` (:mod:`gpu_trader.cli`) and the pytest-benchmark files in
``benches/`` run the same :class:`Workload` objects. A suite is a module listed in
:data:`gpu_trader.bench.suites.SUITES`; a run is a plan of cases
(:func:`~gpu_trader.bench.selection.plan_cases`) at one of the sizes ``SIZES``.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

from ..backend import get_backend
from .harness import (
    DEFAULT_SIZE, POLICIES, SIZES, CaseResult, Reference, SkipCase, TimingPolicy, Workload, run_workload,
)
from .memory import release_suite_data, resident_bytes
from .selection import PlannedCase, plan_cases
from .suites import SUITES, check_size, workloads

__all__ = [
    "SUITES", "SIZES", "DEFAULT_SIZE", "Workload", "Reference", "SkipCase", "CaseResult", "TimingPolicy",
    "PlannedCase", "plan_cases", "run", "workloads",
]


def run(
    plan: Sequence[PlannedCase],
    size: str = DEFAULT_SIZE,
    on_result: Callable[[CaseResult], None] | None = None,
    on_suite_done: Callable[[str, int | None, int | None], None] | None = None,
) -> list[CaseResult]:
    """Time every case of ``plan`` (:func:`plan_cases`), one at a time, with the timing
    policy of ``size``; returns their results in plan order.

    An unknown backend or size raises ``ValueError`` before anything runs. ``on_result(res)``
    is called after each case; after each suite its cached data is released
    (:func:`~gpu_trader.bench.memory.release_suite_data`) and ``on_suite_done(suite,
    rss_before, rss_after)`` gets this process's resident set around the release (bytes,
    None where unknown).
    """
    policy = POLICIES[check_size(size)]
    bes = {name: get_backend(name) for name in dict.fromkeys(c.backend for c in plan)}
    results = []
    for suite, cases in itertools.groupby(plan, key=lambda c: c.suite):
        for case in cases:
            res = run_workload(suite, case.workload, bes[case.backend], policy)
            results.append(res)
            if on_result is not None:
                on_result(res)
        before = resident_bytes()
        release_suite_data()
        if on_suite_done is not None:
            on_suite_done(suite, before, resident_bytes())
    return results
