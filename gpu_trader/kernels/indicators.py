"""GPU twin of :mod:`gpu_trader.cpu_fallback.indicators`: numba.cuda kernels on CuPy arrays.

``compute(name, inputs, params, n_out)`` has the CPU driver's contract -- inputs are
1-4 C-contiguous ``(n_series, T)`` arrays of one float dtype, ``params`` is
``(P, k)`` float64, the result is ``(n_out, P, n_series, T)`` in the inputs' dtype
(float32 stays float32; every accumulation is float64) -- with CuPy arrays in and
out. Two paths, chosen per call:

* **rows** (the batch path): one launch, one thread per (parameter set, series),
  running the very same per-series loop bodies as the CPU backend
  (:func:`gpu_trader._internal.indicator_loops.dispatch`, compiled as CUDA device code).
  Thread ``j = p*n + i`` walks row ``x[i]`` of the user's inputs and writes
  ``out[:, p, i]`` of the ``(n_out, P, n, T)`` result: no layout copies (a warp's 32
  series are 32 sectors per step, each serving its thread's next ``32 / itemsize`` steps
  from the L1 cache; :func:`gpu_trader.kernels.scan.traffic_bytes` counts the bytes).
* **scan** (too few rows to fill the device): the chunked 3-phase scans of
  :mod:`gpu_trader._internal.scan_loops` (run by :mod:`gpu_trader.kernels.scan`), one
  thread per (row, chunk of ``L`` bars), so 2000 series of 2520 bars or a single
  10M-bar series still fill the GPU. Chosen by occupancy (:func:`choose_path`,
  :func:`gpu_trader.kernels.scan.use_scan`: the batch path's ``P * n_series`` threads
  against the device's resident threads), for every indicator but ``stoch``; the chunk
  length gives about one thread per resident slot (:func:`gpu_trader.kernels.scan.choose_chunk`).

Per call, the batch path is one numba launch; the scan path is one or two first-valid
searches, then phase 3 (windowed indicators) or one single-pass launch per affine pass
(:func:`gpu_trader.kernels.scan.single_pass_kernel`, decoupled look-back; MACD has two passes;
``single_pass=False`` keeps the three-phase scan: phase 1, a carry scan of at most 3
launches, phase 3).
The parameter grid is uploaded once per content and device
(:meth:`~gpu_trader.kernels.launch.CudaExecutor.constant`), and nothing is read back to
the host.

Kernels are specialised per indicator (the indicator code is a compile-time constant
of each kernel), compiled on first use and cached on disk
(:func:`gpu_trader._internal.jit.cuda_jit_cached`); they run one thread per work item and are
launched by an executor of :mod:`gpu_trader.kernels.launch` (1-D grids of
``THREADS_PER_BLOCK`` (128) threads by default), through :class:`IndicatorLauncher`.

Everything above the kernels is written against an ``xp`` module, so
:func:`compute_xp` runs the same launcher on NumPy arrays under numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is first imported); that is
how the tests exercise it on machines without a GPU.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from .._internal import indicator_loops
from .._internal import scan_loops
from .._internal.indicator_specs import INPUT_FIELDS, SPECS
from . import scan
from .._internal.jit import cuda_jit_cached
from .launch import CudaExecutor, default_executor

__all__ = ["compute", "compute_many", "compute_xp", "choose_path"]


# -- kernels (built per indicator code on first use) ------------------------------------
@functools.lru_cache(maxsize=None)
def rows_kernel(code: int):
    """Batch kernel for one indicator: thread j = p*n + i runs series i with parameter set p,
    reading the inputs ``(n, T)`` and writing ``out`` ``(n_out, P, n, T)`` in place."""

    @cuda_jit_cached()
    def rows(nthreads, a, b, c, d, params, out):
        j = cuda.grid(1)
        if j < nthreads:
            n = a.shape[0]
            p = j // n
            i = j - p * n
            indicator_loops.dispatch(code, a[i], b[i], c[i], d[i], params[p], out[:, p, i])

    return rows


@functools.lru_cache(maxsize=None)
def scan_kernel(kind: str, code: int = 0):
    """Kernel for one scan step: ``kind`` in phase1, phase3, pairs_reduce, pairs_expand, pairs_serial."""
    if kind == "phase1":
        body = scan_loops.PHASE1[code]

        @cuda_jit_cached()
        def kernel(nthreads, nc, T, a, b, c, d, params, info, A, B, seed):
            j = cuda.grid(1)
            if j < nthreads:
                body(j, nc, T, a, b, c, d, params, info, A, B, seed)

    elif kind == "phase3":
        body = scan_loops.PHASE3[code]

        @cuda_jit_cached()
        def kernel(nthreads, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
            j = cuda.grid(1)
            if j < nthreads:
                body(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out)

    elif kind == "pairs_reduce":

        @cuda_jit_cached()
        def kernel(nthreads, m, blk, A, B, A2, B2):
            j = cuda.grid(1)
            if j < nthreads:
                scan_loops.pairs_reduce(j, m, blk, A, B, A2, B2)

    elif kind == "pairs_expand":

        @cuda_jit_cached()
        def kernel(nthreads, m, blk, A, B, A2in, B2in, Ain, Bin):
            j = cuda.grid(1)
            if j < nthreads:
                scan_loops.pairs_expand(j, m, blk, A, B, A2in, B2in, Ain, Bin)

    elif kind == "pairs_serial":

        @cuda_jit_cached()
        def kernel(nthreads, m, A, B, Ain, Bin):
            j = cuda.grid(1)
            if j < nthreads:
                scan_loops.pairs_serial(j, m, A, B, Ain, Bin)

    else:
        raise ValueError(kind)
    return kernel


# -- the steps of both paths, as kernel launches ------------------------------------------
class IndicatorLauncher:
    """The executor :func:`rows_compute` and :func:`gpu_trader.kernels.scan.scan_compute` take:
    each step (``rows``, ``phase1``, ``phase3``, ``pairs_*``, called with the thread count
    first) launches this module's kernel for it through ``launcher`` (a
    :class:`~gpu_trader.kernels.launch.CudaExecutor`, or a
    :class:`~gpu_trader.kernels.launch.PtxExecutor` that compiles it to PTX instead)."""

    def __init__(self, launcher: CudaExecutor):
        self.launcher = launcher

    def rows(self, code, nthreads, *args):
        self.launcher.launch(rows_kernel(code), nthreads, args)

    def phase1(self, code, nthreads, *args):
        self.launcher.launch(scan_kernel("phase1", code), nthreads, args)

    def phase3(self, code, nthreads, *args):
        self.launcher.launch(scan_kernel("phase3", code), nthreads, args)

    def single_pass(self, code, nthreads, *args):
        self.launcher.launch(scan.single_pass_kernel(code), nthreads, args)

    def pairs_reduce(self, nthreads, *args):
        self.launcher.launch(scan_kernel("pairs_reduce"), nthreads, args)

    def pairs_expand(self, nthreads, *args):
        self.launcher.launch(scan_kernel("pairs_expand"), nthreads, args)

    def pairs_serial(self, nthreads, *args):
        self.launcher.launch(scan_kernel("pairs_serial"), nthreads, args)


# -- drivers -------------------------------------------------------------------------------
def choose_path(name: str, n_rows: int, T: int, device=None) -> str:
    """"scan" or "rows" for ``name`` over ``n_rows = P * n_series`` rows of ``T`` bars on
    ``device`` (:class:`~gpu_trader.kernels.scan.DeviceProps`, default an H100)."""
    return "scan" if scan.use_scan(name, n_rows, T, device) else "rows"


def rows_compute(code: int, inputs, params, n_out: int, xp, exe: IndicatorLauncher):
    """The batch path: one thread per (parameter set, series), on the user's layout."""
    n, T = inputs[0].shape
    P = params.shape[0]
    xs = list(inputs) + [inputs[0]] * (4 - len(inputs))
    out = xp.empty((n_out, P, n, T), dtype=inputs[0].dtype)
    exe.rows(code, P * n, xs[0], xs[1], xs[2], xs[3], params, out)
    return out


