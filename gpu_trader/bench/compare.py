"""The regression gate: a bench run compared with a baseline run, case by case.

Both runs are lists of result records, the ``results`` of a ``--json`` file (see
:mod:`.report`) or ``CaseResult.to_dict()``. A case is identified by ``(suite, name,
backend)``; each gets one verdict:

- ``REGRESSED``: new p50 / old p50 > 1 + threshold;
- ``IMPROVED``: new p50 / old p50 < 1 / (1 + threshold) (the same distance below 1 on a
  log scale);
- ``unchanged``: in between;
- ``not comparable``: the two runs recorded different ``sizes`` or ``dtype`` (as when
  they ran at different run sizes, ``--quick`` / standard / ``--full``, for a case whose
  name does not carry its sizes);
- ``no timing``: one of the two has no p50 (skipped or error);
- ``new``: only in the new run; ``missing``: only in the baseline.

Threshold (relative): ``max(min_change, noise)``, ``min_change`` 5 % by default. The
noise is the larger of the two runs' relative spread ``mad_s / p50_s`` (``Stats.mad_s``,
the median absolute deviation of the timed calls). That is the spread of one call, not
the standard error of the median: repeated runs differ by more than their sampling
error (other processes, clock and cache state), so the per-call spread is the
conservative yardstick. A run recorded before ``mad_s`` existed counts as ``min_change``.
Even so, the spread inside one run (often under 1 % of p50) can be smaller than the
difference between two runs on a busy machine; raise ``min_change`` there
(``--min-change``).
"""
from __future__ import annotations

import errno
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, TextIO

from .._internal.file_io import open_regular
from .report import fmt_time

__all__ = [
    "MIN_CHANGE", "REGRESSED", "IMPROVED", "UNCHANGED", "NOT_COMPARABLE", "NO_TIMING", "NEW", "MISSING",
    "MAX_FILE_BYTES", "CaseComparison", "load_run", "compare", "summary", "print_comparison",
]

MIN_CHANGE = 0.05
REGRESSED, IMPROVED, UNCHANGED = "REGRESSED", "IMPROVED", "unchanged"
NOT_COMPARABLE, NO_TIMING, NEW, MISSING = "not comparable", "no timing", "new", "missing"

Key = tuple[str, str, str]


@dataclass(frozen=True)
class CaseComparison:
    """One case's verdict; p50s in seconds, ``threshold`` relative (0.05 = 5 %);
    ``note`` says why a case is not comparable."""

    suite: str
    name: str
    backend: str
    verdict: str
    new_p50_s: float | None = None
    old_p50_s: float | None = None
    threshold: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """new p50 / old p50 (< 1: faster than the baseline); None without both."""
        if self.new_p50_s is None or not self.old_p50_s:
            return None
        return self.new_p50_s / self.old_p50_s


MAX_FILE_BYTES = 64 << 20  # a full run's JSON is well under 1 MiB
STATUSES = ("ok", "skipped", "error")
_STATS_FIELDS = ("p50_s", "p95_s", "p99_s", "mean_s", "min_s", "max_s", "mad_s")


def load_run(path: str, what: str = "baseline") -> dict[str, Any]:
    """Read and validate a ``--json`` file; returns the document.

    Every record of ``results`` must name its case (``suite``, ``name``, ``backend``:
    non-empty strings, each case once), have a known ``status`` (ok, skipped, error)
    and, when ``ok``, ``stats`` whose times are finite non-negative numbers with
    ``0 < p50_s <= p95_s <= p99_s`` and ``0 <= mad_s <= p50_s`` (the median absolute
    deviation of non-negative times cannot exceed their median); ``sizes`` is a mapping
    and ``dtype`` a string where present. Raises ``ValueError`` naming ``what``,
    ``path`` and the first offending field for a missing, unreadable, non-regular,
    oversized (``MAX_FILE_BYTES``) or invalid file.
    """
    try:
        doc = json.loads(_read_bounded(path))
    except OSError as exc:
        raise ValueError(f"{what} {path!r}: cannot read ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, nesting bombs
        raise ValueError(f"{what} {path!r} is not a gpu-trader bench JSON file ({type(exc).__name__})") from exc
    try:
        _check_run(doc)
    except _Invalid as exc:
        raise ValueError(f"{what} {path!r} is not a gpu-trader bench JSON file: {exc}") from None
    return doc


def _read_bounded(path: str) -> bytes:
    """The bytes of regular file ``path`` (never blocks on a FIFO; at most ``MAX_FILE_BYTES``)."""
    with open_regular(path, lambda message: OSError(errno.EINVAL, "not a regular file")) as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES} bytes")
    return data


class _Invalid(Exception):
    pass


def _check_run(doc: Any) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise _Invalid("expected an object with a 'results' list")
    seen: set[Key] = set()
    for i, r in enumerate(doc["results"]):
        key = _check_record(r, f"results[{i}]")
        if key in seen:
            raise _Invalid(f"results[{i}]: case {key} appears twice")
        seen.add(key)


def _check_record(r: Any, where: str) -> Key:
    if not isinstance(r, dict):
        raise _Invalid(f"{where} is not an object")
    for field in ("suite", "name", "backend"):
        if not isinstance(r.get(field), str) or not r[field]:
            raise _Invalid(f"{where}.{field} must be a non-empty string, got {r.get(field)!r:.80}")
    status = r.get("status", "ok")
    if status not in STATUSES:
        raise _Invalid(f"{where}.status must be one of {', '.join(STATUSES)}, got {status!r:.80}")
    if "sizes" in r and not isinstance(r["sizes"], dict):
        raise _Invalid(f"{where}.sizes must be an object")
    if r.get("dtype") is not None and not isinstance(r["dtype"], str):
        raise _Invalid(f"{where}.dtype must be a string")
    stats = r.get("stats")
    if stats is None:
        if status == "ok":
            raise _Invalid(f"{where}: status ok without stats")
    elif not isinstance(stats, dict):
        raise _Invalid(f"{where}.stats must be an object")
    else:
        _check_stats(stats, f"{where}.stats", required=status == "ok")
    return _key(r)


