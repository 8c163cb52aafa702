"""How the CUDA indicators are launched, checked without a GPU (``gpu_trader.kernels.launch``,
``gpu_trader.kernels.scan``, ``gpu_trader.kernels.indicators``):

* the path policy is a pure function of (indicator, rows, T, device) that picks the batch path
  only when its threads fill the device (2000 x 2520 and a 10M-bar series take the scan on an
  H100; the same shape takes the batch path where it fills a small device);
* a call's launches and host -> device uploads, counted by ``LaunchRecorder``; the glue reads
  nothing back to the host (device arrays that refuse any host read);
* the bytes a call moves: the counting model ``scan.traffic_bytes`` against element accesses
  counted while the scan's own loop bodies run as plain Python;
* numba's "low occupancy" warning is ignored for every launch whichever numba provides the
  CUDA target, other warnings pass, and every kernel module launches through the one helper;
* CUDA kernels are compiled with numba's disk cache in gpu-trader's cache directory.

The simulator runs of the same kernels against the CPU backend are in ``tests/test_cuda_kernels.py``
(and the strategy / portfolio simulator tests in their own files).
"""
from __future__ import annotations

import ast
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from gpu_trader._internal import scan_loops
from gpu_trader._internal.indicator_specs import INPUT_FIELDS, SPECS
from gpu_trader.kernels import scan
from gpu_trader.kernels.scan import H100, DeviceProps

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from conftest import random_ohlcv  # noqa: E402

PARAMS = {"sma": [[5.0]], "ema": [[10.0]], "wma": [[4.0]], "rsi": [[14.0]], "macd": [[12.0, 26.0, 9.0]],
          "bollinger": [[6.0, 2.0]], "atr": [[14.0]], "stoch": [[5.0, 3.0, 3.0]], "obv": [[0.0]],
          "vwap": [[10.0]]}


def _inputs(name, n, T, seed=1, dtype=np.float64):
    data = dict(zip(("high", "low", "close", "volume"), random_ohlcv(n, T, seed, dtype)))
    return [np.ascontiguousarray(data[f]) for f in INPUT_FIELDS[name]]


