"""Every backend's area modules provide what :mod:`gpu_trader._internal.areas` states.

The main check reads each module's source with ``ast`` and never imports it, so the CUDA
modules (which import CuPy and numba.cuda) are checked on machines without a GPU: a
rename in ``gpu_trader/kernels/`` fails here, not only on a GPU. The rule:

* every name the area's protocol declares is bound at module level: a ``def``, a
  ``class``, an assignment or annotated assignment (tuple targets too), an import (with
  or without ``as``), or a name a module ``__getattr__`` answers (a string its argument is
  compared with). Bindings inside a module-level ``if``/``try``/``with`` count. An entry
  of a literal ``__all__`` counts too, but only in a module with a star import (whose
  names cannot be seen): elsewhere a stale ``__all__`` entry left by a rename must not
  pass for a definition;
* a name bound by ``def`` takes the protocol's positional parameters: the same names in
  the same order, with a default wherever the protocol has one; it may add keyword-only
  parameters, each with a default. A name bound otherwise (a ``functools.partial``, a
  compiled dispatcher, an object) is checked for presence only.

A second check imports the modules of the backends present here and tests them with
``isinstance`` against the ``runtime_checkable`` protocols (names only, at run time).
"""
from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import numpy as np
import pytest

import gpu_trader
from gpu_trader import backend as bk
from gpu_trader._internal import areas
from gpu_trader._internal.areas import AREA_PROTOCOLS

PACKAGE_ROOT = Path(gpu_trader.__file__).resolve().parent.parent

SUPPORT_MODULES = {
    "gpu_trader.cpu_fallback": {"__init__", "blas", "output_pool", "scan"},
    "gpu_trader.kernels": {"__init__", "launch", "scan"},
    "gpu_trader.jax_backend": {"__init__"},
}
"""Modules of an ops package that are no area: the package itself and the helpers its area
modules share (cpu: the BLAS thread policy, the output-buffer pool, the CPU twin of the CUDA scan; cuda: the
kernel launcher, the chunked scan). A new module must be an area or be listed here."""

OBJECT_PROTOCOLS = {"risk": ("metrics", areas.RiskMetricsOps),
                    "correlation": ("estimators", areas.CorrelationEstimatorsOps)}
"""Areas whose module holds an object with a protocol of its own: area -> (name, protocol)."""

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


# -- the checker -----------------------------------------------------------------------------
def protocol_members(protocol: type) -> dict[str, inspect.Signature | None]:
    """The names ``protocol`` declares: its methods (signature less ``self``), and its
    annotated attributes and properties (``None``: presence only)."""
    members: dict[str, inspect.Signature | None] = dict.fromkeys(protocol.__annotations__)
    for name, value in vars(protocol).items():
        if isinstance(value, property):
            members[name] = None
        elif inspect.isfunction(value) and not name.startswith("_"):
            sig = inspect.signature(value)
            members[name] = sig.replace(parameters=list(sig.parameters.values())[1:])
    return members


