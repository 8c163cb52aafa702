"""Which cases a bench run times: the plan, and choosing cases by name.

A run's plan (:func:`plan_cases`) lists one :class:`PlannedCase` per (suite, backend,
workload), in the order they run: suite by suite (in the order asked), each suite on
every backend in turn, its workloads in the order the suite declares them.

Choosing cases (``gpu-trader bench --case NAME`` / ``-k TEXT``): a *name* is a case's
full name, with or without its suite (``sma(20) 100 bars`` or ``features/sma(20) 100
bars``); a *keyword* keeps every case whose ``suite/name`` contains it, ignoring case,
like a one-word ``pytest -k``. Both may be given many times: a case runs when it
matches any of them; with neither, every case runs. A name that matches no case, or a
keyword that matches none, raises ``ValueError`` before anything runs, so a typo never
makes an empty run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .harness import DEFAULT_SIZE, Workload
from .suites import workloads

__all__ = ["PlannedCase", "plan_cases", "select"]


@dataclass(frozen=True)
class PlannedCase:
    """One workload of one suite, to be timed on the backend named ``backend``."""

    suite: str
    backend: str
    workload: Workload

    @property
    def key(self) -> str:
        """``suite/name``, what ``-k`` matches."""
        return f"{self.suite}/{self.workload.name}"


def select(declared: Sequence[tuple[str, Workload]], names: Iterable[str] = (),
           keywords: Iterable[str] = ()) -> list[tuple[str, Workload]]:
    """The ``(suite, workload)`` pairs of ``declared`` that match a name or a keyword (see
    the module docstring), in their order; all of them when neither is given."""
    names, keywords = list(names), list(keywords)
    if not names and not keywords:
        return list(declared)
    keys = [(f"{suite}/{wl.name}", wl.name) for suite, wl in declared]
    unknown = [n for n in names if not any(n in pair for pair in keys)]
    if unknown:
        raise ValueError(f"no case named {', '.join(map(repr, unknown))} in the suites asked for "
                         "(gpu-trader bench --list shows every case)")
    lowered = [k.lower() for k in keywords]
    unmatched = [k for k, low in zip(keywords, lowered) if not any(low in full.lower() for full, _ in keys)]
    if unmatched:
        raise ValueError(f"no case matches {', '.join(map(repr, unmatched))} "
                         "(gpu-trader bench --list shows every case)")
    return [pair for pair, (full, name) in zip(declared, keys)
            if full in names or name in names or any(low in full.lower() for low in lowered)]


def plan_cases(suites: Iterable[str], backends: Iterable[str], size: str = DEFAULT_SIZE,
               names: Iterable[str] = (), keywords: Iterable[str] = ()) -> list[PlannedCase]:
    """The cases of ``suites`` at ``size`` chosen by ``names`` / ``keywords`` (:func:`select`),
    each on every backend of ``backends``, in run order. Unknown suites, an unknown size or a
    name or keyword matching nothing raise ``ValueError``; nothing is set up or timed."""
    backends = list(backends)
    declared = [(suite, wl) for suite in suites for wl in workloads(suite, size)]
    chosen = select(declared, names, keywords)
    plan = []
    for suite in dict.fromkeys(s for s, _ in chosen):
        mine = [wl for s, wl in chosen if s == suite]
        plan += [PlannedCase(suite, be, wl) for be in backends for wl in mine]
    return plan