# -- the path policy --------------------------------------------------------------------------
def test_policy_fills_an_h100_where_the_batch_path_cannot():
    # 2000 series x 2520 bars: 2000 threads are 0.7 % of an H100's 270,336 resident threads
    for name in scan_loops.SCAN_NAMES:
        assert scan.use_scan(name, 2000, 2520, H100), name
    L = scan.choose_chunk("ema", np.array([[20.0]]), 2000, 2520, H100)
    # about one chunk per resident thread (19 bars), capped so that the chunks in flight in the
    # single-pass scan fit L2_SHARE of the L2 (18 bars: 270,336 x 18 x 8 B = 39 MB of 50 MiB)
    assert L == 18 and abs(2000 * -(-2520 // L) - H100.resident_threads) < H100.resident_threads // 8
    assert H100.resident_threads * L * 8 <= scan.L2_SHARE * H100.l2_bytes
    # one 10M-bar series: the same cap (two waves of chunks); a windowed indicator, no carry:
    # about one chunk per resident thread
    assert scan.choose_chunk("ema", np.array([[20.0]]), 1, 10_000_000, H100) == 18
    L = scan.choose_chunk("sma", np.array([[2.0]]), 1, 10_000_000, H100)
    assert abs(-(-10_000_000 // L) - H100.resident_threads) < H100.resident_threads // 8
    # enough rows to fill the device: the batch path (one pass, no carries)
    assert not scan.use_scan("ema", H100.resident_threads, 2520, H100)
    assert not scan.use_scan("stoch", 1, 10**7, H100)  # no scan body
    assert not scan.use_scan("ema", 1, scan.SCAN_MIN_T - 1, H100)


def test_policy_follows_the_device_not_a_fixed_row_count():
    small = DeviceProps(sm_count=4, threads_per_sm=1024)
    rows = 6000
    assert scan.use_scan("ema", rows, 2520, H100)
    assert not scan.use_scan("ema", rows, 2520, small)
    # the chunk gives the small device about one thread per resident slot too
    L = scan.choose_chunk("sma", np.array([[20.0]]), 100, 100_000, small)
    assert L == -(-(100 * 100_000) // small.resident_threads)
    # the single pass: its in-flight chunks capped to the L2 share (here below the fill length)
    L = scan.choose_chunk("ema", np.array([[20.0]]), 100, 100_000, small)
    assert L == int(scan.L2_SHARE * small.l2_bytes) // (small.resident_threads * 8) < 2442
    # windowed indicators: at least 2 windows (8 for WMA) per chunk, never longer than T
    assert scan.choose_chunk("sma", np.array([[200.0]]), 1, 10**6, small) == max(400, -(-10**6 // 4096))
    assert scan.choose_chunk("wma", np.array([[50.0]]), 1, 300, small) == 300


def test_compute_takes_the_path_of_the_executors_device():
    from gpu_trader.kernels import indicators as ki
    from gpu_trader.kernels.launch import CudaExecutor, LaunchRecorder

    x = _inputs("ema", 3, 600)
    for device, kernels in ((H100, {"kernel"}), (DeviceProps(1, 4), {"rows"})):
        rec = LaunchRecorder(CudaExecutor(np, device=device), run=False)
        with np.errstate(invalid="ignore"):  # nothing ran: the buffers hold garbage
            ki.compute_xp("ema", x, np.array([[10.0]]), 1, xp=np, exe=rec)
        assert {name for name, _ in rec.launches} == kernels, (device, rec.launches)


def test_device_props_reads_the_cupy_device(monkeypatch):
    from gpu_trader.kernels import launch

    attrs = {"MultiProcessorCount": 78, "MaxThreadsPerMultiProcessor": 1536}
    device = types.SimpleNamespace(id=3, attributes=attrs)
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(Device=lambda i=None: device)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    launch._cupy_device_props.cache_clear()
    try:
        assert launch.device_props(fake) == DeviceProps(78, 1536)
        assert launch.device_props(np) == H100
    finally:
        launch._cupy_device_props.cache_clear()


def test_carry_scan_is_at_most_three_launches():
    for m in (1, 32, 33, 1000, 270_336, 10**7):
        blk = scan.carry_block(m)
        assert blk >= scan.PAIR_BLOCK and -(-m // blk) <= blk, m


# -- launches, uploads and host reads per call --------------------------------------------------
class HostReadError(AssertionError):
    pass


class DeviceOnly(np.ndarray):
    """A NumPy array standing in for a device array: any read to a host scalar or list fails."""

    def _refuse(self, *args, **kwargs):
        raise HostReadError("host read of a device array")

    __bool__ = __float__ = __int__ = __index__ = __complex__ = item = tolist = _refuse


class DeviceXp:
    """``numpy`` whose functions return :class:`DeviceOnly` arrays (``xp`` of the glue)."""

    def __getattr__(self, name):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def wrapped(*args, **kwargs):
            out = attr(*args, **kwargs)
            if isinstance(out, tuple):
                return tuple(o.view(DeviceOnly) if isinstance(o, np.ndarray) else o for o in out)
            return out.view(DeviceOnly) if isinstance(out, np.ndarray) else out

        return wrapped


class NoRunExecutor:
    """Records launches (name, threads) and uploads without running anything."""

    def __init__(self, xp, device=H100):
        self.xp, self.tpb, self.device = xp, 128, device
        self.launches, self.uploads = [], []

    def constant(self, host):
        self.uploads.append(host.shape)
        return np.array(host).view(DeviceOnly)

    def launch(self, kernel, nthreads, args):
        if nthreads > 0:
            self.launches.append((kernel.py_func.__name__, nthreads))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_call_reads_nothing_back_and_launches_little(name):
    """One series of 100k bars (scan, thousands of chunks) and 4 x 2 rows: the glue never reads
    a device value on the host, uploads the parameters once, and launches 1 numba kernel on
    the batch path; on the scan 1-2 first-valid searches, then phase 3 (windowed) or at most
    5 per affine pass (phase 1, a carry scan of at most 3, phase 3; MACD has two passes)."""
    from gpu_trader.kernels import indicators as ki

    xp = DeviceXp()
    params = np.array(PARAMS[name] * 2, dtype=np.float64)
    for n, T in ((1, 100_000), (4, 300)):
        exe = NoRunExecutor(xp)
        inputs = [xp.asarray(a) for a in _inputs(name, n, T)]
        with np.errstate(invalid="ignore"):  # nothing ran: the buffers hold garbage
            out = ki.compute_xp(name, inputs, params, SPECS[name][2], xp=xp, exe=exe)
        assert out.shape == (SPECS[name][2], 2, n, T)
        assert exe.uploads == [params.shape]
        path = ki.choose_path(name, 2 * n, T, H100)
        search = 2 if name in ("sma", "bollinger") else 1
        limit = 1 if path == "rows" else search + (1 if name in scan_loops.WINDOWED_NAMES else
                                                   10 if name == "macd" else 5)
        assert 1 <= len(exe.launches) <= limit, (name, n, T, exe.launches)


def test_device_only_arrays_do_refuse_host_reads():
    """The check above can fail: the reads a driver could hide all raise."""
    xp = DeviceXp()
    a = xp.asarray(np.arange(3.0))
    for read in (lambda: bool(xp.any(a)), lambda: float(a[:1].sum()), lambda: a.tolist()):
        with pytest.raises(HostReadError):
            read()


def test_a_fixed_carry_block_would_cost_more_launches():
    from gpu_trader.kernels import indicators as ki

    counts = {}
    x = _inputs("ema", 1, 1_000_000)
    for blk in (None, scan.PAIR_BLOCK):  # the three-phase scan (the single pass has no carry scan)
        exe = NoRunExecutor(DeviceXp())
        with np.errstate(invalid="ignore"):  # nothing ran: the buffers hold garbage
            scan.scan_compute("ema", x, np.array([[10.0]]), 1, np, ki.IndicatorLauncher(exe), pair_block=blk,
                              single_pass=False)
        counts[blk] = len(exe.launches)
    assert counts[None] == 6 and counts[scan.PAIR_BLOCK] == 10, counts
    exe = NoRunExecutor(DeviceXp())
    with np.errstate(invalid="ignore"):
        ki.compute_xp("ema", x, np.array([[10.0]]), 1, xp=np, exe=exe)
    assert len(exe.launches) == 2, exe.launches  # the first-valid search, the single pass


@pytest.fixture
def empty_constants(monkeypatch):
    """A fresh, empty device-constant cache (it is process-wide: other tests fill it)."""
    from collections import OrderedDict

    from gpu_trader.kernels import launch

    monkeypatch.setattr(launch, "_constants", OrderedDict())


def test_parameter_grid_is_uploaded_once_per_content(empty_constants):
    from gpu_trader.kernels import indicators as ki
    from gpu_trader.kernels.launch import CudaExecutor, LaunchRecorder

    x = _inputs("rsi", 2, 50)
    rng = np.random.default_rng(0)
    grid = np.array([[14.0], [float(rng.integers(2, 30))], [3.0 + rng.random()]])
    uploads = []
    for params in (grid, grid.copy(), grid[:2]):
        rec = LaunchRecorder(CudaExecutor(np), run=False)
        ki.compute_xp("rsi", x, params, 1, xp=np, exe=rec)
        uploads.append(len(rec.uploads))
    assert uploads == [1, 0, 1]


# -- bytes per call -------------------------------------------------------------------------------
class CountingArray:
    """An input or output array that records which items the current launch read and how often
    each item was written (the scan bodies run as plain Python on it)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype = a, a.shape, a.dtype
        self.touched = np.zeros(a.shape, dtype=bool)
        self.writes = np.zeros(a.shape, dtype=np.int64)

    def __getitem__(self, idx):
        if self.a.ndim == 2 and isinstance(idx, (int, np.integer)):  # x[row] in the window sums
            view = CountingArray(self.a[idx])
            view.touched, view.writes = self.touched[idx], self.writes[idx]
            return view
        self.touched[idx] = True
        return self.a[idx]

    def __setitem__(self, idx, value):
        self.writes[idx] += 1
        self.a[idx] = value

    def reshape(self, *shape):
        view = CountingArray(self.a.reshape(*shape))
        view.touched, view.writes = self.touched.reshape(*shape), self.writes.reshape(*shape)
        return view


class FootprintExecutor:
    """The scan's executor with the register_jitable bodies run as plain Python; after each
    launch it adds the number of distinct input items the launch read to ``footprint``."""

    def __init__(self, inputs):
        self.inputs = inputs
        self.footprint = 0
        self.single_passes = 0

    def _run(self, body, nthreads, args):
        for x in self.inputs:
            x.touched[...] = False
        for j in range(nthreads):
            body(j, *args)
        self.footprint += sum(int(x.touched.sum()) for x in self.inputs)

    def phase1(self, code, nthreads, *args):
        self._run(scan_loops.PHASE1[code], nthreads, args)

    def phase3(self, code, nthreads, *args):
        self._run(scan_loops.PHASE3[code], nthreads, args)

    def single_pass(self, code, nthreads, *args):
        """The single-pass launch: the CPU twin's driver (look-back in thread order) as plain Python."""
        from gpu_trader.cpu_fallback.scan import _cpu_driver

        drive = _cpu_driver("single_pass", code).py_func
        self._run(lambda j, *a: drive(nthreads, *a), 1, args)
        self.single_passes += 1

    def pairs_reduce(self, nthreads, *args):
        self._run(scan_loops.pairs_reduce, nthreads, args)

    def pairs_expand(self, nthreads, *args):
        self._run(scan_loops.pairs_expand, nthreads, args)

    def pairs_serial(self, nthreads, *args):
        self._run(scan_loops.pairs_serial, nthreads, args)


class AllocatingXp:
    """NumPy recording every allocation's size; the first 4-D one (the result) counts writes."""

    def __init__(self):
        self.result = None
        self.allocated = []

    def __getattr__(self, name):
        return getattr(np, name)

    def _new(self, shape, dtype, fill):
        a = np.full(shape, fill, dtype=dtype)
        self.allocated.append(a.nbytes)
        if len(shape) == 4 and self.result is None:
            self.result = CountingArray(a)
            return self.result
        return a

    def empty(self, shape, dtype=float):
        return self._new(shape, dtype, -7.0)

    def zeros(self, shape, dtype=float):
        return self._new(shape, dtype, 0)


@pytest.mark.parametrize("path", ["scan", "single_pass"])
@pytest.mark.parametrize("name", ["ema", "rsi", "atr", "obv", "sma", "wma", "bollinger", "vwap", "macd"])
def test_traffic_model_is_the_scans_footprint(name, path):
    """The model's input bytes are the distinct items each launch of the scan reads (the single
    pass reads its chunk twice in one launch: once from DRAM); every output item is written
    exactly once, in the result itself; nothing but the result (and MACD's line) is input-sized."""
    from gpu_trader.cpu_fallback import indicators as cpu

    n, T, chunk = 2, 96, 16
    params = np.array(PARAMS[name], dtype=np.float64)
    raw = _inputs(name, n, T, seed=4)
    raw[0][1, :5] = np.nan  # a late listing
    inputs = [CountingArray(a) for a in raw]
    xp, exe = AllocatingXp(), FootprintExecutor(inputs)
    with np.errstate(all="ignore"):
        out = scan.scan_compute(name, inputs, params, SPECS[name][2], xp, exe, chunk,
                                single_pass=path == "single_pass")
        ref = cpu.compute(name, raw, params, SPECS[name][2])
    assert out is xp.result
    np.testing.assert_allclose(out.a, ref, rtol=1e-12, atol=1e-12 * np.nanmax(np.abs(ref)), equal_nan=True)
    np.testing.assert_array_equal(out.writes, 1)
    assert exe.single_passes == (0 if path == "scan" or name in scan_loops.WINDOWED_NAMES else
                                 2 if name == "macd" else 1)
    n_out = SPECS[name][2]
    line = (3 if path == "scan" else 2) * n * T * 8 if name == "macd" else 0
    model = scan.traffic_bytes(name, n, 1, T, 8, path)
    # the launches' distinct input items: the model's passes, less the bars before each
    # series' first output that phase 1 / phase 3 skip, plus the first-valid search
    # (about one item per chunk)
    input_bytes = model["kernels"] + model["info"] - 8 * n_out * n * T - line
    counted = 8 * exe.footprint
    skipped = 8 * len(inputs) * n * 2 * 40
    search = 8 * len(inputs) * n * (T // chunk + 8)
    assert input_bytes - skipped <= counted <= input_bytes + search, (counted, input_bytes)
    big = [b for b in xp.allocated if b >= n * T * 8]
    assert sorted(big) == sorted([out.a.nbytes] + ([n * T * 8] if name == "macd" else [])), xp.allocated


def test_first_valid_search_reads_about_one_bar_per_chunk():
    T, chunk = 4000, 16
    raw = _inputs("atr", 3, T)
    raw[1][2, :1000] = np.nan  # a late listing in one input
    inputs = [CountingArray(a) for a in raw]
    xs = inputs + [inputs[0]]
    exe = FootprintExecutor(inputs)
    info = scan.series_info("atr", xs, np.zeros((1, 1)), T // chunk, np, exe)
    np.testing.assert_array_equal(info[:, 0], [0, 0, 1000])
    assert exe.footprint <= 3 * (3 * T // chunk + 1000)


def test_traffic_model_passes_per_call():
    """2000 x 2520 float64 EMA on the three-phase scan: 3 passes (phase 1 read, phase 3 read +
    write); the single-pass scan and the batch path 2 (one read, one write)."""
    N = 2000 * 2520 * 8
    assert scan.traffic_bytes("ema", 2000, 1, 2520, 8, "scan")["total"] == 3 * N
    assert scan.traffic_bytes("ema", 2000, 1, 2520, 8, "single_pass")["total"] == 2 * N
    assert scan.traffic_bytes("rsi", 2000, 1, 2520, 4, "rows")["total"] == 2 * N // 2
    # windowed indicators read once: SMA's scan is a copy plus its non-finite search
    assert scan.traffic_bytes("sma", 2000, 1, 2520, 8, "scan")["total"] == 3 * N
    assert scan.traffic_bytes("wma", 2000, 1, 2520, 8, "scan")["total"] == 2 * N
    with pytest.raises(ValueError, match="path"):
        scan.traffic_bytes("sma", 1, 1, 10, 8, "tiles")


# -- the launch helper --------------------------------------------------------------------------
class _WarningKernel:
    """Stands in for a numba kernel: launching it emits ``classes``' warnings."""

    def __init__(self, classes):
        self.classes = classes
        self.calls = 0

    def __getitem__(self, config):
        def run(nthreads, *args):
            self.calls += 1
            for cls in self.classes:
                warnings.warn("Grid size 1 will likely result in GPU under-utilization due to low occupancy.",
                              cls)
        return run


def test_launch_ignores_numbas_occupancy_warning_only():
    from numba.core.errors import NumbaPerformanceWarning

    from gpu_trader.kernels.launch import CudaExecutor, performance_warning_classes

    assert NumbaPerformanceWarning in performance_warning_classes()
    exe = CudaExecutor(np)
    kernel = _WarningKernel(performance_warning_classes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exe.launch(kernel, 3, ())
        assert kernel.calls == 1
        with pytest.raises(RuntimeWarning):
            exe.launch(_WarningKernel([RuntimeWarning]), 3, ())


def test_numba_cudas_own_warning_class_is_filtered(monkeypatch):
    """numba-cuda raises ``numba.cuda.core.errors.NumbaPerformanceWarning``, a class of its own."""
    from gpu_trader.kernels import launch

    class CudaPerformanceWarning(Warning):
        pass

    core = types.ModuleType("numba.cuda.core")
    errors = types.ModuleType("numba.cuda.core.errors")
    errors.NumbaPerformanceWarning = CudaPerformanceWarning
    core.errors = errors
    monkeypatch.setitem(sys.modules, "numba.cuda.core", core)
    monkeypatch.setitem(sys.modules, "numba.cuda.core.errors", errors)
    launch.performance_warning_classes.cache_clear()
    try:
        assert CudaPerformanceWarning in launch.performance_warning_classes()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            launch.CudaExecutor(np).launch(_WarningKernel([CudaPerformanceWarning]), 1, ())
    finally:
        launch.performance_warning_classes.cache_clear()


def test_every_kernel_module_launches_through_the_executor():
    """No ``kernel[grid, block](...)`` call outside kernels/launch.py: each launch gets the
    warning filter, the stream and the no-sync argument handling."""
    offenders = set()
    for path in sorted((ROOT / "gpu_trader" / "kernels").glob("*.py")):
        if path.name == "launch.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)
                    and isinstance(node.func.slice, ast.Tuple)):
                offenders.add(path.name)
    assert not offenders, offenders


def test_cuda_kernels_cache_in_the_package_cache_directory():
    from gpu_trader._internal import jit
    from gpu_trader.kernels import indicators as ki
    from gpu_trader.kernels import portfolio, strategies

    directory = jit.cache_dir()
    if directory is None:
        pytest.skip("no usable cache directory on this machine")
    kernels = [ki.rows_kernel(SPECS["ema"][0]), ki.scan_kernel("phase1", SPECS["ema"][0]),
               ki.scan_kernel("pairs_serial"), strategies._rows_kernel(), portfolio._kernel()]
    for kernel in kernels:
        cache = getattr(kernel, "_cache", None)
        assert cache is not None and type(cache).__name__ == "CUDACache", kernel
        assert Path(cache._cache_path).is_relative_to(directory), cache._cache_path
    from numba.core import config

    assert config.CACHE_DIR != directory  # the user's setting is restored after decorating


def test_every_cuda_kernel_is_compiled_through_the_disk_cache():
    """No kernel module decorates with ``cuda.jit`` directly: every kernel goes through
    ``cuda_jit_cached`` so a process loads what an earlier one compiled."""
    direct = []
    for path in sorted((ROOT / "gpu_trader" / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for deco in node.decorator_list:
                    target = deco.func if isinstance(deco, ast.Call) else deco
                    if isinstance(target, ast.Attribute) and target.attr == "jit":
                        direct.append(f"{path.name}:{node.name}")
    assert not direct, direct


@pytest.mark.parametrize("entry, seed", [("backtest_xp", 1), ("sweep_xp", 2)])
def test_strategy_rules_are_uploaded_once_per_content(entry, seed, empty_constants):
    """The rule arrays (kinds, feature rows, k) go through the executor's constant cache: a
    repeated rule set (a sweep's next symbol chunk) uploads nothing; new rules upload again."""
    from gpu_trader.kernels import strategies as ks
    from gpu_trader.kernels.launch import CudaExecutor, LaunchRecorder

    rng = np.random.default_rng(seed)
    P, n, T = 40, 2, 16
    close, feats = rng.random((n, T)) + 1.0, rng.random((2, n, T))
    rules = (rng.integers(0, 2, P), rng.integers(0, 2, P), rng.integers(0, 2, P), rng.random(P))
    extra = (0.0, 15.9) if entry == "sweep_xp" else (0.0,)
    uploads = []
    for r in (rules, tuple(a.copy() for a in rules), (*rules[:3], rules[3] + 1.0)):
        rec = LaunchRecorder(CudaExecutor(np), run=False)
        getattr(ks, entry)(close, feats, *r, *extra, xp=np, exe=rec)
        uploads.append(len(rec.uploads))
        assert [name for name, _ in rec.launches] == ["rows"]
    assert uploads == [4, 0, 1]
