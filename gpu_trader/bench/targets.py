"""The performance targets of ``shared/TARGETS.md`` as data, and their evaluation.

Each :class:`Target` carries the published plan's target and our own, each as a
human-readable text plus machine-checkable :class:`Check` s on a case's metrics.
Metric names (all floats; see :meth:`gpu_trader.bench.harness.CaseResult.metrics`):

* ``p50_s``       median latency of one call, seconds;
* ``ratio:NAME``  reference NAME's p50 / our p50 (> 1: we are faster);
* ``x_copy``      our p50 / p50 of copying the case's inputs (to fresh arrays) on the
  same device;
* ``bw_fraction`` our bytes moved (inputs read + outputs written) per second /
  the device's copy bandwidth measured in the same run (1.0 = at the roofline);
* ``gemm_fraction`` the case's flops per second / the device's matmul rate measured
  in the same run (``gemm_rate_flops``, FLOP/s);
* ``x_roofline``  (Monte Carlo) our p50 / the time to draw the scenarios' normals at
  the backend's measured generation rate plus the loss GEMM at the measured matmul rate.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

__all__ = ["Check", "Target", "Verdict", "TARGETS", "evaluate"]

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Check:
    """``metric op limit``, optionally only on some backends (empty: every backend)."""

    metric: str
    op: str
    limit: float
    backends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"op must be one of {sorted(_OPS)}, got {self.op!r}")

    def applies_to(self, backend: str) -> bool:
        return not self.backends or backend in self.backends

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class Target:
    """One row of TARGETS.md: what the plan asks and what we ask of ourselves."""

    key: str
    case: str
    plan_text: str
    ours_text: str
    plan: tuple[Check, ...] = ()
    ours: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """``status`` is PASS, FAIL, n/a (a needed metric is missing) or - (no target here)."""

    status: str
    failures: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"status": self.status, "failures": list(self.failures), "missing": list(self.missing)}


NO_TARGET = Verdict("-")


def evaluate(checks: tuple[Check, ...], metrics: dict[str, float | None], backend: str) -> Verdict:
    """Apply the checks that concern ``backend`` to ``metrics``.

    FAIL when any check fails; otherwise n/a when a metric is missing (None or
    absent, e.g. TA-Lib not installed); otherwise PASS; ``-`` when no check applies.
    """
    active = [c for c in checks if c.applies_to(backend)]
    if not active:
        return NO_TARGET
    failures, missing = [], []
    for c in active:
        value = metrics.get(c.metric)
        if value is None:
            missing.append(c.metric)
        elif not _OPS[c.op](value, c.limit):
            failures.append(f"{c.metric} = {value:.4g}, needs {c.op} {c.limit:g}")
    status = "FAIL" if failures else "n/a" if missing else "PASS"
    return Verdict(status, tuple(failures), tuple(missing))


def _p50_below(seconds: float) -> tuple[Check, ...]:
    return (Check("p50_s", "<", seconds),)


_US = 1e-6
_BATCH_COPY = (
    Check("x_copy", "<=", 2.5, ("cpu",)),
    Check("bw_fraction", ">=", 0.5, ("cuda",)),
)
_BATCH_TALIB = (Check("ratio:talib", ">=", 1.0, ("cpu",)),)
_BATCH_TEXT = "CPU >= TA-Lib looped (aim 3x), <= 2.5x copy time; GPU >= 50% copy bandwidth"

_ALL = (
    # -- section 2: features ----------------------------------------------------------
    Target("features.sma", "SMA (10, 20, 50), 20..1000 bars", "SMA(20) < 200 us", "< 10 us at 1000 bars",
           _p50_below(200 * _US), _p50_below(10 * _US)),
    Target("features.ema", "EMA(20), 20..1000 bars", "(none)", "< 20 us at 1000 bars",
           (), _p50_below(20 * _US)),
    Target("features.rsi", "RSI(14), 20..1000 bars", "< 300 us", "< 20 us at 1000 bars",
           _p50_below(300 * _US), _p50_below(20 * _US)),
    Target("features.macd", "MACD(12,26,9), 20..1000 bars", "< 500 us", "< 20 us at 1000 bars",
           _p50_below(500 * _US), _p50_below(20 * _US)),
    Target("features.bollinger", "Bollinger(20,2), 20..1000 bars", "(none)", "< 20 us at 1000 bars",
           (), _p50_below(20 * _US)),
    Target("features.full", "full feature extraction, 100 bars", "< 1 ms (single)", "< 50 us",
           _p50_below(1000 * _US), _p50_below(50 * _US)),
    Target("features.stream", "streaming update (one new bar)", "< 100 us", "< 10 us",
           _p50_below(100 * _US), _p50_below(10 * _US)),
    Target("features.batched", "batched 2000 x 2520, one indicator", "(none)", _BATCH_TEXT,
           (), _BATCH_TALIB + _BATCH_COPY),
    Target("features.batched_sma", "batched 2000 x 2520, SMA(20)", "(none)",
           _BATCH_TEXT + "; within 1.5x of bottleneck.move_mean",
           (), _BATCH_TALIB + _BATCH_COPY + (Check("ratio:bottleneck", ">=", 1 / 1.5, ("cpu",)),)),
    Target("features.batched_vwap", "batched 2000 x 2520, VWAP (not in TA-Lib)", "(none)",
           "CPU <= 2.5x copy time; GPU >= 50% copy bandwidth", (), _BATCH_COPY),
    # -- section 5: risk (Monte Carlo row) --------------------------------------------
    Target("risk.monte_carlo", "Monte Carlo VaR, 1000 assets x 1,000,000 scenarios, 1..1000 portfolios", "(none)",
           "GPU < 100 ms; CPU within 2x of GEMM+RNG roofline",
           (), (Check("p50_s", "<", 0.1, ("cuda",)), Check("x_roofline", "<=", 2.0, ("cpu",)))),
)

TARGETS: dict[str, Target] = {t.key: t for t in _ALL}
