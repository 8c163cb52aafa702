"""The HTML bench report (gpu_trader.bench.html; ``--report PATH.html``), parsed with html.parser.

Generated from committed runs in benches/results (one with FAIL verdicts, one with a skipped
case and no-target cases), checked against the JSON it came from: one table row per case in
order, statuses and verdict colours, sortable numbers, embedded PNG charts, no URL.
"""
from __future__ import annotations

import base64
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gpu_trader import cli
from gpu_trader.bench import compare
from gpu_trader.bench.html import render_html

RESULTS = Path(__file__).resolve().parent.parent / "benches" / "results"
FEATURES_RUN = RESULTS / "cpu-amd-epyc-2core-2026-11-25.json"  # PASS and FAIL verdicts
VECTORS_RUN = RESULTS / "cpu-amd-epyc-2core-2026-11-25-vectors.json"  # a skipped case, '-' verdicts
SMALL_RUN = RESULTS / "cpu-amd-epyc-2core-2026-11-25-end_to_end.json"


class _Report(HTMLParser):
    """Rows of each table (cells as (text, attrs)), every <img>, <script> and attribute value."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.images: list[dict] = []
        self.scripts: list[dict] = []
        self.attr_values: list[str] = []
        self.text: list[str] = []
        self._table = self._cell = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attr_values += [v for v in a.values() if v]
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table], self.headers[self._table] = [], []
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and self._table and not self._in_head:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = ([], a, tag)
        elif tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            parts, a, kind = self._cell
            if kind == "th":
                self.headers[self._table].append("".join(parts))
            else:
                self.tables[self._table][-1].append(("".join(parts), a))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[0].append(data)


def _parse(text: str) -> _Report:
    p = _Report()
    p.feed(text)
    p.close()
    return p


def _records(*paths: Path) -> list[dict]:
    return [r for p in paths for r in json.loads(p.read_text())["results"]]


_VERDICT_CLASS = {"PASS": "PASS", "FAIL": "FAIL", "n/a": "na", "-": "dash"}


def test_every_case_is_a_row_with_its_status_verdicts_and_numbers(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # charts: the next test
    records = _records(FEATURES_RUN, VECTORS_RUN)
    doc = _parse(render_html(records, meta={"size": "full"}))
    header = doc.headers["cases"]
    rows = doc.tables["cases"]
    assert len(rows) == len(records)
    col = {h: i for i, h in enumerate(header)}
    seen = set()
    for row, rec in zip(rows, records):
        assert row[col["case"]][0] == rec["name"] and row[col["suite"]][0] == rec["suite"]
        assert row[col["status"]][0].split(":")[0] == rec["status"].upper()
        for side in ("plan", "ours"):
            text, attrs = row[col[side]]
            assert text == rec[side]["status"]
            assert attrs["class"] == _VERDICT_CLASS[text]
            seen.add(text)
        sort = row[col["p50"]][1]["data-sort"]
        p50 = (rec.get("stats") or {}).get("p50_s")
        assert (sort == "") if p50 is None else float(sort) == p50
        refs = [v["ratio"] for v in rec["references"].values() if v.get("ratio") is not None]
        ref_sort = row[col["vs reference (ref/ours)"]][1]["data-sort"]
        assert (ref_sort == "") if not refs else float(ref_sort) == min(refs)
    assert {"PASS", "FAIL", "-"} <= seen
    assert any(r["status"] == "skipped" for r in records)
    summary = "".join(doc.text)
    assert f"{len(records)} cases" in summary


def test_charts_are_embedded_pngs_and_nothing_is_fetched():
    pytest.importorskip("matplotlib")
    records = _records(VECTORS_RUN)
    text = render_html(records)
    doc = _parse(text)
    assert len(doc.images) == 2  # latency of the one (suite, backend), ratio to references
    for img in doc.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc.scripts and all("src" not in s for s in doc.scripts)  # the sort script is inline
    assert not re.search(r"https?://", text, re.IGNORECASE)
    assert not any(re.match(r"\s*(https?:)?//", v) for v in doc.attr_values)
    assert "<link" not in text and "@import" not in text


def test_text_is_escaped():
    rec = dict(_records(SMALL_RUN)[0], name='<script>alert("x")</script> & more')
    doc = _parse(render_html([rec]))
    assert doc.tables["cases"][0][doc.headers["cases"].index("case")][0] == rec["name"]
    assert len(doc.scripts) == 1


def test_without_matplotlib_the_report_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    doc = _parse(render_html(_records(SMALL_RUN)))
    assert not doc.images
    assert "matplotlib is not installed" in "".join(doc.text)


def test_cli_compare_writes_html_or_markdown_by_suffix(tmp_path):
    old = tmp_path / "old.json"
    doc = json.loads(SMALL_RUN.read_text())
    old.write_text(json.dumps(doc))
    html_path, md_path = tmp_path / "r.html", tmp_path / "r.md"
    assert cli.main(["compare", str(old), str(SMALL_RUN), "--report", str(html_path)]) == 0
    parsed = _parse(html_path.read_text())
    comparisons = compare.compare(doc["results"], doc["results"])
    assert len(parsed.tables["comparison"]) == len(comparisons) == len(doc["results"])
    verdict = parsed.headers["comparison"].index("verdict")
    assert [r[verdict][0] for r in parsed.tables["comparison"]] == [c.verdict for c in comparisons]
    assert cli.main(["compare", str(old), str(SMALL_RUN), "--report", str(md_path)]) == 0
    assert md_path.read_text().startswith("# gpu-trader bench report")
