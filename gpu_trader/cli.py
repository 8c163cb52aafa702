"""The ``gpu-trader`` command line.

Usage: ``gpu-trader bench [--backend NAME ...] [--suite NAME ...] [--case NAME ...] [-k TEXT ...]
[--quick | --full] [--list] [--json PATH] [--baseline PATH [--fail-on-regression] [--min-change F]]
[--report PATH.md|PATH.html]`` runs the suites (``--list``: prints the cases it would run, without timing);
``gpu-trader compare OLD.json NEW.json [--fail-on-regression] [--min-change F] [--report PATH.md|PATH.html]``
applies the regression gate (:mod:`gpu_trader.bench.compare`) to two ``--json`` files. A report
whose name ends in ``.html``/``.htm`` is HTML (:mod:`gpu_trader.bench.html`), any other Markdown
(:mod:`gpu_trader.bench.markdown`).
``gpu-trader serve-metrics --replay TICKS.jsonl [--port 9100] [--addr 127.0.0.1] [--duration S]
[--symbols A,B,...] [--timeframe 1s]`` serves a trading pipeline's Prometheus metrics
(:mod:`gpu_trader.metrics`) at ``http://ADDR:PORT/metrics`` while it replays recorded tick
messages (one JSON message per line) through it, against a simulated broker: it prints
the URL first, then a summary after the replay, and serves until ``--duration`` seconds
after the replay have passed (default: until interrupted). Exit status 2 when the file
cannot be read, names no symbol or too many, or the address cannot be bound.

Sizes: the default run is ``standard`` (every case of every suite; batches and stores smaller
than the published sizes, so that the whole run takes a few minutes on 2 cores, GPU runs
included: the references run on the host); ``--full`` runs the published sizes the
targets name (about 15 minutes on 2 cores), ``--quick`` the CI smoke sizes.

Exit status: 0 when every case ran (or was skipped) and, with ``--fail-on-regression``,
none regressed against the baseline; 1 when a case raised an error (this wins over 3 and
4); 2 for bad arguments, an invalid baseline/run file (:func:`~gpu_trader.bench.compare.load_run`)
or an output path that cannot be written, all checked before the run starts; 3 with
``--fail-on-regression`` when a case REGRESSED; 4 when an output file could not be written
after the run (the JSON is written first, so a failing report never loses it).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .bench.compare import CaseComparison

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_CASE_ERROR, EXIT_BAD_ARGS, EXIT_REGRESSION, EXIT_OUTPUT_ERROR = 0, 1, 2, 3, 4
_EXIT_HELP = """exit status:
  0  every case ran (or was skipped) and, under --fail-on-regression, none regressed
  1  a case raised an error (wins over 3 and 4)
  2  bad arguments, an unreadable or invalid baseline/run file, or an output path
     that cannot be written (checked before the run starts)
  3  --fail-on-regression and a case regressed against the baseline
  4  an output file could not be written after the run (wins over 3; the JSON is
     written before the report, so a failing report never loses it)"""

# Load average per CPU before a run above which the timings are flagged as suspect.
BUSY_LOAD_PER_CPU = 0.25


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-trader", description="Batched trading compute on GPU and CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser(
        "bench", help="run the benchmark suites and check their targets (docs/design.md#benchmarks-and-targets)",
        description="Time the benchmark suites; print p50/p95/p99, reference ratios and target PASS/FAIL.",
        epilog=_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--backend", action="append", metavar="NAME",
                       help="backend to run on (repeatable; default: every available backend that implements "
                            "every area: cpu, and cuda where present; jax only when named)")
    bench.add_argument("--suite", action="extend", nargs="+", metavar="NAME",
                       help="suite(s) to run (default: all)")
    bench.add_argument("--case", action="append", metavar="NAME",
                       help="run only the case of this full name, as --list prints it, with or without "
                            "'suite/' (repeatable)")
    bench.add_argument("-k", action="append", dest="keyword", metavar="TEXT",
                       help="run only the cases whose 'suite/name' contains TEXT, ignoring case (repeatable; "
                            "with --case, a case runs when it matches any of them)")
    sizes = bench.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_const", dest="size", const="quick",
                       help="small sizes and short timing (CI smoke)")
    sizes.add_argument("--full", action="store_const", dest="size", const="full",
                       help="the published sizes the targets name, longer timing (about 15 minutes on 2 cores; "
                            "default: standard sizes, every case in a few minutes)")
    bench.add_argument("--list", action="store_true",
                       help="print the cases the run would time (suite, case, sizes, target) and exit")
    bench.add_argument("--json", metavar="PATH", help="also write all results and the environment to PATH")
    bench.add_argument("--baseline", metavar="PATH",
                       help="earlier --json file: compare p50 per case, marking REGRESSED/IMPROVED beyond "
                            "max(5%%, the measured noise)")
    _gate_arguments(bench)
    bench.set_defaults(func=lambda args: _bench(args, bench), size="standard")
    comp = sub.add_parser(
        "compare", help="regression gate between two --json files",
        description="Compare NEW against OLD case by case (suite, case, backend): REGRESSED / IMPROVED\n"
                    "when p50 moved by more than max(5%, the noise of the two runs), unchanged otherwise.",
        epilog=_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("old", metavar="OLD.json", help="the baseline run")
    comp.add_argument("new", metavar="NEW.json", help="the run to check")
    _gate_arguments(comp)
    comp.set_defaults(func=lambda args: _compare(args, comp))
    serve = sub.add_parser(
        "serve-metrics", help="replay recorded ticks through a trading pipeline and serve its Prometheus metrics",
        description="Replay TICKS.jsonl (one tick JSON message per line) through a TradingPipeline with a "
                    "simulated broker and serve its metrics at http://ADDR:PORT/metrics.",
    )
    serve.add_argument("--replay", required=True, metavar="TICKS.jsonl", help="recorded tick messages, one per line")
    serve.add_argument("--port", type=_port, default=9100, help="TCP port (0: any free port; default 9100)")
    serve.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--duration", type=_seconds, default=None, metavar="S",
                       help="seconds to keep serving after the replay (default: until interrupted)")
    serve.add_argument("--symbols", type=_symbol_list, default=None, metavar="A,B,...",
                       help=f"the tradable symbols (default: those of the file's valid ticks, at most "
                            f"{MAX_REPLAY_SYMBOLS})")
    serve.add_argument("--timeframe", default="1s", help="bar length, e.g. 100ms, 1s, 1min (default 1s)")
    serve.set_defaults(func=lambda args: _serve_metrics(args, serve))
    return parser


def _gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit with status 3 when a case regressed against the baseline")
    parser.add_argument("--min-change", type=_fraction, default=None, metavar="FRACTION",
                        help="smallest p50 change marked REGRESSED/IMPROVED when above the noise "
                             "(default 0.05 = 5%%; raise it on a shared, noisy machine)")
    parser.add_argument("--report", metavar="PATH.md|PATH.html",
                        help="write a self-contained report (tables, baseline comparison, plots): HTML when "
                             "PATH ends in .html/.htm (sortable table, coloured verdicts), else Markdown")


def _report_writer(path: str):
    """The report writer for ``path``: HTML for a ``.html``/``.htm`` name, else Markdown."""
    from .bench import html, markdown

    return html.write_html if path.lower().endswith((".html", ".htm")) else markdown.write_report


def _bounded(convert, ok, expected: str):
    """An argparse type: ``convert(text)``, refused (with ``expected`` in the message) unless
    ``ok(value)``; text ``convert`` cannot read is refused the same way."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_fraction = _bounded(float, lambda v: 0.0 < v < 10.0, "a fraction > 0 such as 0.05")
