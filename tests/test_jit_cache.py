"""Where numba's disk cache goes (gpu_trader._internal.jit): the configured directory, a temporary
fallback with a warning when it is unusable, never the source tree."""
from __future__ import annotations

import ast
import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest

from gpu_trader._internal import jit


@pytest.fixture
def fresh_cache_dir(monkeypatch, tmp_path):
    """Forget the process's chosen cache directory for one test (and again after it)."""
    jit.cache_dir.cache_clear()
    monkeypatch.setattr(jit, "_fallback_root", lambda: str(tmp_path / "fallback"))
    yield tmp_path
    jit.cache_dir.cache_clear()


def _compile_in(module_dir: Path) -> Path:
    """Compile and call an njit_cached function whose source file is in ``module_dir``;
    returns the source file's directory (numba's in-tree cache would go to its __pycache__)."""
    src = module_dir / "cached_kernel_mod.py"
    src.write_text(textwrap.dedent("""
        from gpu_trader._internal.jit import njit_cached

        @njit_cached()
        def twice(x):
            return 2 * x
    """))
    spec = importlib.util.spec_from_file_location(f"cached_kernel_mod_{abs(hash(str(module_dir)))}", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.twice(21) == 42
    return module_dir


def _index_files(root: Path) -> list[Path]:
    return list(root.rglob("*.nbi"))


def test_configured_directory_holds_the_cache(monkeypatch, fresh_cache_dir):
    target = fresh_cache_dir / "configured"
    monkeypatch.setenv(jit.ENV_VAR, str(target))
    src_dir = fresh_cache_dir / "src"
    src_dir.mkdir()
    _compile_in(src_dir)
    assert _index_files(target), "numba wrote no cache index into $GPU_TRADER_CACHE_DIR"
    assert not _index_files(src_dir)


@pytest.mark.parametrize("bad", ["file_in_the_way", "below_a_file", "inside_the_package"])
def test_unusable_directory_warns_and_falls_back_to_a_temporary_one(monkeypatch, fresh_cache_dir, bad):
    blocker = fresh_cache_dir / "a_file"
    blocker.write_text("not a directory")
    target = {"file_in_the_way": blocker, "below_a_file": blocker / "sub",
              "inside_the_package": Path(jit.__file__).parent / "numba-cache"}[bad]
    monkeypatch.setenv(jit.ENV_VAR, str(target))
    src_dir = fresh_cache_dir / "src"
    src_dir.mkdir()
    with pytest.warns(jit.CacheDirWarning, match=jit.ENV_VAR):
        _compile_in(src_dir)
    assert _index_files(fresh_cache_dir / "fallback")
    assert not _index_files(src_dir), "numba fell back to the source tree's __pycache__"
    assert not (Path(jit.__file__).parent / "numba-cache").exists()


def test_no_usable_directory_at_all_compiles_without_a_disk_cache(monkeypatch, fresh_cache_dir):
    blocker = fresh_cache_dir / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv(jit.ENV_VAR, str(blocker / "sub"))
    monkeypatch.setattr(jit, "_fallback_root", lambda: str(blocker / "fallback"))
    src_dir = fresh_cache_dir / "src"
    src_dir.mkdir()
    with pytest.warns(jit.CacheDirWarning, match="not cached"):
        _compile_in(src_dir)
    assert not _index_files(fresh_cache_dir)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_variable_means_the_default(monkeypatch, fresh_cache_dir, value):
    monkeypatch.setenv(jit.ENV_VAR, value)
    monkeypatch.setenv("HOME", str(fresh_cache_dir / "home"))
    assert jit.cache_dir().startswith(str(fresh_cache_dir / "home" / ".cache" / "gpu-trader" / "numba"))


@pytest.mark.slow
def test_unusable_directory_in_a_fresh_interpreter_still_computes(tmp_path):
    """End to end: the package imports, warns once and computes with a broken variable."""
    import subprocess

    env = dict(os.environ, GPU_TRADER_CACHE_DIR=str(tmp_path / "f" / "sub"), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "f").write_text("x")
    (tmp_path / "tmp").mkdir()
    code = ("import warnings, numpy as np, gpu_trader as gt\n"
            "warnings.simplefilter('always')\n"
            "print(gt.sma(np.arange(10.0), 3)[-1])\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "8.0"
    assert "CacheDirWarning" in out.stderr and "GPU_TRADER_CACHE_DIR" in out.stderr
    assert _index_files(tmp_path / "tmp")


def _module_sources():
    package = Path(jit.__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        yield rel, ast.parse(path.read_text(), str(path))


def _imported_package_modules(rel: Path, tree: ast.AST):
    """Top-level names of gpu_trader that module ``rel`` imports (relative or absolute)."""
    here = ("gpu_trader",) + rel.with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                parts = base + tuple(node.module.split(".")) if node.module else base
            elif node.module and node.module.split(".")[0] == "gpu_trader":
                parts = tuple(node.module.split("."))
            else:
                continue
            names = [a.name for a in node.names] if len(parts) == 1 else [None]
            for name in names:
                target = parts[1:] or (name,)
                yield target[0] if target[0] else name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gpu_trader."):
                    yield alias.name.split(".")[1]


_JIT_DECORATORS = {"njit", "njit_cached", "register_jitable", "jit", "vectorize", "guvectorize", "generated_jit"}


def _jitted_functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and not node.args:
            continue  # a decorator factory's own call (``njit(cache=True)``), seen with its function
        if isinstance(node, (ast.FunctionDef, ast.Call)):
            targets = node.decorator_list if isinstance(node, ast.FunctionDef) else [node.func]
            for dec in targets:
                dec = dec.func if isinstance(dec, ast.Call) else dec
                name = dec.attr if isinstance(dec, ast.Attribute) else getattr(dec, "id", None)
                if name in _JIT_DECORATORS:
                    yield getattr(node, "name", name)


def test_cache_key_covers_all_compiled_code_and_what_it_imports():
    """The cache directory's hash reads only jit.HASHED_PACKAGES: every jitted function must
    live there, and the modules using numba may import only from those packages (and the
    profiling decorators), or an edit elsewhere could change what compiled code reads while
    the stale cache is still loaded."""
    outside, imports = [], []
    for rel, tree in _module_sources():
        if "numba" not in ast.unparse(tree):  # no numba code (jax.jit and friends are not numba's)
            continue
        if rel.parts[0] not in jit.HASHED_PACKAGES:
            outside += [f"{rel}: {fn}" for fn in _jitted_functions(tree)]
            continue
        imports += [f"{rel} imports gpu_trader.{m}" for m in _imported_package_modules(rel, tree)
                    if m not in jit.HASHED_PACKAGES and m != "profiling"]
    assert not outside, f"jitted code outside {jit.HASHED_PACKAGES}: {outside}"
    assert not imports, imports


def test_cache_key_checks_can_fail():
    """The two source scans above find what they look for."""
    tree = ast.parse("from ..backend import x\nfrom .. import orders\nfrom numba import njit\n"
                     "@njit(cache=True)\ndef f(x):\n    return x\ng = register_jitable(f)\n")
    rel = Path("cpu_fallback/mod.py")
    assert sorted(_imported_package_modules(rel, tree)) == ["backend", "orders"]
    assert sorted(_jitted_functions(tree)) == ["f", "register_jitable"]


def test_editing_a_public_module_keeps_the_cache_key(monkeypatch, tmp_path):
    """The key follows the compiled packages only: a copy of the package with an edited public
    module hashes the same, one with an edited loop body does not."""
    package = Path(jit.__file__).resolve().parents[1]
    import shutil

    copy = tmp_path / "gpu_trader"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(jit, "_PACKAGE", copy)
    base = jit._source_hash()
    (copy / "orders.py").write_text((copy / "orders.py").read_text() + "\n# edited\n")
    assert jit._source_hash() == base
    loops = copy / "_internal" / "indicator_loops.py"
    loops.write_text(loops.read_text() + "\n# edited\n")
    assert jit._source_hash() != base
