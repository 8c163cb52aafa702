"""Where numba's disk cache goes (gpu_trader.jit): the configured directory, a temporary
fallback with a warning when it is unusable, never the source tree."""
from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest

from gpu_trader import jit


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
        from gpu_trader.jit import njit_cached

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