def compute_xp(name: str, inputs, params, n_out: int, *, xp, exe=None, path: str | None = None,
               chunk: int | None = None, pair_block: int | None = None):
    """``compute`` against any array module ``xp`` (CuPy on a GPU, NumPy in the simulator).

    ``exe`` launches the kernels (default :func:`~gpu_trader.kernels.launch.default_executor`
    ``(xp)``; the tests pass one with a small block size, a
    :class:`~gpu_trader.kernels.launch.LaunchRecorder` or a
    :class:`~gpu_trader.kernels.launch.PtxExecutor`). ``path`` forces "rows" or "scan"
    (default: :func:`choose_path` for the executor's device); ``chunk`` and ``pair_block``
    override the scan's chunk length and carry-scan block (tests use them to force many
    chunks and a multi-level carry scan).
    """
    code = SPECS[name][0]
    if not isinstance(params, np.ndarray):
        params = xp.asnumpy(params)
    host = np.ascontiguousarray(params, dtype=np.float64).reshape(params.shape[0], -1)
    if host.shape[1] == 0:  # no parameters (OBV): keep the kernel argument non-empty
        host = np.zeros((host.shape[0], 1), dtype=np.float64)
    inputs = [xp.ascontiguousarray(x) for x in inputs]
    n, T = inputs[0].shape
    exe = exe or default_executor(xp)
    if path is None:
        path = choose_path(name, host.shape[0] * n, T, exe.device)
    steps = IndicatorLauncher(exe)
    dparams = exe.constant(host)
    if path == "scan":
        if chunk is None:
            chunk = scan.choose_chunk(name, host, host.shape[0] * n, T, exe.device)
        return scan.scan_compute(name, inputs, dparams, n_out, xp, steps, chunk, pair_block)
    if path != "rows":
        raise ValueError(f"path must be 'rows' or 'scan', got {path!r}")
    return rows_compute(code, inputs, dparams, n_out, xp, steps)


def compute(name: str, inputs, params, n_out: int, *, path: str | None = None,
            chunk: int | None = None):
    """Run indicator ``name`` over a batch on the GPU.

    inputs: sequence of 1-4 C-contiguous ``(n_series, T)`` CuPy arrays of one float dtype.
    params: ``(n_param_sets, n_params)`` float64 (NumPy or CuPy).
    Returns ``(n_out, n_param_sets, n_series, T)`` CuPy array in the inputs' dtype.
    """
    import cupy

    return compute_xp(name, inputs, params, n_out, xp=cupy, path=path, chunk=chunk)


def compute_many(names, params_list, fields):
    """The CPU driver's ``compute_many`` contract on the GPU: several indicators over the same
    inputs. names: indicator names; params_list: one ``(P, k)`` float64 array per name;
    fields: OHLCV field name -> C-contiguous ``(n_series, T)`` CuPy array. Returns one
    ``(n_out, P, n_series, T)`` CuPy array per name (one launch, or one scan, per name)."""
    return [compute(name, [fields[f] for f in INPUT_FIELDS[name]], params, SPECS[name][2])
            for name, params in zip(names, params_list)]
