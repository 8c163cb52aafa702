"""Overhead of the NVTX wrappers (gpu_trader.profiling) on the 100-bar latency path.

Times ``gt.sma(x, 20)`` with ``x`` 100 float64 on the CPU backend, one call per sample
(``time.perf_counter_ns``), p50 of ``--calls`` samples; each configuration is repeated
``--repeats`` times interleaved and the median of the p50s is printed. Configurations:
profiling off (``gt.sma`` is then the undecorated function), after
:func:`~gpu_trader.profiling.enable` failed because ``nvtx`` cannot be imported, the
wrapper called while off (a reference kept after ``disable()``), profiling on (only when
``nvtx`` is importable; no profiler attached), and the same for a no-op function.
``--tick`` instead times ``TradingPipeline.on_tick`` (median over a 20 000-tick, 50-symbol
stream, per run) with profiling off, then on.
Run: ``python benches/nvtx_overhead.py [--tick]``.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings

import msgspec
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


def tick_median_us(n_ticks: int = 20_000, n_symbols: int = 50) -> float:
    names = [f"S{i}" for i in range(n_symbols)]
    manager = gt.OrderManager(gt.SimulatedBroker("sim", latency_s=0.0), portfolio=gt.Portfolio(1e7))
    pipe = gt.TradingPipeline(names, gt.Momentum(2, 5), manager, timeframe=1_000_000)
    rng = np.random.default_rng(0)
    price = np.full(n_symbols, 100.0)
    messages = []
    for i in range(n_ticks):
        s = int(rng.integers(n_symbols))
        price[s] *= float(np.exp(rng.normal(0.0, 0.01)))
        messages.append(msgspec.json.encode({"symbol": names[s], "ts": 1 + i * 1000, "price": float(price[s]),
                                             "size": 1.0}))
    clock = time.perf_counter_ns
    samples = []
    gc.disable()
    try:
        for m in messages:
            t0 = clock()
            pipe.on_tick(m)
            samples.append(clock() - t0)
    finally:
        gc.enable()
    return float(np.median(samples)) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tick", action="store_true", help="time TradingPipeline.on_tick instead")
    args = ap.parse_args()
    if args.tick:
        import gpu_trader.pipeline  # noqa: F401  (load every module before enabling)

        off = [tick_median_us() for _ in range(args.repeats)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nvtx_ok = profiling.enable()
        on = [tick_median_us() for _ in range(args.repeats)] if nvtx_ok else []
        profiling.disable()
        for label, vals in (("on_tick, profiling off", off), ("on_tick, profiling on (nvtx, no profiler)", on)):
            if not vals:
                continue
            print(f"  {label:40s} median {statistics.median(vals):.3f} us  (runs: "
                  + ", ".join(f"{v:.3f}" for v in vals) + ")")
        return
    x = np.random.default_rng(0).standard_normal(100).cumsum() + 100.0
    sma = gt.sma  # off: the function itself
    sma_wrapper = profiling.wrapper_of(sma)

    def noop():
        return None

    noop_wrapper = profiling.wrapper_of(profiling.annotate("noop")(noop))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nvtx_ok = profiling.enable()
    profiling.disable()
    configs = {  # name: (callable, how to switch profiling)
        "sma, profiling off (gt.sma is the function itself)": (lambda: gt.sma(x, 20), "off"),
        "sma, enable() with nvtx absent (stays off)": (lambda: gt.sma(x, 20), "absent"),
        "sma wrapper called while off (kept after disable())": (lambda: sma_wrapper(x, 20), "off"),
        "no-op function": (noop, "off"),
        "no-op wrapper called while off": (noop_wrapper, "off"),
    }
    if nvtx_ok:
        configs["sma, profiling on (nvtx, no profiler)"] = (lambda: gt.sma(x, 20), "on")
        configs["no-op wrapper, profiling on (nvtx, no profiler)"] = (noop_wrapper, "on")
    results: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):
        for name, (fn, how) in configs.items():
            if how == "absent":
                _enable_without_nvtx()
            elif how == "on":
                profiling.enable()
            assert (gt.sma is sma) == (how != "on")
            try:
                results[name].append(p50_ns(fn, args.calls))
            finally:
                profiling.disable()
    print(f"nvtx importable: {nvtx_ok}; p50 per call, median of {args.repeats} runs of {args.calls} calls")
    for name, vals in results.items():
        print(f"  {name:55s} {statistics.median(vals) / 1000:7.3f} us   (runs: "
              + ", ".join(f"{v / 1000:.3f}" for v in vals) + ")")


def _enable_without_nvtx() -> None:
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


if __name__ == "__main__":
    main()
