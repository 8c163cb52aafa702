"""Timing harness: workloads, warm-up, repeated timing, percentiles, yardsticks.

A suite declares :class:`Workload` s; :func:`run_workload` times one of them on one
backend together with its yardsticks, all in the same run and never concurrently:
the references (other libraries, on the host) and copies of the workload's inputs on
the same device are timed *interleaved* with the workload (:func:`measure_interleaved`:
``TimingPolicy.rounds`` rounds, each timing ours, then every reference, then the
copies), so a burst of load from another process falls on all of them alike and the
ratios stay fair on a shared machine. Two copies are timed: ``xp.copy`` (a
fresh array, as a user would copy; ``x_copy`` = ours / its time) and
``xp.copyto`` into buffers allocated beforehand (no page faults: the device's copy
bandwidth; ``bw_fraction`` = our bytes moved per second / that bandwidth). A workload
that declares its ``flops`` also gets the device's matrix-multiply rate, measured right
after it (:func:`measure_gemm_rate`, a 2048^2 product, 1024^2 for cases doing less
arithmetic than that; ``gemm_fraction`` = our flops per second / that rate), and ``extra_metrics`` lets a suite add figures of its own (e.g. a roofline
built from that rate).

Units: times in seconds (``*_s``) or nanoseconds (``*_ns``), sizes in bytes,
throughput in workload items (``Workload.unit``) per second.

Profiling: with :mod:`gpu_trader.profiling` on, each case runs inside one NVTX range
``bench.<suite>.<case>`` opened outside the timed loop (it adds nothing to a sample).
"""
from __future__ import annotations

import gc
import importlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..backend import AreaNotImplemented, Backend
from ..profiling import nvtx_range
from .targets import NO_TARGET, TARGETS, Verdict, evaluate

__all__ = [
    "TimingPolicy", "FULL", "STANDARD", "QUICK", "POLICIES", "SIZES", "DEFAULT_SIZE", "Stats", "percentile",
    "measure", "measure_interleaved", "Reference", "Workload", "SkipCase", "CaseResult", "run_workload",
    "measure_gemm_rate",
]

# Pause between timing phases so a spinning thread pool (OpenMP) has gone idle
# before the next phase starts; seconds.
QUIESCE_S = 0.01


@dataclass(frozen=True)
class TimingPolicy:
    """How long to time one callable.

    Warm-up: ``warmup_calls`` untimed calls (the first absorbs JIT compilation and is
    never counted), continued until ``warmup_s`` seconds passed after the first.
    Timing: one sample per call until ``min_samples`` are taken and ``budget_s``
    seconds of wall time have passed, or ``max_samples`` are taken. Callables timed
    together (:func:`measure_interleaved`) take turns in ``rounds`` rounds, each with
    its share of those three limits.
    """

    warmup_calls: int = 3
    warmup_s: float = 0.1
    min_samples: int = 20
    max_samples: int = 100_000
    budget_s: float = 1.0
    rounds: int = 4


