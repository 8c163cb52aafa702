"""Progress lines of a bench run (standard error), with an estimate of the time left.

After each case::

      [ 12/163] features/cpu: sma(10) 100 bars ... ok (1.1 s; ~2 min 40 s left)

and after each suite, the parent process's resident set once the suite's data is released::

      features done in 41 s; parent RSS 412 MB after releasing its data (1.21 GB before)

Estimate: each case weighs one plus the number of callables it times (ours, each
reference, the input copies, the matmul-rate yardstick, its own metrics: see
:func:`case_weight`); the time left is the run's elapsed time per unit of weight so far
times the weight still to run. It adapts to the machine as the run goes; a case much
slower than its weight says (a Monte Carlo call takes seconds) makes it jump.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Sequence, TextIO

from .harness import CaseResult, Workload
from .selection import PlannedCase

__all__ = ["Progress", "case_weight", "fmt_duration", "fmt_bytes"]


def case_weight(wl: Workload) -> int:
    """One (setup) plus the callables ``wl`` times: itself, its references, two input copies
    when it has a copy yardstick, the matmul rate when it declares flops, its extra metrics."""
    return (2 + len(wl.references) + (2 if wl.copy_inputs is not None else 0)
            + (wl.flops is not None) + (wl.extra_metrics is not None))


def fmt_duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``1 h 02 min``: a duration rounded to what a reader needs."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def fmt_bytes(n: int | None) -> str:
    """``412 MB`` / ``1.21 GB`` (decimal units); ``unknown`` for None."""
    if n is None:
        return "unknown"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


class Progress:
    """Writes the progress lines of a run of ``plan`` (in plan order) to ``out`` (default
    standard error); ``clock`` returns seconds (injectable for tests)."""

    def __init__(self, plan: Sequence[PlannedCase], out: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._weights = [case_weight(c.workload) for c in plan]
        self._total = sum(self._weights)
        self._out = out
        self._clock = clock
        self._start = self._last = self._suite_start = clock()
        self._done = 0
        self._done_weight = 0

    def eta_s(self) -> float | None:
        """Estimated seconds left, None before the first case has finished."""
        if not self._done_weight:
            return None
        elapsed = self._last - self._start
        return elapsed / self._done_weight * (self._total - self._done_weight)

    def case_done(self, res: CaseResult) -> None:
        """Count the next case of the plan as finished with ``res``; write its line."""
        now = self._clock()
        took, self._last = now - self._last, now
        if self._done < len(self._weights):
            self._done_weight += self._weights[self._done]
        self._done += 1
        n = len(self._weights)
        left = "done" if self._done >= n else f"~{fmt_duration(self.eta_s() or 0.0)} left"
        self._write(f"  [{self._done:>{len(str(n))}}/{n}] {res.suite}/{res.backend}: {res.name} ... "
                    f"{res.status} ({took:.1f} s; {left})")

    def suite_done(self, suite: str, rss_before: int | None, rss_after: int | None) -> None:
        """Write the suite's wall time and the parent's resident set after releasing its data."""
        now = self._clock()
        took, self._suite_start = now - self._suite_start, now
        self._last = now  # the release is not the next case's time
        self._write(f"  {suite} done in {fmt_duration(took)}; parent RSS {fmt_bytes(rss_after)} after "
                    f"releasing its data ({fmt_bytes(rss_before)} before)")

    def _write(self, line: str) -> None:
        print(line, file=self._out or sys.stderr, flush=True)
