"""Bench output: the case list (``--list``), the results table, the JSON file, the run's environment.

The baseline comparison is :mod:`.compare`, the Markdown report :mod:`.markdown`.

JSON layout (``schema`` 1): ``{"schema", "timestamp" (ISO 8601 UTC), "size" (quick,
standard or full), "quick" (size == quick; files written before ``size`` existed have
only this one, and were full runs unless it is true), "environment": {...versions, cpu
count, thread settings...}, "devices": {backend: name}, "results": [CaseResult.to_dict(),
...]}``; times in seconds.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import sys
from typing import Any, TextIO

from .harness import CaseResult
from .output import write_text_atomic
from .selection import PlannedCase
from .targets import TARGETS

__all__ = ["fmt_time", "print_plan", "print_table", "environment", "write_json"]

SCHEMA = 1
_THREAD_ENV = (
    "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
)


def fmt_time(seconds: float | None) -> str:
    """``1.23us``-style rendering of a duration in seconds; ``-`` for None."""
    if seconds is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3g}{unit}"
    return f"{seconds * 1e9:.3g}ns"


def _fmt_rate(per_s: float | None, unit: str) -> str:
    if per_s is None:
        return "-"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= scale:
            return f"{per_s / scale:.3g}{prefix} {unit}/s"
    return f"{per_s:.3g} {unit}/s"


def _fmt_refs(res: CaseResult) -> str:
    parts = []
    for name, ref in res.references.items():
        parts.append(f"{name} {ref.ratio:.2f}x" if ref.ratio is not None else f"{name} n/a")
    return " ".join(parts) or "-"


def _row(res: CaseResult) -> list[str]:
    if res.status != "ok":
        return [res.name, res.status.upper(), "", "", "", "", "", "", "", ""]
    s = res.stats
    return [
        res.name, fmt_time(s.p50_s), fmt_time(s.p95_s), fmt_time(s.p99_s),
        _fmt_rate(res.throughput_per_s, res.unit), _fmt_refs(res),
        "-" if res.x_copy is None else f"{res.x_copy:.2f}x",
        "-" if res.bw_fraction is None else f"{res.bw_fraction:.0%}",
        res.plan.status, res.ours.status,
    ]


_HEADER = ["case", "p50", "p95", "p99", "throughput", "vs reference (ref/ours)", "x copy", "% copy bw", "plan", "ours"]


def _print_aligned(table: list[list[str]], out: TextIO, left: tuple[int, ...]) -> None:
    """``table`` (header first) as aligned columns, a rule under the header; columns in
    ``left`` are left-aligned, the others right-aligned."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for i, line in enumerate(table):
        cells = [c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip(), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)


def print_plan(plan: list[PlannedCase], size: str, out: TextIO | None = None) -> None:
    """``gpu-trader bench --list``: every planned case (once, whatever the backends) with its
    suite, sizes and target (key: our target), then the count, size and backends; no timing."""
    out = out or sys.stdout
    table = [["suite", "case", "sizes", "target"]]
    seen = set()
    for case in plan:
        wl = case.workload
        if case.key in seen:
            continue
        seen.add(case.key)
        target = f"{wl.target}: {TARGETS[wl.target].ours_text}" if wl.target else "-"
        table.append([case.suite, wl.name, " ".join(f"{k}={v}" for k, v in wl.sizes.items()), target])
    _print_aligned(table, out, left=(0, 1, 2, 3))
    backends = ", ".join(dict.fromkeys(c.backend for c in plan))
    print(f"\n{len(seen)} cases, size {size}, on {backends or 'no backend'}", file=out)


def print_table(results: list[CaseResult], out: TextIO | None = None) -> None:
    """One table per (suite, backend), then the targets used and every failure or skip note
    (to ``out``, default standard output)."""
    out = out or sys.stdout
    groups: dict[tuple[str, str], list[CaseResult]] = {}
    for r in results:
        groups.setdefault((r.suite, r.backend), []).append(r)
    for (suite, backend), rows in groups.items():
        print(f"\n== suite {suite} | backend {backend} | {rows[0].device}", file=out)
        _print_aligned([_HEADER] + [_row(r) for r in rows], out, left=(0, 5))
    _print_notes(results, out)


def _print_notes(results: list[CaseResult], out: TextIO) -> None:
    keys = list(dict.fromkeys(r.target for r in results if r.target))
    if keys:
        print("\nTargets (gpu_trader/bench/targets.py): key: case | plan | ours", file=out)
        for k in keys:
            t = TARGETS[k]
            print(f"  {k}: {t.case} | {t.plan_text} | {t.ours_text}", file=out)
    notes = []
    for r in results:
        where = f"{r.name} [{r.backend}]"
        if r.note:
            notes.append(f"  {where} {r.status}: {r.note}")
        for side, verdict in (("plan", r.plan), ("ours", r.ours)):
            notes.extend(f"  {where} {side} FAIL: {f}" for f in verdict.failures)
            if verdict.missing:
                notes.append(f"  {where} {side} n/a: missing {', '.join(verdict.missing)}")
        notes.extend(f"  {where} {name}: {ref.note}" for name, ref in r.references.items() if ref.note)
        if r.gemm_rate_flops is not None:
            notes.append(f"  {where} matmul rate {r.gemm_rate_flops / 1e9:.4g} GFLOP/s (measured in this run); "
                         f"gemm_fraction {r.gemm_fraction:.1%}")
        if r.extra:
            notes.append(f"  {where} metrics: " + ", ".join(
                f"{k} {_fmt_metric(k, v)}" for k, v in r.extra.items()))
    if notes:
        print("\nNotes:", file=out)
        print("\n".join(notes), file=out)


def _fmt_metric(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return fmt_time(value) if name.endswith("_s") else f"{value:.4g}"


def _module_version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "unknown")
    except ImportError:
        return None


def environment() -> dict[str, Any]:
    """Versions, CPU count, load average and thread settings of this process (call
    after the run, when numba's threading layer has been chosen)."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = None
    versions = {name: _module_version(name) for name in ("numpy", "numba", "llvmlite", "talib", "bottleneck")}
    versions["python"] = platform.python_version()
    versions["gpu_trader"] = _module_version("gpu_trader")
    if "cupy" in sys.modules:
        cupy = sys.modules["cupy"]
        versions["cupy"] = cupy.__version__
        versions["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        versions["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    return {
        "versions": versions,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_after_run": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "threads": {
            "numba_num_threads": numba.get_num_threads(),
            "numba_threading_layer": layer,
            "env": {k: os.environ.get(k) for k in _THREAD_ENV},
        },
    }


def write_json(path: str, results: list[CaseResult], size: str, load_before: float | None = None) -> None:
    """Write the run (results, devices, environment, timestamp, ``size``) to ``path``
    (atomically: see :mod:`.output`); ``load_before`` is the 1-minute load average seen
    before the run started. Raises ``OSError`` when the file cannot be written."""
    env = environment()
    env["loadavg_before_run"] = load_before
    doc = {
        "schema": SCHEMA,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": size,
        "quick": size == "quick",
        "environment": env,
        "devices": {r.backend: r.device for r in results},
        "results": [r.to_dict() for r in results],
    }
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