_port = _bounded(int, lambda v: 0 <= v <= 65535, "a TCP port in [0, 65535]")
_seconds = _bounded(float, lambda v: 0.0 <= v < 1e9, "seconds >= 0")


def _symbol_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated symbol names, got {text!r}")
    return names


def _check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit 2) output paths that could not be written, before any work is done."""
    from .bench.output import output_problem

    paths = {"--json": getattr(args, "json", None), "--report": args.report}
    for option, path in paths.items():
        problem = path is not None and output_problem(path)
        if problem:
            parser.error(f"{option}: {problem}")
    if None not in paths.values() and os.path.realpath(paths["--json"]) == os.path.realpath(paths["--report"]):
        parser.error("--json and --report must name different files")


def _gate(comparisons: list[CaseComparison] | None, args: argparse.Namespace) -> bool:
    """Print the comparison; True when the run must fail on a regression."""
    from .bench import compare

    if comparisons is not None:
        compare.print_comparison(comparisons, sys.stdout)
    return bool(args.fail_on_regression and comparisons
                and any(c.verdict == compare.REGRESSED for c in comparisons))


def _write_outputs(writers: list[tuple[str, Callable[[], None]]]) -> bool:
    """Run each ``(path, write)`` in order (the JSON first, so a failing report cannot
    lose it); report a failure on stderr and go on. True when every file was written."""
    ok = True
    for path, write in writers:
        try:
            write()
        except Exception as exc:  # an OSError, or a plotting failure inside the report
            print(f"error: could not write {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            ok = False
        else:
            print(f"\nwrote {path}")
    return ok


def _exit_status(case_error: bool, regressed: bool, written: bool) -> int:
    if case_error:
        return EXIT_CASE_ERROR
    if not written:
        return EXIT_OUTPUT_ERROR
    return EXIT_REGRESSION if regressed else EXIT_OK


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .bench import compare

    _check_outputs(parser, args)
    try:
        old = compare.load_run(args.old, "baseline")
        new = compare.load_run(args.new, "run")
    except ValueError as exc:
        parser.error(str(exc))
    comparisons = compare.compare(new["results"], old["results"], args.min_change or compare.MIN_CHANGE)
    meta = {"run": args.new, "baseline": args.old, "timestamp": new.get("timestamp"),
            "size": new.get("size", "quick" if new.get("quick") else "full")}
    regressed = _gate(comparisons, args)
    written = _write_outputs([(args.report, lambda: _report_writer(args.report)(args.report, new["results"],
                                                                          comparisons, meta))]
                             if args.report else [])
    return _exit_status(any(r.get("status") == "error" for r in new["results"]), regressed, written)


_SIZE_NOTES = {
    "quick": "--quick: smaller batches and short timing, for CI; the targets are set for the full sizes.",
    "standard": "standard sizes: the batched cases run smaller than the published sizes (--full runs those); "
                "targets on ratios hold at both, absolute times are set for the full sizes.",
    "full": "",
}


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import bench
    from .backend import AUTO, ENV_VAR, available_backends, get_backend
    from .bench import compare, report
    from .bench.progress import Progress

    suites = list(dict.fromkeys(args.suite or bench.SUITES))
    unknown = [s for s in suites if s not in bench.SUITES]
    if unknown:
        parser.error(f"--suite: unknown suite(s) {', '.join(unknown)}; known suites: {', '.join(bench.SUITES)}")
    backends = list(dict.fromkeys(args.backend or available_backends(every_area=True)))  # cpu, cuda if present
    if os.environ.get(ENV_VAR, "").strip().lower() == AUTO:
        get_backend()  # the image's GPU_TRADER_BACKEND=auto: one line on stderr when it falls back to cpu
    for name in backends:
        try:
            get_backend(name).configure_process()  # e.g. JAX's 64-bit mode, without a warning
        except ValueError as exc:
            parser.error(f"--backend: {exc}")
    try:
        plan = bench.plan_cases(suites, backends, args.size, args.case or (), args.keyword or ())
    except ValueError as exc:
        parser.error(f"--case/-k: {exc}")
    if args.list:
        report.print_plan(plan, args.size)
        return EXIT_OK
    _check_outputs(parser, args)
    if any(c.suite == "vectors" for c in plan):
        from .bench.suites.vectors import bench_threads

        try:
            bench_threads()
        except ValueError as exc:
            parser.error(str(exc))
    for option in ("fail_on_regression", "min_change"):
        if getattr(args, option) and not args.baseline:
            parser.error(f"--{option.replace('_', '-')} needs --baseline")
    baseline = None
    if args.baseline:
        try:
            baseline = compare.load_run(args.baseline)
        except ValueError as exc:
            parser.error(f"--baseline: {exc}")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    progress = Progress(plan)
    results = bench.run(plan, args.size, on_result=progress.case_done, on_suite_done=progress.suite_done)
    report.print_table(results)
    if _SIZE_NOTES[args.size]:
        print("\n" + _SIZE_NOTES[args.size])
    if load_before > BUSY_LOAD_PER_CPU * (os.cpu_count() or 1):
        print(f"\nwarning: the 1-minute load average was {load_before:.2f} on {os.cpu_count()} CPUs before the "
              "run: other processes competed for the CPUs, so these timings are suspect.")
    records = [r.to_dict() for r in results]
    comparisons = (None if baseline is None
                   else compare.compare(records, baseline["results"], args.min_change or compare.MIN_CHANGE))
    meta = {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "size": args.size, "devices": ", ".join(dict.fromkeys(f"{r.backend}: {r.device}" for r in results)),
            "baseline": args.baseline or "-"}
    regressed = _gate(comparisons, args)
    writers = []
    if args.json:
        writers.append((args.json, lambda: report.write_json(args.json, results, args.size, load_before)))
    if args.report:
        writers.append((args.report, lambda: _report_writer(args.report)(args.report, records, comparisons, meta)))
    written = _write_outputs(writers)
    return _exit_status(any(r.status == "error" for r in results), regressed, written)


MAX_REPLAY_SYMBOLS = 10_000  # symbols serve-metrics discovers in a file (one strategy state each)


def _replay_lines(path: str):
    """The non-empty lines of ``path`` without their line ending; a line longer than a
    tick message may be is cut to at most ``MAX_MESSAGE_BYTES + 2`` bytes (still refused
    as ``too_large``), so no line is held in memory whole."""
    from .marketdata import MAX_MESSAGE_BYTES

    with open(path, "rb") as f:
        while True:
            line = f.readline(MAX_MESSAGE_BYTES + 2)
            if not line:
                return
            if not line.endswith(b"\n"):
                while True:  # skip the rest of an overlong line
                    rest = f.readline(1 << 16)
                    if not rest or rest.endswith(b"\n"):
                        break
            line = line.rstrip(b"\r\n")
            if line:
                yield line


def _replay_symbols(path: str) -> list[str]:
    """The symbols of the valid ticks of ``path``, in order of appearance (``ValueError``
    beyond ``MAX_REPLAY_SYMBOLS`` or without any)."""
    from .marketdata import MarketDataError, parse_tick

    names: dict[str, None] = {}
    for line in _replay_lines(path):
        try:
            names[parse_tick(line).symbol] = None
        except MarketDataError:
            continue
        if len(names) > MAX_REPLAY_SYMBOLS:
            raise ValueError(f"{path} names more than {MAX_REPLAY_SYMBOLS} symbols; pass --symbols")
    if not names:
        raise ValueError(f"{path} holds no valid tick message")
    return list(names)


def _serve_metrics(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import asyncio

    from . import metrics
    from .brokers import SimulatedBroker
    from .order_manager import OrderManager
    from .pipeline import TradingPipeline
    from .portfolio import Portfolio
    from .strategies import MeanReversion, Momentum, StrategyRunner

    try:
        symbols = args.symbols or _replay_symbols(args.replay)
    except (OSError, ValueError) as exc:
        parser.error(f"--replay: {exc}")
    broker = SimulatedBroker("sim", latency_s=0.0)
    manager = OrderManager(broker, portfolio=Portfolio(1e7))
    strategy = StrategyRunner([Momentum(5, 20), MeanReversion(20, 2.0)])
    try:
        pipe = TradingPipeline(symbols, strategy, manager, timeframe=args.timeframe, quote_sink=broker.set_price)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))

    async def replay_and_serve() -> None:
        monitor = metrics.PipelineMetrics(pipe)  # bound to this event loop
        try:
            server = metrics.serve_metrics(monitor, args.port, args.addr)
        except (OSError, ValueError, TypeError) as exc:
            parser.error(f"--addr/--port: cannot serve on {args.addr}:{args.port}: {exc}")
        with server:
            print(f"serving metrics at {server.url}", flush=True)
            stats = await pipe.run(_replay_lines(args.replay))
            print(f"replayed {stats.events} events: {stats.accepted} accepted, {stats.n_rejected} rejected, "
                  f"{stats.bars} bars, {stats.orders} orders", flush=True)
            if args.duration is None:
                await asyncio.Event().wait()  # until interrupted
            else:
                await asyncio.sleep(args.duration)
            await pipe.close()

    try:
        asyncio.run(replay_and_serve())
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the file vanished or became unreadable between the two passes
        print(f"error: --replay: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gpu-trader`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_ARGS
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
