"""The performance targets of ``shared/TARGETS.md`` as data, and their evaluation.

Each :class:`Target` carries the published plan's target and our own, each as a
human-readable text plus machine-checkable :class:`Check` s on a case's metrics.
Metric names (all floats; see :meth:`gpu_trader.bench.harness.CaseResult.metrics`):

* ``p50_s``       median latency of one call, seconds;
* ``ratio:NAME``  reference NAME's p50 / our p50 (> 1: we are faster);
* ``x_copy``      our p50 / p50 of copying the case's inputs (to fresh arrays) on the
  same device;
* ``bw_fraction`` our bytes moved (inputs read + outputs written) per second /
  the device's copy bandwidth measured in the same run (1.0 = at the roofline).
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
)

_FAISS_PARITY = (Check("ratio:faiss", ">=", 1 / 1.5, ("cpu",)),)
_MS = 1e-3

_ALL += (
    # -- section 7: vectors -----------------------------------------------------------
    Target("vectors.normalize", "normalize one vector, dim 128..1536", "< 10 us", "(ours: < 2 us at 384)",
           _p50_below(10 * _US), ()),
    Target("vectors.normalize_384", "normalize one vector, dim 384", "< 10 us", "< 2 us",
           _p50_below(10 * _US), _p50_below(2 * _US)),
    Target("vectors.cosine", "cosine of one pair, dim 128..1536", "< 5 us", "(ours: < 2 us at 384)",
           _p50_below(5 * _US), ()),
    Target("vectors.cosine_384", "cosine of one pair, dim 384", "< 5 us", "< 2 us",
           _p50_below(5 * _US), _p50_below(2 * _US)),
    Target("vectors.insert_one", "insert one vector, dim 384", "< 500 us", "< 20 us",
           _p50_below(500 * _US), _p50_below(20 * _US)),
    Target("vectors.insert_batch", "insert a batch of 100, dim 384", "< 5 ms", "< 500 us",
           _p50_below(5 * _MS), _p50_below(500 * _US)),
    Target("vectors.exact", "exact k-NN (k = 1, 5, 10, 20), 10K x 384, one query", "< 1 ms",
           "< 300 us single query (CPU)", _p50_below(1 * _MS), (Check("p50_s", "<", 300 * _US, ("cpu",)),)),
    Target("vectors.batched_exact_cpu", "batched exact k-NN, 1000 queries x 10K x 384 (CPU)", "(none)",
           "within 1.5x of FAISS IndexFlatIP", (), _FAISS_PARITY),
    Target("vectors.batched_exact", "batched exact k-NN, 1000 queries x 1M x 384", "(none)",
           "GPU >= 50% of matmul rate", (), (Check("ratio:gemm", ">=", 0.5, ("cuda",)),)),
    Target("vectors.approx", "approximate k-NN, 100K x 384", "< 1 ms", "< 200 us at recall@10 >= 0.95 (CPU)",
           _p50_below(1 * _MS), (Check("p50_s", "<", 200 * _US, ("cpu",)),)),
    Target("vectors.filtered", "pattern retrieval with metadata filter, 10K patterns", "< 500 us", "< 300 us",
           _p50_below(500 * _US), _p50_below(300 * _US)),
    Target("vectors.distill", "distillation (cluster into centroids), 100 patterns", "< 10 ms", "< 2 ms",
           _p50_below(10 * _MS), _p50_below(2 * _MS)),
)

TARGETS: dict[str, Target] = {t.key: t for t in _ALL}
