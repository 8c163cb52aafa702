"""Backend registry, resolution order and conversions (DESIGN.md section 2)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gpu_trader as gt
from gpu_trader import backend as bk


class RecordingBackend(bk.CpuBackend):
    """A CPU backend under another name that records which backend ran each call."""

    name = "recording"
    calls: list[str] = []

    def ops(self, area):
        RecordingBackend.calls.append(self.name)
        return super().ops(area)


@pytest.fixture
def recording(monkeypatch):
    be = RecordingBackend()
    monkeypatch.setitem(bk._REGISTRY, be.name, be)
    RecordingBackend.calls = []
    yield be
    gt.set_backend(None)


def last_backend():
    return RecordingBackend.calls[-1] if RecordingBackend.calls else "cpu"


def test_cpu_always_available_and_first():
    assert gt.available_backends()[0] == "cpu"


def test_import_is_light():
    """`import gpu_trader` must not import numba, CuPy or JAX (they load on first use)."""
    code = "import sys, gpu_trader; print(sorted(m for m in ('numba', 'cupy', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_resolution_order(recording, monkeypatch):
    x = np.arange(30.0)
    monkeypatch.delenv(bk.ENV_VAR, raising=False)
    gt.sma(x, 3)
    assert last_backend() == "cpu"
    monkeypatch.setenv(bk.ENV_VAR, "recording")
    gt.set_backend(None)  # re-reads the environment
    RecordingBackend.calls = []
    gt.sma(x, 3)
    assert last_backend() == "recording"  # env beats type inference
    monkeypatch.delenv(bk.ENV_VAR)
    gt.set_backend(None)
    gt.set_backend("recording")
    RecordingBackend.calls = []
    gt.sma(x, 3)
    assert last_backend() == "recording"  # set_backend
    gt.set_backend(None)
    RecordingBackend.calls = []
    with gt.use_backend("recording"):
        gt.sma(x, 3)
        assert last_backend() == "recording"  # context
        RecordingBackend.calls = []
        gt.sma(x, 3, backend="cpu")
        assert last_backend() == "cpu"  # explicit keyword beats the context
    RecordingBackend.calls = []
    gt.sma(x, 3)
    assert last_backend() == "cpu"  # context restored


def test_context_beats_set_backend(recording):
    gt.set_backend("recording")
    RecordingBackend.calls = []
    with gt.use_backend("cpu"):
        gt.ema(np.arange(30.0), 3)
    assert last_backend() == "cpu"


def test_unknown_backend_errors_list_available(monkeypatch):
    with pytest.raises(ValueError, match="available backends: cpu"):
        gt.set_backend("gpu9000")
    with pytest.raises(ValueError, match="cpu"):
        with gt.use_backend("nope"):
            pass
    monkeypatch.setenv(bk.ENV_VAR, "nope")
    gt.set_backend(None)
    with pytest.raises(ValueError, match="nope"):
        gt.sma(np.arange(10.0), 2)
    monkeypatch.delenv(bk.ENV_VAR)
    gt.set_backend(None)
    with pytest.raises(TypeError, match="backend"):
        gt.get_backend(3)


def test_cuda_absent_is_not_available():
    if "cuda" in gt.available_backends():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="not available"):
        gt.sma(np.arange(10.0), 2, backend="cuda")


def test_numpy_input_never_moves_to_gpu(monkeypatch):
    monkeypatch.delenv(bk.ENV_VAR, raising=False)
    out = gt.sma(np.arange(10.0), 2)
    assert type(out) is np.ndarray


def test_to_numpy_accepts_everything():
    pd = pytest.importorskip("pandas")
    x = np.arange(4.0)
    assert gt.to_numpy([1.0, 2.0]).tolist() == [1.0, 2.0]
    assert gt.to_numpy(pd.Series(x)).tolist() == x.tolist()
    a, b = gt.to_numpy((x, pd.DataFrame({"a": x})))
    assert a is x and b.shape == (4, 1)
    assert gt.to_numpy({"k": x})["k"] is x


def test_device_name_reports_cpu():
    assert gt.get_backend("cpu").device_name()


def test_env_backend_cpu(monkeypatch):
    monkeypatch.setenv(bk.ENV_VAR, "cpu")
    gt.set_backend(None)
    assert gt.get_backend().name == "cpu"
    monkeypatch.delenv(bk.ENV_VAR)
    gt.set_backend(None)


def test_env_read_at_import():
    code = "import gpu_trader as gt; print(gt.get_backend().name)"
    env = {**os.environ, bk.ENV_VAR: "nope"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "nope" in out.stderr
