"""Backend registry, resolution order and conversions (docs/design.md#backends-and-areas)."""
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


# -- GPU_TRADER_BACKEND: a bad value never breaks the import, and the error names it ------------
def _run_with_env(value: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, bk.ENV_VAR: value}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("value", ["nosuch", "cuda", "jax"])
def test_env_backend_unknown_or_absent_names_the_variable(value):
    if value in gt.available_backends():
        pytest.skip(f"{value!r} is present on this machine")
    code = (
        "import numpy as np, gpu_trader as gt\n"
        "print('imported', gt.available_backends())\n"
        "try:\n    gt.sma(np.arange(10.0), 3)\n"
        "except ValueError as exc:\n    print('refused:', exc)\n"
    )
    proc = _run_with_env(value, code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported, refused = proc.stdout.strip().splitlines()
    assert imported.startswith("imported")
    assert refused.startswith("refused:") and bk.ENV_VAR in refused and repr(value) in refused
    assert "available backends: cpu" in refused


@pytest.mark.parametrize("value", ["", "   ", "\t", " CPU "])
def test_env_backend_blank_is_unset_and_whitespace_is_ignored(value):
    proc = _run_with_env(value, "import gpu_trader as gt; print(gt.get_backend().name)")
    assert proc.returncode == 0 and proc.stdout.strip() == "cpu", proc.stderr[-2000:]


def test_env_backend_error_after_set_backend_none(monkeypatch):
    monkeypatch.setenv(bk.ENV_VAR, "gpu9000")
    gt.set_backend(None)
    try:
        with pytest.raises(ValueError, match=rf"{bk.ENV_VAR}='gpu9000' names an unknown backend"):
            gt.get_backend()
        assert gt.get_backend("cpu").name == "cpu"  # an explicit name still works
        monkeypatch.setenv(bk.ENV_VAR, "  ")
        gt.set_backend(None)
        assert gt.get_backend().name == "cpu"
    finally:
        monkeypatch.delenv(bk.ENV_VAR)
        gt.set_backend(None)


# -- input conversion: one place, before any compiled code -------------------------------------
def sma_oracle(x, window):
    """Plain float64 NumPy: the mean of each full window, NaN before."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    out[..., window - 1:] = np.lib.stride_tricks.sliding_window_view(x, window, axis=-1).mean(axis=-1)
    return out


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i8", ">i4", ">u2", "<f2", "?", np.longdouble])
def test_other_byte_orders_and_real_dtypes_keep_their_values(dtype):
    x = (np.arange(60) * 7 % 13).astype(dtype)
    out = gt.sma(x, 4)
    assert out.dtype == (np.float32 if np.dtype(dtype) == np.dtype(">f4") else np.float64)
    assert out.dtype.isnative
    np.testing.assert_allclose(out, sma_oracle(x, 4), rtol=1e-6)
    assert x.dtype == np.dtype(dtype)  # the input is untouched


def test_big_endian_mixed_with_native_inputs():
    rng = np.random.default_rng(0)
    close = rng.normal(100.0, 1.0, (2, 50))
    volume = rng.integers(1, 1000, (2, 50))
    expected = gt.obv(close, volume.astype(np.float64))
    np.testing.assert_array_equal(gt.obv(close.astype(">f8"), volume.astype(">i8")), expected)
    np.testing.assert_array_equal(gt.obv(close, volume.astype(">i4")), expected)


@pytest.mark.parametrize("bad", [
    np.array([1 + 2j, 3j, 1.0]),
    np.array([object(), 1.0, 2.0]),
    np.array(["1.0", "2.0", "3.0"]),
    np.array([b"1", b"2", b"3"]),
    np.arange(3).astype("datetime64[D]"),
    np.arange(3).astype("timedelta64[s]"),
    np.zeros(3, dtype=[("price", "f8"), ("size", "i8")]),
    [[1.0, 2.0], [3.0]],  # ragged
])
def test_non_real_inputs_refused_naming_the_argument(bad):
    good = np.arange(3.0)
    with pytest.raises(TypeError, match="x must be a real numeric array"):
        gt.sma(bad, 2)
    with pytest.raises(TypeError, match="low must be a real numeric array"):
        gt.atr(good, bad, good, 2)


def test_masked_arrays_are_refused_with_the_fix():
    x = np.ma.masked_invalid([np.nan, 2.0, 3.0, 5.0])  # a leading gap: skipped, as TA-Lib does
    with pytest.raises(TypeError, match=r"x is a masked array.*x\.filled\(np\.nan\)"):
        gt.sma(x, 2)
    with pytest.raises(TypeError, match="volume is a masked array"):
        gt.obv(np.arange(4.0), x)
    np.testing.assert_array_equal(gt.sma(x.filled(np.nan), 2), sma_oracle([np.nan, 2.0, 3.0, 5.0], 2))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_ndarray_subclasses_become_plain_arrays(tmp_path):
    x = np.arange(40.0) % 9
    out = gt.sma(np.matrix(x), 5)
    assert type(out) is np.ndarray and out.shape == (1, 40)
    np.testing.assert_array_equal(out[0], gt.sma(x, 5))
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="w+", shape=(40,))
    mm[:] = x
    out = gt.sma(mm, 5)
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, gt.sma(x, 5))


def test_misaligned_input_is_read_correctly():
    x = np.arange(30.0)
    raw = np.zeros(x.nbytes + 1, dtype=np.uint8)
    raw[1:] = x.view(np.uint8)
    misaligned = raw[1:].view(np.float64)
    assert not misaligned.flags.aligned
    np.testing.assert_array_equal(gt.obv(misaligned, x), gt.obv(x, x))
    np.testing.assert_array_equal(gt.sma(misaligned, 3), sma_oracle(x, 3))


def test_kernel_arrays_share_one_array_type_without_copies():
    cpu = gt.get_backend("cpu")
    writable = np.arange(12.0).reshape(3, 4)
    frozen = np.arange(12.0).reshape(3, 4)
    frozen.flags.writeable = False
    strided = np.arange(24.0).reshape(3, 8)[:, ::2]
    out = cpu.kernel_arrays([frozen, writable, strided], (3, 4))
    assert [a.flags.writeable for a in out] == [False, False, False]
    assert all(a.flags.c_contiguous for a in out)
    assert np.shares_memory(out[0], frozen) and np.shares_memory(out[1], writable)
    assert writable.flags.writeable  # only the view is read-only
    same = cpu.kernel_arrays([writable, writable], (12,))
    assert all(a.flags.writeable for a in same) and all(np.shares_memory(a, writable) for a in same)


# -- areas and capability flags --------------------------------------------------------------------
def _registered(name):
    return next(be for be in bk.registered_backends() if be.name == name)


def test_each_backend_declares_its_areas():
    cpu, cuda, jax = (_registered(n) for n in ("cpu", "cuda", "jax"))
    assert len(bk.AREAS) == len(bk.DISPATCHED_AREAS) + 2 and bk.AREAS == bk.DISPATCHED_AREAS | {"streaming", "risk_stream"}
    assert cpu.areas == bk.AREAS
    assert cuda.areas == bk.AREAS - {"streaming", "risk_stream"}
    assert jax.areas == {"indicators", "risk", "correlation", "montecarlo"}
    assert all(cpu.supports(area) for area in bk.AREAS)
    assert not cuda.supports("streaming") and not jax.supports("vectors") and not cpu.supports("scan")


def test_every_area_counts_the_dispatched_areas_only(monkeypatch):
    """A backend lacking only the host-only streaming area (cuda) implements "every area" for
    the bench's default; one lacking a dispatched area (jax) does not, and is never probed."""
    probed = []

    class DispatchedOnly(bk.CpuBackend):
        name, areas = "dispatched", bk.DISPATCHED_AREAS

    class Partial(bk.CpuBackend):
        name, areas = "partial", bk.DISPATCHED_AREAS - {"vectors"}

        def _probe(self):
            probed.append(self.name)
            return True

    monkeypatch.setitem(bk._REGISTRY, "dispatched", DispatchedOnly())
    monkeypatch.setitem(bk._REGISTRY, "partial", Partial())
    complete = bk.available_backends(every_area=True)
    assert complete[0] == "cpu" and "dispatched" in complete
    assert "partial" not in complete and "jax" not in complete and not probed
    assert "partial" in bk.available_backends() and probed == ["partial"]


def test_area_errors_name_the_backends_that_have_it():
    message = (r"^backend 'cuda' does not implement streaming \(it implements correlation, indicators, marketdata, "
               r"montecarlo, portfolio, risk, sizing, strategies, vectors\); use backend= one of cpu$")
    with pytest.raises(bk.AreaNotImplemented, match=message):
        _registered("cuda").ops("streaming")
    with pytest.raises(ValueError, match="unknown area 'indicator'; the areas are correlation, indicators") as info:
        gt.get_backend("cpu").ops("indicator")
    assert not isinstance(info.value, bk.AreaNotImplemented)


def test_capability_flags():
    cpu, cuda, jax = (_registered(n) for n in ("cpu", "cuda", "jax"))
    assert (cpu.host_memory, cuda.host_memory, jax.host_memory) == (True, False, False)
    assert (cpu.mutable_arrays, cuda.mutable_arrays, jax.mutable_arrays) == (True, True, False)
    assert (cpu.ann_kinds, cuda.ann_kinds, jax.ann_kinds) == ({"hnsw"}, {"cagra"}, frozenset())


def test_ann_kinds_decide_where_an_index_is_built(monkeypatch):
    """The flag decides, not the backend's name: a cpu backend without graphs refuses hnsw,
    and the message names the backends that can build it and the kinds this one can."""

    class NoGraphs(bk.CpuBackend):
        name, ann_kinds = "nographs", frozenset()

    monkeypatch.setitem(bk._REGISTRY, "nographs", NoGraphs())
    with pytest.raises(ValueError, match=r"^kind='hnsw' runs on the cpu backend; on 'nographs' use 'exact'$"):
        gt.VectorIndex(8, kind="hnsw", backend="nographs")
    with pytest.raises(ValueError, match=r"^kind='cagra' runs on the cuda backend; on 'cpu' use 'exact' or 'hnsw'$"):
        gt.VectorIndex(8, kind="cagra", backend="cpu")
    assert len(gt.VectorIndex(8, backend="nographs")) == 0  # exact search needs no flag
