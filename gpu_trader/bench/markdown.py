"""A self-contained Markdown report of a bench run (``gpu-trader bench --report PATH.md``).

Sections: the results table per (suite, backend); the baseline comparison when one is
given (:mod:`.compare`); plots embedded as base64 PNG images (``data:image/png;base64``),
so the one file is the whole report: the latency distribution of every case (p50 bar,
p95 and p99 markers, log scale) and the roofline fractions (``bw_fraction``: share of the
device's copy bandwidth; ``gemm_fraction``: share of its matrix-multiply rate) of the
cases that record them. matplotlib is imported only here, through its object-oriented
Agg canvas (no pyplot, no global backend switch); without it the report says so and has
no plots. Input records are ``CaseResult.to_dict()`` / the ``results`` of a ``--json`` file.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Iterable, Mapping, Sequence

from .compare import CaseComparison, summary
from .output import write_text_atomic
from .report import fmt_time

__all__ = ["render_report", "write_report"]

Record = Mapping[str, Any]
_ROW_INCH = 0.28  # plot height per case


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [_cell(c) for c in row] + [""] * (len(header) - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _groups(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r["suite"], r["backend"]), []).append(r)
    return groups


def _result_row(r: Record) -> list[str]:
    sizes = ", ".join(f"{k}={v}" for k, v in (r.get("sizes") or {}).items())
    s = r.get("stats") or {}
    status = r.get("status", "ok")
    if status != "ok" or not s:
        return [r["name"], sizes, r.get("dtype", ""), status.upper() + (f": {r['note']}" if r.get("note") else "")]
    verdicts = "/".join(r.get(side, {}).get("status", "-") for side in ("plan", "ours"))
    return [r["name"], sizes, r.get("dtype", ""), status, fmt_time(s.get("p50_s")), fmt_time(s.get("p95_s")),
            fmt_time(s.get("p99_s")), fmt_time(s.get("mad_s")), _pct(r.get("bw_fraction")),
            _pct(r.get("gemm_fraction")), verdicts]


_RESULT_HEADER = ["case", "sizes", "dtype", "status", "p50", "p95", "p99", "MAD", "bw_fraction", "gemm_fraction",
                  "plan/ours"]


def _comparison_lines(comparisons: Sequence[CaseComparison]) -> list[str]:
    rows = [[c.suite, c.backend, c.name, fmt_time(c.new_p50_s), fmt_time(c.old_p50_s),
             "-" if c.ratio is None else f"{c.ratio:.3f}", "-" if c.threshold is None else f"{c.threshold:.1%}",
             f"**{c.verdict}**" if c.verdict == "REGRESSED" else c.verdict, c.note] for c in comparisons]
    counts = ", ".join(f"{n} {v}" for v, n in summary(comparisons).items())
    return ["## Against the baseline", "",
            "p50 new/old (< 1 is faster); a case changed when the ratio leaves 1 by more than its threshold, "
            "max(the minimum change, 5 % by default; the larger relative MAD of the two runs).", "", counts, "",
            *_table(["suite", "backend", "case", "new p50", "old p50", "new/old", "threshold", "verdict", "note"],
                    rows), ""]


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _latency_plot(title: str, rows: Sequence[Record]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2 + _ROW_INCH * len(rows)))
    ax = fig.add_subplot()
    y = range(len(rows))
    stats = [r["stats"] for r in rows]
    ax.barh(y, [s["p50_s"] for s in stats], color="tab:blue", label="p50")
    ax.scatter([s["p95_s"] for s in stats], y, marker="|", s=120, color="tab:orange", label="p95", zorder=3)
    ax.scatter([s["p99_s"] for s in stats], y, marker="|", s=120, color="tab:red", label="p99", zorder=3)
    ax.set_xscale("log")
    ax.set_yticks(list(y), [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("latency per call (s)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _roofline_plot(rows: Sequence[Record]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2 + _ROW_INCH * len(rows)))
    ax = fig.add_subplot()
    height = 0.4
    for offset, field, color in ((-height / 2, "bw_fraction", "tab:green"), (height / 2, "gemm_fraction", "tab:purple")):
        ys = [i + offset for i, r in enumerate(rows) if r.get(field) is not None]
        xs = [r[field] for r in rows if r.get(field) is not None]
        if xs:
            ax.barh(ys, xs, height=height, color=color, label=field)
    ax.set_yticks(range(len(rows)), [f"{r['name']} [{r['suite']}/{r['backend']}]" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("fraction of the device's copy bandwidth / matrix-multiply rate")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _plot_lines(groups: Mapping[tuple[str, str], list[Record]]) -> list[str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ["## Plots", "", "Plots omitted: matplotlib is not installed "
                "(`pip install matplotlib`, or the package's `dev` extra).", ""]
    lines = ["## Latency distributions", ""]
    for (suite, backend), rows in groups.items():
        timed = [r for r in rows if r.get("status", "ok") == "ok" and r.get("stats")]
        if timed:
            title = f"{suite} | {backend}: p50 bar, p95 and p99 markers"
            lines += [f"![{title}]({_latency_plot(title, timed)})", ""]
    roof = [r for rows in groups.values() for r in rows
            if r.get("bw_fraction") is not None or r.get("gemm_fraction") is not None]
    lines += ["## Roofline fractions", ""]
    if roof:
        lines += [f"![roofline fractions]({_roofline_plot(roof)})", ""]
    else:
        lines += ["No case records bw_fraction or gemm_fraction.", ""]
    return lines


def render_report(records: Sequence[Record], comparisons: Sequence[CaseComparison] | None = None,
                  meta: Mapping[str, Any] | None = None) -> str:
    """The report as Markdown text. ``meta``: run facts listed at the top (e.g.
    timestamp, quick, devices)."""
    lines = ["# gpu-trader bench report", ""]
    lines += [f"- {k}: {v}" for k, v in (meta or {}).items()]
    lines += ["- times per call; MAD: median absolute deviation of the timed calls", ""]
    groups = _groups(records)
    for (suite, backend), rows in groups.items():
        lines += [f"## Suite {suite} | backend {backend} | {rows[0].get('device', '')}", ""]
        lines += _table(_RESULT_HEADER, [_result_row(r) for r in rows]) + [""]
    if comparisons is not None:
        lines += _comparison_lines(comparisons)
    lines += _plot_lines(groups)
    return "\n".join(lines)


def write_report(path: str, records: Sequence[Record], comparisons: Sequence[CaseComparison] | None = None,
                 meta: Mapping[str, Any] | None = None) -> None:
    """Write :func:`render_report` to ``path`` (UTF-8, atomically: see :mod:`.output`)."""
    write_text_atomic(path, render_report(records, comparisons, meta))
