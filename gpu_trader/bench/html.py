"""A self-contained HTML report of a bench run (``gpu-trader bench --report PATH.html``).

One file, nothing fetched: a summary (case counts by status and by plan/ours verdict, the
baseline comparison's counts), one table of every case (sortable by clicking a column
header: a small inline script; numeric columns sort by value through ``data-sort``), the
plan/ours verdicts coloured (PASS green, FAIL red, n/a amber, ``-`` grey), the baseline
comparison table when one is given, and charts as base64 PNG ``<img>`` (the p50/p95/p99
latency plot per (suite, backend) of :mod:`.markdown`, and every reference's ratio to ours
on a log axis). Without matplotlib the report says so and has no charts. Input records are
``CaseResult.to_dict()`` / the ``results`` of a ``--json`` file.
"""
from __future__ import annotations

from html import escape
from typing import Any, Mapping, Sequence

from .compare import CaseComparison, summary
from .markdown import Record, _groups, _latency_plot, _png, _ROW_INCH
from .output import write_text_atomic
from .report import fmt_time

__all__ = ["render_html", "write_html"]

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#eee;cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.PASS,.FASTER{background:#c8f0c8}.FAIL,.REGRESSED,.ERROR{background:#f6c0c0}
.na,.SKIP{background:#fbe7b0}.dash{color:#888}
img{max-width:100%;display:block;margin-bottom:1em}
"""

# Sort a table by the clicked column: numbers (data-sort) numerically, text otherwise; a second click reverses.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, col){
    th.addEventListener("click", function(){
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function(h){h.classList.remove("asc","desc");});
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row){var c = row.cells[col], v = c.getAttribute("data-sort");
        return v === null ? c.textContent : (v === "" ? NaN : parseFloat(v));}
      rows.sort(function(a, b){
        var x = key(a), y = key(b), r;
        if (typeof x === "number" || typeof y === "number") {
          if (isNaN(x)) return 1; if (isNaN(y)) return -1; r = x - y;
        } else { r = x.localeCompare(y); }
        return asc ? r : -r;
      });
      rows.forEach(function(row){body.appendChild(row);});
    });
  });
});
"""

_CASE_HEADER = ("suite", "backend", "case", "sizes", "dtype", "status", "p50", "p95", "p99", "MAD",
                "vs reference (ref/ours)", "plan", "ours")


def _css_class(verdict: str) -> str:
    return {"n/a": "na", "-": "dash", "OK": ""}.get(verdict, verdict)


def _cell(text: Any, *, sort: float | None = None, numeric: bool = False, css: str = "") -> str:
    """One ``<td>``; ``numeric`` cells carry ``data-sort`` (empty for a missing value)."""
    classes = " ".join(c for c in ("num" if numeric else "", css) if c)
    attrs = f' class="{escape(classes)}"' if classes else ""
    if numeric:
        attrs += f' data-sort="{"" if sort is None else repr(float(sort))}"'
    return f"<td{attrs}>{escape(str(text))}</td>"


def _time_cell(seconds: float | None) -> str:
    return _cell(fmt_time(seconds), sort=seconds, numeric=True)


def _refs_text(r: Record) -> tuple[str, float | None]:
    """The references as ``name 2.31x`` and the smallest ratio (the sort key)."""
    refs = r.get("references") or {}
    ratios = [v.get("ratio") for v in refs.values() if v.get("ratio") is not None]
    text = " ".join(f"{k} {v['ratio']:.2f}x" if v.get("ratio") is not None else f"{k} n/a" for k, v in refs.items())
    return text or "-", min(ratios) if ratios else None


def _case_row(r: Record) -> str:
    s = r.get("stats") or {}
    status = r.get("status", "ok")
    refs, ratio = _refs_text(r)
    verdicts = [r.get(side, {}).get("status", "-") for side in ("plan", "ours")]
    cells = [_cell(r.get("suite", "")), _cell(r.get("backend", "")), _cell(r["name"]),
             _cell(", ".join(f"{k}={v}" for k, v in (r.get("sizes") or {}).items())), _cell(r.get("dtype", "")),
             _cell(status.upper() + (f": {r['note']}" if r.get("note") else ""),
                   css="" if status == "ok" else status.upper()),
             *(_time_cell(s.get(k)) for k in ("p50_s", "p95_s", "p99_s", "mad_s")),
             _cell(refs, sort=ratio, numeric=True),
             *(_cell(v, css=_css_class(v)) for v in verdicts)]
    return '<tr class="case">' + "".join(cells) + "</tr>"


def _table(header: Sequence[str], rows: Sequence[str], table_id: str) -> list[str]:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return [f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>', *rows,
            "</tbody></table>"]


def _counts(values: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f'<span class="{_css_class(k)}">{n} {escape(k)}</span>' for k, n in sorted(counts.items()))


def _summary(records: Sequence[Record], comparisons: Sequence[CaseComparison] | None,
             meta: Mapping[str, Any] | None) -> list[str]:
    items = [f"<li>{escape(str(k))}: {escape(str(v))}</li>" for k, v in (meta or {}).items()]
    items.append(f"<li>{len(records)} cases: {_counts([r.get('status', 'ok') for r in records])}</li>")
    for side in ("plan", "ours"):
        items.append(f"<li>{side} targets: {_counts([r.get(side, {}).get('status', '-') for r in records])}</li>")
    if comparisons is not None:
        items.append("<li>against the baseline: " + ", ".join(
            f'<span class="{escape(v)}">{n} {escape(v)}</span>' for v, n in summary(comparisons).items()) + "</li>")
    items.append("<li>times per call; MAD: median absolute deviation of the timed calls; click a column header "
                 "to sort</li>")
    return ["<h2>Summary</h2>", "<ul>", *items, "</ul>"]


def _comparison_rows(comparisons: Sequence[CaseComparison]) -> list[str]:
    return ['<tr class="comparison">' + "".join([
        _cell(c.suite), _cell(c.backend), _cell(c.name), _time_cell(c.new_p50_s), _time_cell(c.old_p50_s),
        _cell("-" if c.ratio is None else f"{c.ratio:.3f}", sort=c.ratio, numeric=True),
        _cell("-" if c.threshold is None else f"{c.threshold:.1%}", sort=c.threshold, numeric=True),
        _cell(c.verdict, css=c.verdict), _cell(c.note)]) + "</tr>" for c in comparisons]


def _ratio_plot(rows: Sequence[tuple[str, float]]) -> str:
    """Horizontal bars of reference p50 / ours (log axis, a line at 1: right of it we are faster)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2 + _ROW_INCH * len(rows)))
    ax = fig.add_subplot()
    ratios = [v for _, v in rows]
    ax.barh(range(len(rows)), ratios, color=["tab:green" if v >= 1 else "tab:red" for v in ratios])
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("reference p50 / our p50 (> 1: ours is faster)")
    fig.tight_layout()
    return _png(fig)


def _img(title: str, uri: str) -> str:
    return f'<figure><img alt="{escape(title)}" src="{uri}"><figcaption>{escape(title)}</figcaption></figure>'


def _charts(records: Sequence[Record]) -> list[str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ["<h2>Charts</h2>", "<p>Charts omitted: matplotlib is not installed "
                "(<code>pip install matplotlib</code>, or the package's <code>dev</code> extra).</p>"]
    out = ["<h2>Latency per suite</h2>"]
    for (suite, backend), rows in _groups(records).items():
        timed = [r for r in rows if r.get("status", "ok") == "ok" and r.get("stats")]
        if timed:
            title = f"{suite} | {backend}: p50 bar, p95 and p99 markers"
            out.append(_img(title, _latency_plot(title, timed)))
    ratios = [(f"{r['name']} [{r['suite']}/{r['backend']}] vs {name}", ref["ratio"])
              for r in records if r.get("status", "ok") == "ok"
              for name, ref in (r.get("references") or {}).items() if ref.get("ratio")]
    out.append("<h2>Ratio to references</h2>")
    out.append(_img("reference p50 / our p50", _ratio_plot(ratios)) if ratios else
               "<p>No case has a reference ratio.</p>")
    return out


def render_html(records: Sequence[Record], comparisons: Sequence[CaseComparison] | None = None,
                meta: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML document (see the module docstring). ``meta``: run facts listed in
    the summary (e.g. timestamp, size, devices). Every text is HTML-escaped."""
    body = ["<h1>gpu-trader bench report</h1>", *_summary(records, comparisons, meta), "<h2>Cases</h2>",
            *_table(_CASE_HEADER, [_case_row(r) for r in records], "cases")]
    if comparisons is not None:
        body += ["<h2>Against the baseline</h2>",
                 "<p>p50 new/old (&lt; 1 is faster); a case changed when the ratio leaves 1 by more than its "
                 "threshold.</p>",
                 *_table(("suite", "backend", "case", "new p50", "old p50", "new/old", "threshold", "verdict",
                          "note"), _comparison_rows(comparisons), "comparison")]
    body += _charts(records)
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      "<title>gpu-trader bench report</title>", f"<style>{_STYLE}</style></head><body>", *body,
                      f"<script>{_SCRIPT}</script>", "</body></html>", ""])


def write_html(path: str, records: Sequence[Record], comparisons: Sequence[CaseComparison] | None = None,
               meta: Mapping[str, Any] | None = None) -> None:
    """Write :func:`render_html` to ``path`` (UTF-8, atomically: see :mod:`.output`)."""
    write_text_atomic(path, render_html(records, comparisons, meta))
