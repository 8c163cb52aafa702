"""The ``gpu-trader`` command line.

Usage: ``gpu-trader bench [--backend NAME ...] [--suite NAME ...] [--quick]
[--json PATH] [--baseline PATH]``. Exit status: 0 when every case ran (or was
skipped), 1 when a case raised an error, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["main", "build_parser"]

# Load average per CPU before a run above which the timings are flagged as suspect.
BUSY_LOAD_PER_CPU = 0.25


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-trader", description="Batched trading compute on GPU and CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser(
        "bench", help="run the benchmark suites and check the targets of TARGETS.md",
        description="Time the benchmark suites; print p50/p95/p99, reference ratios and target PASS/FAIL.",
    )
    bench.add_argument("--backend", action="append", metavar="NAME",
                       help="backend to run on (repeatable; default: every available backend)")
    bench.add_argument("--suite", action="extend", nargs="+", metavar="NAME",
                       help="suite(s) to run (default: all)")
    bench.add_argument("--quick", action="store_true", help="small sizes and short timing (CI)")
    bench.add_argument("--json", metavar="PATH", help="also write all results and the environment to PATH")
    bench.add_argument("--baseline", metavar="PATH", help="earlier --json file: print new/old p50 per case")
    bench.set_defaults(func=lambda args: _bench(args, bench))
    return parser


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import bench
    from .backend import available_backends, get_backend
    from .bench import report

    suites = list(dict.fromkeys(args.suite or bench.SUITES))
    unknown = [s for s in suites if s not in bench.SUITES]
    if unknown:
        parser.error(f"--suite: unknown suite(s) {', '.join(unknown)}; known suites: {', '.join(bench.SUITES)}")
    backends = list(dict.fromkeys(args.backend or available_backends()))
    for name in backends:
        try:
            get_backend(name)
        except ValueError as exc:
            parser.error(f"--backend: {exc}")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json: directory of {args.json!r} does not exist")
    baseline = None
    if args.baseline:
        try:
            baseline = report.load_baseline(args.baseline)
        except ValueError as exc:
            parser.error(f"--baseline: {exc}")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    last = time.perf_counter()

    def progress(res: bench.CaseResult) -> None:
        nonlocal last
        now = time.perf_counter()
        print(f"  {res.suite}/{res.backend}: {res.name} ... {res.status} ({now - last:.1f} s)",
              file=sys.stderr, flush=True)
        last = now

    results = bench.run(suites, backends, quick=args.quick, on_result=progress)
    report.print_table(results)
    if args.quick:
        print("\n--quick: smaller batches and short timing, for CI; the targets are set for the full sizes.")
    if load_before > BUSY_LOAD_PER_CPU * (os.cpu_count() or 1):
        print(f"\nwarning: the 1-minute load average was {load_before:.2f} on {os.cpu_count()} CPUs before the "
              "run: other processes competed for the CPUs, so these timings are suspect.")
    if baseline is not None:
        report.print_baseline(results, baseline)
    if args.json:
        report.write_json(args.json, results, args.quick, load_before)
        print(f"\nwrote {args.json}")
    return 1 if any(r.status == "error" for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gpu-trader`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
