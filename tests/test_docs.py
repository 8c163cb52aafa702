"""The docs match the code: docs/design.md documents every public name, docs/architecture.md names
only modules and functions that exist, and the repository is self-contained.

* every name in ``gpu_trader.__all__`` and in the ``__all__`` of every public module (the flat
  modules of ``gpu_trader/`` and ``gpu_trader/bench/``) appears in a code span of that module's
  subsection of design.md's "Public API";
* every module path in architecture.md (``kernels/scan.py``, ``_internal/risk_xp.py``, or dotted,
  ``_internal.risk_xp.RiskMetrics``) exists, and so does the function, class or attribute a dotted
  name or a bare code span names (defined somewhere in the package, found with ``ast``);
* no file of the repository refers to the original brief outside it.
"""
from __future__ import annotations

import ast
import functools
import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gpu_trader"
DESIGN = ROOT / "docs" / "design.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Spelled in pieces so that this file does not contain them itself.
FORBIDDEN = ("DESIGN" + ".md", "TARGETS" + ".md", ".." + "/shared")

# Names in code spans of architecture.md that belong to other libraries or are not code.
EXTERNAL_ROOTS = frozenset({"numba", "numpy", "np", "cupy", "jax", "lax", "pandas", "typing", "hnswlib",
                            "cuvs", "register_jitable", "xp", "T", "cpu", "cuda"})
TOP_DIRS = ("gpu_trader", "tests", "benches", "docs", "notebooks")


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def identifiers(spans: list[str]) -> set[str]:
    return {word for span in spans for word in re.findall(r"[A-Za-z_]\w*", span)}


def public_modules() -> list[str]:
    """``gpu_trader`` and every public module: the flat modules and ``bench`` with its modules."""
    names = ["gpu_trader"]
    names += [f"gpu_trader.{p.stem}" for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"]
    names.append("gpu_trader.bench")
    names += [f"gpu_trader.bench.{p.stem}" for p in sorted((PACKAGE / "bench").glob("*.py")) if p.stem != "__init__"]
    return names


def api_sections(text: str) -> dict[str, str]:
    """Module name -> text of its ``### `module``` subsection under "## Public API"."""
    api = text.split("\n## Public API", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^### `([\w.]+)`\s*$", api, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("module", public_modules())
def test_design_documents_every_public_name(module):
    sections = api_sections(DESIGN.read_text())
    assert module in sections, f"docs/design.md has no '### `{module}`' subsection under '## Public API'"
    exported = getattr(importlib.import_module(module), "__all__", None)
    assert exported, f"{module} has no __all__"
    documented = identifiers(code_spans(sections[module]))
    missing = [name for name in exported if name not in documented]
    assert not missing, f"docs/design.md, section `{module}`, does not mention {missing}"


@functools.lru_cache(maxsize=None)
def module_file(dotted: str) -> Path | None:
    """The source file of a module named relative to the package (``_internal.risk_xp``), fully
    (``gpu_trader.kernels.scan``) or by its last component when that is unique (``risk_xp``)."""
    parts = dotted.split(".")
    if parts[0] == "gpu_trader":
        parts = parts[1:]
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
        if parts and candidate.is_file():
            return candidate
    if len(parts) == 1:
        found = [p for p in PACKAGE.rglob(f"{parts[0]}.py")]
        if len(found) == 1:
            return found[0]
    return None


@functools.lru_cache(maxsize=None)
def defined_names(path: Path) -> frozenset[str]:
    """Everything a module defines at any depth: functions, classes, assigned names and attributes."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Name, ast.arg)) and isinstance(getattr(node, "ctx", ast.Store()), ast.Store):
            names.add(node.id if isinstance(node, ast.Name) else node.arg)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def package_names() -> frozenset[str]:
    return frozenset().union(*(defined_names(p) for p in PACKAGE.rglob("*.py")))


def path_problems(text: str) -> list[str]:
    """Module paths and dotted names of ``text`` that name nothing in the repository."""
    problems = []
    for path in sorted(set(re.findall(r"(?<![\w/.])((?:[\w]+/)+[\w]+\.py)\b", text))):
        base = ROOT if path.split("/", 1)[0] in TOP_DIRS else PACKAGE
        if not (base / path).is_file():
            problems.append(f"{path}: no such file")
    for span in code_spans(text):
        if re.fullmatch(r"\w+\.py", span):
            if module_file(span[:-3]) is None:
                problems.append(f"{span}: no such module in gpu_trader")
            continue
        if not re.fullmatch(r"[A-Za-z_][\w.]*", span):
            continue
        parts = span.split(".")
        if parts[0] in EXTERNAL_ROOTS:
            continue
        module = next((module_file(".".join(parts[:i])) for i in range(len(parts), 0, -1)
                       if module_file(".".join(parts[:i]))), None)
        if module is not None:
            depth = next(i for i in range(len(parts), 0, -1) if module_file(".".join(parts[:i])))
            rest = parts[depth:]
            if rest and rest[0] not in defined_names(module):
                problems.append(f"{span}: {module.relative_to(ROOT)} defines no {rest[0]!r}")
        elif len(parts) > 1 and parts[0].endswith(("_loops", "_xp")):
            problems.append(f"{span}: no module {parts[0]!r}")
        elif parts[-1] not in package_names():
            problems.append(f"{span}: nothing in gpu_trader defines {parts[-1]!r}")
    return problems


def test_architecture_names_only_what_exists():
    problems = path_problems(ARCHITECTURE.read_text())
    assert not problems, "docs/architecture.md names what does not exist:\n" + "\n".join(problems)


def test_path_check_can_fail():
    """The checker itself: a made-up path, module or function is reported."""
    text = ("`kernels/nowhere.py`, `_internal.risk_xp.NoSuchClass`, `nothing_loops.row`, `no_such_function_xyz`, "
            "`nowhere.py`")
    assert len(path_problems(text)) == 5
    assert not path_problems("`kernels/scan.py`, `_internal.risk_xp`, `indicator_loops.sma_row`, `jit.py`")


def repository_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the repository's files cannot be listed")
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def test_repository_is_self_contained():
    offenders = []
    for path in repository_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        text = data.decode("utf-8", errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {word}" for word in FORBIDDEN if word in text]
    assert not offenders, "files refer to documents outside the repository:\n" + "\n".join(offenders)
