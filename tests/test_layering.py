"""The dependency rule of docs/architecture.md, checked on the sources (``ast``, nothing imported):
public modules reach backend code only through ``Backend.ops``; internal and backend modules never
import a public module; ``backend`` and ``profiling`` import nothing of the package."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpu_trader"
BACKEND_PACKAGES = ("cpu_fallback", "kernels", "jax_backend")
# The one documented exception: the CPU twin of the CUDA scan reuses its array glue.
EXCEPTIONS = {("cpu_fallback/scan.py", "kernels.scan")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def package_imports(rel: Path, tree: ast.AST) -> set[str]:
    """Dotted names (below ``gpu_trader``) of the package modules ``rel`` imports at run time
    (``if TYPE_CHECKING:`` blocks excluded); ``from . import x`` yields ``x``."""
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for n in ast.walk(node)}
    here = rel.with_suffix("").parts[:-1] if rel.name != "__init__.py" else rel.parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1] if node.level > 1 else here
                mod = base + tuple(node.module.split(".")) if node.module else base
            elif node.module and node.module.split(".")[0] == "gpu_trader":
                mod = tuple(node.module.split(".")[1:])
            else:
                continue
            for alias in node.names:  # ``from pkg import module`` names the module itself
                sub = mod + (alias.name,)
                is_module = (PACKAGE.joinpath(*sub).with_suffix(".py").exists()
                             or PACKAGE.joinpath(*sub, "__init__.py").exists())
                found.add(".".join(sub if is_module or not mod else mod))
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("gpu_trader."))
    return found


def layer(dotted: str) -> str:
    top = dotted.split(".")[0].removesuffix(".py")
    if top in BACKEND_PACKAGES:
        return "ops"
    if top == "_internal":
        return "internal"
    if top in ("backend", "profiling"):
        return top
    if top == "bench" or top == "cli":
        return "bench"
    return "public"


ALLOWED = {
    "backend": set(),
    "profiling": set(),
    "internal": {"internal", "backend"},
    "ops": {"internal"},
    "public": {"public", "internal", "backend", "profiling"},
    "bench": {"public", "internal", "backend", "profiling", "bench"},
}


def violations(rel: Path, tree: ast.AST) -> list[str]:
    dotted = ".".join(rel.with_suffix("").parts)
    mine = layer(dotted)
    out = []
    for target in sorted(package_imports(rel, tree)):
        theirs = layer(target)
        same_ops_package = mine == "ops" and theirs == "ops" and target.split(".")[0] == rel.parts[0]
        if theirs in ALLOWED[mine] or same_ops_package or (rel.as_posix(), target) in EXCEPTIONS:
            continue
        out.append(f"{rel} ({mine}) imports gpu_trader.{target} ({theirs})")
    return out


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        yield rel, ast.parse(path.read_text(), str(path))


def test_every_module_follows_the_dependency_rule():
    found = [v for rel, tree in _sources() for v in violations(rel, tree)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("rel, source, expected", [
    ("strategies.py", "from .cpu_fallback.strategies import signals_now\n", "gpu_trader.cpu_fallback.strategies"),
    ("_internal/risk_xp.py", "from ..orders import Order\n", "gpu_trader.orders"),
    ("kernels/risk.py", "from .. import risk\n", "gpu_trader.risk"),
    ("cpu_fallback/vectors.py", "from ..kernels.vectors import search\n", "gpu_trader.kernels.vectors"),
    ("backend.py", "def f():\n    from ._internal import validation\n", "gpu_trader._internal.validation"),
    ("indicators.py", "import gpu_trader.jax_backend.indicators\n", "gpu_trader.jax_backend.indicators"),
])
def test_the_rule_catches_a_slip(rel, source, expected):
    found = violations(Path(rel), ast.parse(source))
    assert len(found) == 1 and found[0].endswith(f"imports {expected} ({layer(expected.split('.', 1)[1])})"), found


def test_type_checking_imports_and_allowed_imports_pass():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._internal import areas\n"
              "from . import profiling\n")
    assert violations(Path("backend.py"), ast.parse(source)) == ["backend.py (backend) imports gpu_trader.profiling (profiling)"]
    assert violations(Path("kernels/risk.py"), ast.parse("from .launch import CudaExecutor\nfrom .._internal import risk_xp\n")) == []
