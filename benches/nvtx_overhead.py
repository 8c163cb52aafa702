"""Overhead of the NVTX wrappers (gpu_trader.profiling) on the 100-bar latency path.

Times ``gt.sma(x, 20)`` with ``x`` 100 float64 on the CPU backend, one call per sample
(``time.perf_counter_ns``), p50 of ``--calls`` samples; each configuration is repeated
``--repeats`` times interleaved and the median of the p50s is printed. Configurations:
the undecorated function (``gt.sma.__wrapped__``), the decorated one with profiling off,
with profiling switched on by :func:`~gpu_trader.profiling.enable` while ``nvtx`` cannot be
imported (it stays off), with profiling on (only when ``nvtx`` is importable; no profiler
attached), and the bare wrapper around a no-op function. Run: ``python benches/nvtx_overhead.py``.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings

import numpy as np

import gpu_trader as gt
from gpu_trader import profiling


def p50_ns(fn, calls: int) -> float:
    for _ in range(200):
        fn()
    clock = time.perf_counter_ns
    samples = []
    gc.disable()
    try:
        for _ in range(calls):
            t0 = clock()
            fn()
            samples.append(clock() - t0)
    finally:
        gc.enable()
    return float(np.median(samples))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal(100).cumsum() + 100.0
    raw, wrapped = gt.sma.__wrapped__, gt.sma

    def noop():
        return None

    noop_wrapped = profiling.annotate("noop")(noop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nvtx_ok = profiling.enable()
    profiling.disable()
    configs = {
        "sma undecorated (__wrapped__)": (lambda: raw(x, 20), False),
        "sma decorated, profiling off": (lambda: wrapped(x, 20), False),
        "no-op undecorated": (noop, False),
        "no-op decorated, profiling off": (noop_wrapped, False),
    }
    if nvtx_ok:
        configs["sma decorated, profiling on (nvtx, no profiler)"] = (lambda: wrapped(x, 20), True)
        configs["no-op decorated, profiling on (nvtx, no profiler)"] = (noop_wrapped, True)
    configs["sma decorated, enable() with nvtx absent"] = (lambda: wrapped(x, 20), "absent")
    results: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):
        for name, (fn, on) in configs.items():
            if on == "absent":
                saved = sys.modules.get("nvtx")
                sys.modules["nvtx"] = None  # makes ``import nvtx`` raise ImportError
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        assert not profiling.enable()
                finally:
                    if saved is None:
                        del sys.modules["nvtx"]
                    else:
                        sys.modules["nvtx"] = saved
            elif on:
                profiling.enable()
            try:
                results[name].append(p50_ns(fn, args.calls))
            finally:
                profiling.disable()
    print(f"nvtx importable: {nvtx_ok}; p50 per call, median of {args.repeats} runs of {args.calls} calls")
    for name, vals in results.items():
        print(f"  {name:55s} {statistics.median(vals) / 1000:7.3f} us   (runs: "
              + ", ".join(f"{v / 1000:.3f}" for v in vals) + ")")


if __name__ == "__main__":
    main()