def _getattr_names(fn: ast.FunctionDef) -> set[str]:
    """Strings a module ``__getattr__(name)`` compares ``name`` with (``==`` or ``in (...)``)."""
    arg = fn.args.args[0].arg if fn.args.args else None
    names = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == arg:
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, ast.Eq) and isinstance(right, ast.Constant) and isinstance(right.value, str):
                    names.add(right.value)
                elif isinstance(op, ast.In) and isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                    names.update(e.value for e in right.elts
                                 if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return names


def module_bindings(source: str) -> dict[str, ast.arguments | None]:
    """Names bound at module level in ``source`` (see the module docstring), each with the
    parameters of its ``def`` (``None`` when bound otherwise); the last binding wins."""
    bound: dict[str, ast.arguments | None] = {}
    exported: set[str] = set()  # listed in __all__
    answered: set[str] = set()  # answered by __getattr__
    opaque = False  # a star import: the names it binds cannot be seen

    def bind(target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            bound[target.id] = None
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                bind(elt)
        elif isinstance(target, ast.Starred):
            bind(target.value)

    def visit(body: list[ast.stmt]) -> None:
        nonlocal opaque
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bound[node.name] = node.args
                if node.name == "__getattr__" and isinstance(node, ast.FunctionDef):
                    answered.update(_getattr_names(node))
            elif isinstance(node, ast.ClassDef):
                bound[node.name] = None
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target)
                if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets) and isinstance(
                        node.value, (ast.List, ast.Tuple)):
                    exported.update(e.value for e in node.value.elts if isinstance(e, ast.Constant))
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                bind(node.target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        opaque = True
                    else:
                        bound[alias.asname or alias.name.split(".")[0]] = None
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(ast.parse(source).body)
    for name in answered | (exported if opaque else set()):
        bound.setdefault(name, None)
    return bound


def parameter_mismatch(args: ast.arguments, sig: inspect.Signature) -> str | None:
    """Why a ``def`` with ``args`` cannot stand for a protocol method ``sig`` (less ``self``),
    or None when it can (the rule of the module docstring)."""
    positional = [a.arg for a in args.posonlyargs + args.args]
    wanted = [p for p in sig.parameters.values() if p.kind in _POSITIONAL]
    if positional != [p.name for p in wanted]:
        expected = ", ".join(p.name for p in wanted)
        return f"positional parameters ({', '.join(positional)}), the protocol's are ({expected})"
    first_default = len(positional) - len(args.defaults)
    for i, p in enumerate(wanted):
        if p.default is not inspect.Parameter.empty and i < first_default:
            return f"parameter {p.name} needs a default, as in the protocol"
    for a, default in zip(args.kwonlyargs, args.kw_defaults):
        if default is None and a.arg not in sig.parameters:
            return f"keyword-only parameter {a.arg} has no default"
    return None


def contract_problems(source: str, protocol: type) -> dict[str, str]:
    """What module ``source`` lacks of ``protocol``: declared name -> why (empty when it complies)."""
    bound = module_bindings(source)
    problems = {}
    for name, sig in protocol_members(protocol).items():
        if name not in bound:
            problems[name] = "not defined at module level"
            continue
        args = bound[name]
        why = parameter_mismatch(args, sig) if sig is not None and args is not None else None
        if why:
            problems[name] = why
    return problems


def package_dir(ops_package: str) -> Path:
    return PACKAGE_ROOT.joinpath(*ops_package.split("."))


def _implemented() -> list[tuple[str, str]]:
    """(backend name, area) for every area of every registered backend."""
    return [(be.name, area) for be in bk.registered_backends() for area in sorted(be.areas)]


def _registered(name: str) -> bk.Backend:
    return next(be for be in bk.registered_backends() if be.name == name)


# -- the modules, read ---------------------------------------------------------------------------
def test_every_area_has_a_protocol():
    assert set(AREA_PROTOCOLS) == set(bk.AREAS)
    assert bk.DISPATCHED_AREAS.isdisjoint(bk.HOST_AREAS)
    for be in bk.registered_backends():
        assert be.areas <= bk.AREAS, be.name


@pytest.mark.parametrize("name,area", _implemented())
def test_area_module_provides_its_protocol(name, area):
    be = _registered(name)  # not probed: nothing is imported
    path = package_dir(be.ops_package) / f"{area}.py"
    assert path.is_file(), f"{be.ops_package} implements {area} but has no {path.name}"
    assert contract_problems(path.read_text(), AREA_PROTOCOLS[area]) == {}


def test_every_ops_module_is_an_area_or_declared_support():
    by_package: dict[str, set[str]] = {}
    for be in bk.registered_backends():
        by_package.setdefault(be.ops_package, set()).update(be.areas)
    assert set(by_package) == set(SUPPORT_MODULES)
    for package, implemented in by_package.items():
        folder = package_dir(package)
        modules = {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}
        undeclared = modules - implemented - SUPPORT_MODULES[package]
        assert not undeclared, f"{package}: {sorted(undeclared)} are neither areas nor listed support modules"
        stale = SUPPORT_MODULES[package] - modules
        assert not stale, f"{package}: listed support modules {sorted(stale)} do not exist"


# -- the checker can fail --------------------------------------------------------------------------
PORTFOLIO_SOURCE = '''
def apply_fills(qty, avg, realized, fill_qty, fill_price):
    return qty, avg, realized


def mark_to_market(qty, avg, prices):
    return qty, avg
'''


def test_checker_accepts_a_complete_module_and_reports_a_missing_name():
    assert contract_problems(PORTFOLIO_SOURCE, areas.PortfolioOps) == {}
    missing = PORTFOLIO_SOURCE.replace("def mark_to_market", "def mark_to_markets")
    assert set(contract_problems(missing, areas.PortfolioOps)) == {"mark_to_market"}


def test_checker_does_not_take_a_stale_all_entry_for_a_definition():
    listed = '__all__ = ["apply_fills", "mark_to_market"]\n' + PORTFOLIO_SOURCE
    renamed = listed.replace("def mark_to_market", "def mark_to_markets")
    assert set(contract_problems(renamed, areas.PortfolioOps)) == {"mark_to_market"}
    assert contract_problems("from .impl import *\n" + renamed, areas.PortfolioOps) == {}


def test_checker_reports_a_wrong_parameter_list():
    renamed = PORTFOLIO_SOURCE.replace("fill_qty, fill_price)", "fill_qty, price)")
    problems = contract_problems(renamed, areas.PortfolioOps)
    assert set(problems) == {"apply_fills"}
    assert "fill_price" in problems["apply_fills"]
    one_less = PORTFOLIO_SOURCE.replace("(qty, avg, prices)", "(qty, prices)")
    assert set(contract_problems(one_less, areas.PortfolioOps)) == {"mark_to_market"}


def test_checker_rules_for_defaults_and_keyword_only_parameters():
    base = "def compute_many(names, params_list, fields): pass\n"
    ok = base + "def compute(name, inputs, params, n_out, *, path=None): pass\n"
    assert contract_problems(ok, areas.IndicatorsOps) == {}
    no_default = base + "def compute(name, inputs, params, n_out, *, path): pass\n"
    assert set(contract_problems(no_default, areas.IndicatorsOps)) == {"compute"}
    vectors = {name: f"{name} = make()\n" for name in protocol_members(areas.VectorsOps)}
    vectors["search"] = "def search(db, scales, norms, queries, k, l2, rows): pass\n"  # rows lost its default
    assert set(contract_problems("".join(vectors.values()), areas.VectorsOps)) == {"search"}


def test_checker_sees_every_kind_of_binding():
    source = '''
from .driver import run as run
from .shared import *
import numpy
CHUNKS_IN_FLIGHT, MERGE_SCRATCH = 1, True
FUSED_MAX_ROWS, CHUNK_BYTES, normals_at = 0, None, None
def project(seed, first, rows, bt, dtype, dof): pass
BLOCK: int = 256
__all__ = ["scatter_add"]
try:
    class map_chunks:
        pass
except ImportError:
    pass
if numpy:
    normals = make()
def __getattr__(name):
    if name == "xp":
        return numpy
    raise AttributeError(name)
def option_pnl(returns, o, dtype): pass
async def tail_update(vals, idx, loss, first): pass
'''
    assert contract_problems(source, areas.MontecarloOps) == {}
    assert set(contract_problems(source.replace('name == "xp"', 'name == "np"'), areas.MontecarloOps)) == {"xp"}
    assert set(contract_problems(source.replace("BLOCK: int = 256", "BLOCK: int"), areas.MontecarloOps)) == {"BLOCK"}
    assert set(contract_problems(source.replace("run as run", "run as go"), areas.MontecarloOps)) == {"run"}
    no_star = source.replace("from .shared import *", "")
    assert set(contract_problems(no_star, areas.MontecarloOps)) == {"scatter_add"}  # only listed in __all__


def test_protocol_members_lists_methods_and_attributes():
    members = protocol_members(areas.MontecarloOps)
    assert set(members) == {"xp", "BLOCK", "CHUNKS_IN_FLIGHT", "MERGE_SCRATCH", "FUSED_MAX_ROWS", "CHUNK_BYTES",
                            "normals_at", "run", "map_chunks", "normals", "project", "option_pnl", "tail_update",
                            "scatter_add"}
    assert members["BLOCK"] is None and members["normals_at"] is None
    assert list(members["project"].parameters) == ["seed", "first", "rows", "bt", "dtype", "dof"]
    assert list(members["tail_update"].parameters) == ["vals", "idx", "loss", "first"]


# -- the modules, imported (the backends present here) ------------------------------------------------
@pytest.mark.parametrize("name,area", _implemented())
def test_imported_area_module_is_an_instance_of_its_protocol(name, area):
    if name not in ("cpu", "jax") or name not in bk.available_backends():
        pytest.skip(f"the {name} backend is not importable here")
    mod = bk.get_backend(name).ops(area)
    assert isinstance(mod, AREA_PROTOCOLS[area])
    if area in OBJECT_PROTOCOLS:
        attr, protocol = OBJECT_PROTOCOLS[area]
        assert isinstance(getattr(mod, attr), protocol)


def test_shared_array_formulations_satisfy_the_object_protocols():
    """The classes the cuda (and jax) modules instantiate, checked on NumPy without CuPy."""
    from gpu_trader._internal.correlation_xp import CorrelationEstimators
    from gpu_trader._internal.risk_xp import RiskMetrics

    assert isinstance(RiskMetrics(np, np.maximum.accumulate), areas.RiskMetricsOps)
    assert isinstance(CorrelationEstimators(np), areas.CorrelationEstimatorsOps)


def test_isinstance_check_fails_for_a_module_missing_a_name():
    cpu = bk.get_backend("cpu").ops("portfolio")
    partial = types.ModuleType("partial_portfolio")
    partial.apply_fills = cpu.apply_fills
    assert not isinstance(partial, areas.PortfolioOps)
    partial.mark_to_market = cpu.mark_to_market
    assert isinstance(partial, areas.PortfolioOps)


def test_montecarlo_driver_uses_only_what_the_protocol_declares():
    """``montecarlo_xp`` reaches its backend as ``ops.NAME`` (or ``self.ops.NAME``) for declared names only,
    never through ``getattr`` (an optional attribute a backend forgot would silently change the policy)."""
    from gpu_trader._internal import montecarlo_xp

    tree = ast.parse(inspect.getsource(montecarlo_xp))
    used, probed = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "ops") or (
                    isinstance(base, ast.Attribute) and base.attr == "ops"):
                used.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            arg = node.args[0]
            if isinstance(arg, ast.Name) and arg.id == "ops" or isinstance(arg, ast.Attribute) and arg.attr == "ops":
                probed.append(ast.unparse(node))
    declared = set(protocol_members(areas.MontecarloOps))
    assert not probed, probed
    assert used - declared == set(), used - declared
    assert {"FUSED_MAX_ROWS", "CHUNK_BYTES", "normals_at", "project"} <= used