FULL = TimingPolicy()
STANDARD = TimingPolicy(warmup_calls=3, warmup_s=0.02, min_samples=10, max_samples=50_000, budget_s=0.15, rounds=3)
QUICK = TimingPolicy(warmup_calls=2, warmup_s=0.01, min_samples=5, max_samples=20_000, budget_s=0.05, rounds=2)
# The benchmark sizes (``gpu-trader bench --quick`` / default / ``--full``) and the timing of each.
POLICIES: dict[str, TimingPolicy] = {"quick": QUICK, "standard": STANDARD, "full": FULL}
SIZES = tuple(POLICIES)
DEFAULT_SIZE = "standard"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of ascending values, linearly interpolated
    between closest ranks (NumPy's default ``method="linear"``)."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("sorted_values must not be empty")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    h = (n - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo]))


@dataclass(frozen=True)
class Stats:
    """Latency distribution of one timed callable; seconds.

    ``mad_s``: the median absolute deviation of the samples from ``p50_s``, the run's
    noise (see :mod:`.compare`); None for results recorded before it was measured.
    """

    n: int
    p50_s: float
    p95_s: float
    p99_s: float
    mean_s: float
    min_s: float
    max_s: float
    mad_s: float | None = None

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> "Stats":
        s = np.sort(np.asarray(samples_ns, dtype=np.float64)) * 1e-9
        p50 = percentile(s, 50)
        return cls(
            n=len(s), p50_s=p50, p95_s=percentile(s, 95), p99_s=percentile(s, 99),
            mean_s=float(s.mean()), min_s=float(s[0]), max_s=float(s[-1]),
            mad_s=float(np.median(np.abs(s - p50))),
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _no_sync() -> None:
    pass


Timed = tuple[Callable[[], Any], Callable[[], None]]  # a call and the sync that waits for its device


def measure(fn: Callable[[], Any], policy: TimingPolicy, sync: Callable[[], None] = _no_sync) -> Stats:
    """Warm up and time ``fn()`` alone with ``time.perf_counter_ns``
    (:func:`measure_interleaved` of one callable, in one round)."""
    return measure_interleaved([(fn, sync)], policy)[0]


def measure_interleaved(calls: Sequence[Timed], policy: TimingPolicy) -> list[Stats]:
    """Warm up each ``(fn, sync)`` of ``calls``, then time them in turns; one :class:`Stats` each.

    ``sync`` blocks until the device is idle; it is called before and after every
    call (warm-up included), so asynchronous GPU work is timed in full. With more than
    one callable the timing runs in ``policy.rounds`` rounds (at most ``min_samples``):
    in each, every callable in order gets its share of ``min_samples``,
    ``max_samples`` and ``budget_s``, with a ``QUIESCE_S`` pause before each turn. The
    garbage collector is paused while sampling.
    """
    for fn, sync in calls:
        _warm_up(fn, sync, policy)
    rounds = max(1, min(policy.rounds, policy.min_samples)) if len(calls) > 1 else 1
    samples: list[list[int]] = [[] for _ in calls]
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            lo, hi = _share(policy.min_samples, rounds, r), _share(policy.max_samples, rounds, r)
            for (fn, sync), out in zip(calls, samples):
                if rounds > 1:
                    time.sleep(QUIESCE_S)
                _sample(fn, sync, lo, hi, policy.budget_s / rounds, out)
    finally:
        if gc_was_enabled:
            gc.enable()
    return [Stats.from_ns(s) for s in samples]


def _share(total: int, rounds: int, r: int) -> int:
    """Round ``r``'s share of ``total`` samples: the rounds' shares add up to ``total``."""
    return total // rounds + (1 if r < total % rounds else 0)


def _warm_up(fn: Callable[[], Any], sync: Callable[[], None], policy: TimingPolicy) -> None:
    sync()
    fn()
    sync()
    warm_until = time.perf_counter() + policy.warmup_s
    calls = 1
    while calls < policy.warmup_calls or time.perf_counter() < warm_until:
        fn()
        sync()
        calls += 1


def _sample(fn: Callable[[], Any], sync: Callable[[], None], lo: int, hi: int, budget_s: float,
            out: list[int]) -> None:
    """Append one ``perf_counter_ns`` sample per call until ``lo`` are taken and ``budget_s``
    passed, or ``hi`` are taken."""
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    n = 0
    while n < hi and (n < lo or clock() < deadline):
        sync()
        t0 = clock()
        fn()
        sync()
        out.append(clock() - t0)
        n += 1


class SkipCase(Exception):
    """Raised by a workload's ``setup`` when the case cannot run here; the message says why."""


@dataclass(frozen=True)
class Reference:
    """Another library's way to compute the same result, timed on the host in the same run.

    ``name`` is a short key (``ratio:<name>`` in the metrics); ``setup()`` builds the
    host state (not timed) and may raise :class:`SkipCase` (say, a library too old for
    the call), ``run(state)`` is one timed call; ``requires`` names a module that must
    import. Without the module, or after a ``SkipCase``, the ratio is reported as n/a. ``scale``: the
    call does ``1 / scale`` of the workload's work (a reference too big for the
    machine's memory runs a share of it) and its time is multiplied by ``scale``.
    """

    name: str
    setup: Callable[[], Any]
    run: Callable[[Any], Any]
    requires: str | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class Workload:
    """One benchmark case, declared by a suite.

    ``setup(backend)`` builds the state (inputs on the backend's device; not timed)
    and may raise :class:`SkipCase`; ``run(state)`` is one timed call. ``items`` is
    the number of ``unit`` s one call processes (throughput = items / p50).
    ``copy_inputs(state)``, when given, returns the device arrays whose copy is the
    bandwidth yardstick; ``bytes_moved`` is the bytes one call must read plus write.
    ``target`` is a key of :data:`gpu_trader.bench.targets.TARGETS`.
    ``flops``: the arithmetic one call must do (for ``gemm_fraction``);
    ``extra_metrics(state, backend, policy, metrics)`` returns more named metrics,
    given those measured so far; ``policy`` replaces the run's timing policy for this
    case and its references (for calls that take seconds).
    """

    name: str
    sizes: Mapping[str, int]
    setup: Callable[[Backend], Any]
    run: Callable[[Any], Any]
    items: int
    unit: str = "bar"
    dtype: str = "float64"
    target: str | None = None
    references: tuple[Reference, ...] = ()
    copy_inputs: Callable[[Any], Sequence[Any]] | None = None
    bytes_moved: int | None = None
    flops: int | None = None
    extra_metrics: Callable[[Any, Backend, TimingPolicy, dict], Mapping[str, float]] | None = None
    policy: TimingPolicy | None = None

    def __post_init__(self) -> None:
        if self.target is not None and self.target not in TARGETS:
            raise ValueError(f"workload {self.name!r}: unknown target {self.target!r}")
        if (self.copy_inputs is None) != (self.bytes_moved is None):
            raise ValueError(f"workload {self.name!r}: give both copy_inputs and bytes_moved, or neither")


@dataclass
class RefResult:
    """A reference's timing: p50 in seconds and ratio reference / ours (None when n/a)."""

    p50_s: float | None
    ratio: float | None
    note: str = ""


@dataclass
class CaseResult:
    """Everything recorded for one workload on one backend (``status``: ok, skipped or error)."""

    suite: str
    name: str
    backend: str
    device: str
    sizes: dict[str, int]
    dtype: str
    unit: str
    target: str | None
    status: str = "ok"
    note: str = ""
    stats: Stats | None = None
    throughput_per_s: float | None = None
    references: dict[str, RefResult] = field(default_factory=dict)
    copy_p50_s: float | None = None
    copy_bytes: int | None = None
    copy_bandwidth_Bps: float | None = None
    bytes_moved: int | None = None
    x_copy: float | None = None
    bw_fraction: float | None = None
    gemm_rate_flops: float | None = None
    gemm_fraction: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    plan: Verdict = NO_TARGET
    ours: Verdict = NO_TARGET

    def metrics(self) -> dict[str, float | None]:
        """The named figures targets are checked against (see :mod:`.targets`)."""
        out = {
            "p50_s": self.stats.p50_s if self.stats else None,
            "p95_s": self.stats.p95_s if self.stats else None,
            "p99_s": self.stats.p99_s if self.stats else None,
            "throughput_per_s": self.throughput_per_s,
            "x_copy": self.x_copy,
            "bw_fraction": self.bw_fraction,
            "gemm_rate_flops": self.gemm_rate_flops,
            "gemm_fraction": self.gemm_fraction,
        }
        out.update({f"ratio:{k}": r.ratio for k, r in self.references.items()})
        out.update(self.extra)
        return out

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("stats", "references", "plan", "ours")}
        d["stats"] = self.stats.to_dict() if self.stats else None
        d["references"] = {k: dict(r.__dict__) for k, r in self.references.items()}
        d["plan"] = self.plan.to_dict()
        d["ours"] = self.ours.to_dict()
        return d


def _reference_call(ref: Reference) -> tuple[Callable[[], Any] | None, str]:
    """``(the zero-argument timed call of ref, "")`` with its setup done, or ``(None, why
    not)`` when its module is missing or its setup raised :class:`SkipCase`."""
    if ref.requires:
        try:
            importlib.import_module(ref.requires)
        except ImportError:
            return None, f"{ref.requires} is not installed"
    try:
        state = ref.setup()
    except SkipCase as exc:
        return None, str(exc)
    return (lambda: ref.run(state)), ""


def _reference_result(ref: Reference, stats: Stats | None, why_not: str, ours_s: float) -> RefResult:
    if stats is None:
        return RefResult(None, None, why_not)
    p50 = stats.p50_s * ref.scale
    return RefResult(p50, p50 / ours_s, f"run on 1/{ref.scale:g} of the work, time scaled" if ref.scale != 1 else "")


def run_workload(suite: str, wl: Workload, be: Backend, policy: TimingPolicy) -> CaseResult:
    """Time ``wl`` on ``be`` interleaved with its references and copy yardstick; evaluate targets.

    A :class:`SkipCase` from setup, or a backend without the case's area (the ``jax``
    backend has no market data, say), gives status ``skipped``; any other exception from
    the workload gives status ``error`` with the message (the run goes on).
    """
    res = CaseResult(suite, wl.name, be.name, be.device_name(), dict(wl.sizes), wl.dtype, wl.unit, wl.target)
    try:
        with nvtx_range(f"bench.{suite}.{wl.name}"):  # one range per case, outside the timed loop
            _time_case(wl, be, policy, res)
    except (SkipCase, AreaNotImplemented) as exc:
        res.status, res.note = "skipped", str(exc)
        return res
    except Exception as exc:  # a broken case is reported, not fatal to the run
        res.status, res.note = "error", f"{type(exc).__name__}: {exc}"
        return res
    if wl.target is not None:
        target = TARGETS[wl.target]
        metrics = res.metrics()
        res.plan = evaluate(target.plan, metrics, be.name)
        res.ours = evaluate(target.ours, metrics, be.name)
    return res


def _time_case(wl: Workload, be: Backend, policy: TimingPolicy, res: CaseResult) -> None:
    """Fill ``res`` with the timings of ``wl``, its references and its yardsticks: ours, the
    references and the input copies interleaved, then the matmul rate and the extra metrics."""
    policy = wl.policy or policy
    state = wl.setup(be)
    sync = be.synchronize
    calls: list[Timed] = [(lambda: be.ready(wl.run(state)), sync)]
    ref_calls = [_reference_call(ref) for ref in wl.references]
    calls += [(call, _no_sync) for call, _ in ref_calls if call is not None]
    if wl.copy_inputs is not None:
        arrays = tuple(wl.copy_inputs(state))
        xp = be.xp
        calls.append((lambda: be.ready([xp.copy(a) for a in arrays]), sync))
        if be.mutable_arrays:  # the bandwidth without allocation: copies into preallocated buffers
            dsts = [xp.empty_like(a) for a in arrays]
            calls.append((lambda: [xp.copyto(d, a) for d, a in zip(dsts, arrays)], sync))
    stats = iter(measure_interleaved(calls, policy))
    res.stats = next(stats)
    ours = res.stats.p50_s
    res.throughput_per_s = wl.items / ours
    for ref, (call, why_not) in zip(wl.references, ref_calls):
        res.references[ref.name] = _reference_result(ref, None if call is None else next(stats), why_not, ours)
    if wl.copy_inputs is not None:
        res.copy_bytes = 2 * sum(int(a.nbytes) for a in arrays)
        res.bytes_moved = wl.bytes_moved
        res.copy_p50_s = next(stats).p50_s
        res.x_copy = ours / res.copy_p50_s
        copyto_s = next(stats).p50_s if be.mutable_arrays else res.copy_p50_s
        res.copy_bandwidth_Bps = res.copy_bytes / copyto_s
        res.bw_fraction = wl.bytes_moved / ours / res.copy_bandwidth_Bps
    if wl.flops is not None:
        time.sleep(QUIESCE_S)
        size = GEMM_SIZE if wl.flops >= 2 * GEMM_SIZE**3 else SMALL_GEMM_SIZE
        res.gemm_rate_flops = measure_gemm_rate(be, np.dtype(wl.dtype), policy, size)
        res.gemm_fraction = wl.flops / ours / res.gemm_rate_flops
    if wl.extra_metrics is not None:
        time.sleep(QUIESCE_S)
        res.extra.update(wl.extra_metrics(state, be, policy, res.metrics()))


GEMM_SIZE = 2048
SMALL_GEMM_SIZE = 1024  # for cases that do less arithmetic than one GEMM_SIZE product


def measure_gemm_rate(be: Backend, dtype: np.dtype, policy: TimingPolicy, size: int = GEMM_SIZE) -> float:
    """The device's matrix-multiply rate, FLOP/s: ``2 size^3 / p50`` of a square
    ``(size, size) @ (size, size)`` product of ``dtype`` into a preallocated output."""
    return _gemm_rate(be, np.dtype(dtype), policy, size)


def _gemm_rate(be: Backend, dtype: np.dtype, policy: TimingPolicy, size: int) -> float:
    xp = be.xp
    rng = np.random.default_rng(0)
    a, b = (be.asarray(rng.standard_normal((size, size)).astype(dtype)) for _ in range(2))
    if be.mutable_arrays:
        out = xp.empty((size, size), dtype=dtype)
        p50 = measure(lambda: xp.matmul(a, b, out=out), policy, be.synchronize).p50_s
    else:
        p50 = measure(lambda: be.ready(xp.matmul(a, b)), policy, be.synchronize).p50_s
    return 2.0 * size**3 / p50