def _time(stats: Mapping[str, Any], field: str, where: str) -> float | None:
    v = stats.get(field)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Invalid(f"{where}.{field} must be a number of seconds, got {v!r:.80}")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not (math.isfinite(x) and x >= 0):
        raise _Invalid(f"{where}.{field} must be finite and >= 0 seconds, got {v!r:.80}")
    return x


def _check_stats(stats: Mapping[str, Any], where: str, required: bool) -> None:
    t = {field: _time(stats, field, where) for field in _STATS_FIELDS}
    p50 = t["p50_s"]
    if p50 is None:
        if required:
            raise _Invalid(f"{where}.p50_s is missing")
        return
    if p50 <= 0:
        raise _Invalid(f"{where}.p50_s must be > 0, got {p50!r}")
    for lo, hi in (("p50_s", "p95_s"), ("p95_s", "p99_s")):
        if t[lo] is not None and t[hi] is not None and t[hi] < t[lo]:
            raise _Invalid(f"{where}: {hi} {t[hi]!r} is below {lo} {t[lo]!r}")
    if t["mad_s"] is not None and t["mad_s"] > p50 * (1 + 1e-9):
        raise _Invalid(f"{where}.mad_s {t['mad_s']!r} exceeds p50_s {p50!r} (impossible for times >= 0)")


def _key(r: Mapping[str, Any]) -> Key:
    return (r["suite"], r["name"], r["backend"])


def _p50(r: Mapping[str, Any]) -> float | None:
    stats = r.get("stats")
    if r.get("status", "ok") != "ok" or not stats or not stats.get("p50_s"):
        return None
    return float(stats["p50_s"])


def _noise(r: Mapping[str, Any], min_change: float) -> float:
    mad = r["stats"].get("mad_s")
    return min_change if mad is None else mad / r["stats"]["p50_s"]


def _mismatch(new: Mapping[str, Any], old: Mapping[str, Any]) -> str:
    """Why two records of one case time different work ('' when they agree); fields a
    record lacks are not compared."""
    diffs = [f"{field} {old[field]} -> {new[field]}" for field in ("sizes", "dtype")
             if field in new and field in old and new[field] != old[field]]
    return "; ".join(diffs)


def _compare_case(new: Mapping[str, Any], old: Mapping[str, Any], min_change: float) -> CaseComparison:
    key = _key(new)
    new_p50, old_p50 = _p50(new), _p50(old)
    mismatch = _mismatch(new, old)
    if mismatch:
        return CaseComparison(*key, NOT_COMPARABLE, new_p50, old_p50, note=mismatch)
    if new_p50 is None or old_p50 is None:
        return CaseComparison(*key, NO_TIMING, new_p50, old_p50)
    threshold = max(min_change, _noise(new, min_change), _noise(old, min_change))
    ratio = new_p50 / old_p50
    verdict = REGRESSED if ratio > 1 + threshold else IMPROVED if ratio < 1 / (1 + threshold) else UNCHANGED
    return CaseComparison(*key, verdict, new_p50, old_p50, threshold)


def compare(new: Iterable[Mapping[str, Any]], old: Iterable[Mapping[str, Any]],
            min_change: float = MIN_CHANGE) -> list[CaseComparison]:
    """Verdicts for every case of ``new`` (in its order), then the baseline's cases
    missing from ``new``. ``min_change``: the smallest relative change reported (> 0)."""
    if not min_change > 0:
        raise ValueError(f"min_change must be > 0, got {min_change}")
    old_by_key = {_key(r): r for r in old}
    out, seen = [], set()
    for r in new:
        key = _key(r)
        seen.add(key)
        if key in old_by_key:
            out.append(_compare_case(r, old_by_key[key], min_change))
        else:
            out.append(CaseComparison(*key, NEW, new_p50_s=_p50(r)))
    out.extend(CaseComparison(*key, MISSING, old_p50_s=_p50(r)) for key, r in old_by_key.items() if key not in seen)
    return out


def summary(comparisons: Iterable[CaseComparison]) -> dict[str, int]:
    """Number of cases per verdict (only verdicts that occur), in a fixed order."""
    counts: dict[str, int] = {}
    for c in comparisons:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    order = (REGRESSED, IMPROVED, UNCHANGED, NOT_COMPARABLE, NO_TIMING, NEW, MISSING)
    return {v: counts[v] for v in order if v in counts}


def print_comparison(comparisons: list[CaseComparison], out: TextIO) -> None:
    """Per case: new p50, old p50, new/old, the threshold and the verdict; then the counts."""
    print("\nAgainst baseline (p50 new/old, < 1 is faster; changed beyond +-threshold = max(min change, noise)):",
          file=out)
    for c in comparisons:
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f}"
        thr = "" if c.threshold is None else f"+-{c.threshold:.0%}"
        note = f"  ({c.note})" if c.note else ""
        print(f"  {c.suite:10} {c.backend:5} {c.name:34} {fmt_time(c.new_p50_s):>9} {fmt_time(c.old_p50_s):>9}"
              f"  {ratio:>5} {thr:>6}  {c.verdict}{note}", file=out)
    print("  " + ", ".join(f"{n} {v}" for v, n in summary(comparisons).items()), file=out)
