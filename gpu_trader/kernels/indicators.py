"""GPU twin of :mod:`gpu_trader.cpu_fallback.indicators`: numba.cuda kernels on CuPy arrays.

``compute(name, inputs, params, n_out)`` has the CPU driver's contract -- inputs are
1-4 C-contiguous ``(n_series, T)`` arrays of one float dtype, ``params`` is
``(P, k)`` float64, the result is ``(n_out, P, n_series, T)`` in the inputs' dtype
(float32 stays float32; every accumulation is float64) -- with CuPy arrays in and
out. Two paths, chosen per call:

* **rows** (the batch path): one launch, one thread per (parameter set, series),
  running the very same per-series loop bodies as the CPU backend
  (:func:`gpu_trader.indicator_math.dispatch`, compiled as CUDA device code). The
  kernel works on a time-major layout: inputs are transposed to ``(T, n)`` and thread
  ``j = p*n + i`` walks the strided column ``x[:, i]`` and writes
  ``out[:, p, :, i]`` of an ``(n_out, P, T, n)`` buffer, so at each time step the
  threads of a warp (consecutive series) touch consecutive addresses. The result is
  transposed back to ``(n_out, P, n, T)``.
* **scan** (few rows, long series): the chunked 3-phase scans of
  :mod:`gpu_trader.scan_math`, one thread per (row, chunk of ``L`` bars), so a
  single 10M-bar series still fills the GPU. Used automatically when
  ``P * n_series < scan_math.SCAN_MAX_ROWS`` (4096) and ``T >= scan_math.SCAN_MIN_T``
  (4096) for every indicator but ``stoch``; the chunk length targets
  ``scan_math.TARGET_THREADS`` (2**17) threads, at least ``MIN_CHUNK`` (64) bars (and
  2 windows for SMA/Bollinger/VWAP, 8 for WMA).

Launch configuration: 1-D grids of ``THREADS_PER_BLOCK`` (128) threads, one thread
per work item (``ceil(items / 128)`` blocks). Kernels are specialised per indicator
(the indicator code is a compile-time constant of each kernel) and compiled on
first use.

Everything above the kernels is written against an ``xp`` module, so
:func:`compute_xp` runs the same launcher on NumPy arrays under numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is first imported); that is
how the tests exercise it on machines without a GPU.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
from numba import config as _numba_config
from numba import cuda

from .. import indicator_math as im
from .. import scan_math as sm
from ..indicator_specs import SPECS

__all__ = ["compute", "compute_many", "compute_xp", "choose_path", "CudaExecutor", "PtxExecutor", "THREADS_PER_BLOCK"]

THREADS_PER_BLOCK = 128


# -- kernels (built per indicator code on first use) ------------------------------------
@functools.lru_cache(maxsize=None)
def rows_kernel(code: int):
    """Batch kernel for one indicator: thread j = p*n + i runs series i with parameter set p."""

    @cuda.jit
    def rows(nthreads, a, b, c, d, params, out):
        j = cuda.grid(1)
        if j < nthreads:
            n = a.shape[1]
            p = j // n
            i = j - p * n
            im.dispatch(code, a[:, i], b[:, i], c[:, i], d[:, i], params[p], out[:, p, :, i])

    return rows


@functools.lru_cache(maxsize=None)
def scan_kernel(kind: str, code: int = 0):
    """Kernel for one scan step: ``kind`` in phase1, phase3, pairs_reduce, pairs_expand, pairs_serial."""
    if kind == "phase1":
        body = sm.PHASE1[code]

        @cuda.jit
        def kernel(nthreads, nc, T, a, b, c, d, params, info, A, B, seed):
            j = cuda.grid(1)
            if j < nthreads:
                body(j, nc, T, a, b, c, d, params, info, A, B, seed)

    elif kind == "phase3":
        body = sm.PHASE3[code]

        @cuda.jit
        def kernel(nthreads, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
            j = cuda.grid(1)
            if j < nthreads:
                body(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out)

    elif kind == "pairs_reduce":

        @cuda.jit
        def kernel(nthreads, m, blk, A, B, A2, B2):
            j = cuda.grid(1)
            if j < nthreads:
                sm.pairs_reduce(j, m, blk, A, B, A2, B2)

    elif kind == "pairs_expand":

        @cuda.jit
        def kernel(nthreads, m, blk, A, B, A2in, B2in, Ain, Bin):
            j = cuda.grid(1)
            if j < nthreads:
                sm.pairs_expand(j, m, blk, A, B, A2in, B2in, Ain, Bin)

    elif kind == "pairs_serial":

        @cuda.jit
        def kernel(nthreads, m, A, B, Ain, Bin):
            j = cuda.grid(1)
            if j < nthreads:
                sm.pairs_serial(j, m, A, B, Ain, Bin)

    else:
        raise ValueError(kind)
    return kernel


# -- executors: how a kernel is launched over nthreads work items --------------------------
class CudaExecutor:
    """Launches the kernels: on the device (CuPy arrays, on CuPy's current stream and
    device) or, under ``NUMBA_ENABLE_CUDASIM=1``, in numba's simulator (NumPy arrays)."""

    def __init__(self, xp, threads_per_block: int = THREADS_PER_BLOCK):
        self.xp = xp
        self.tpb = int(threads_per_block)
        self.simulated = bool(_numba_config.ENABLE_CUDASIM)

    def _launch(self, kernel, nthreads: int, args) -> None:
        if nthreads <= 0:
            return
        blocks = -(-nthreads // self.tpb)
        if self.simulated or self.xp is np:
            kernel[blocks, self.tpb](nthreads, *args)
            return
        import cupy
        from numba.core.errors import NumbaPerformanceWarning

        cp_stream = cupy.cuda.get_current_stream()
        with cuda.gpus[cupy.cuda.Device().id], warnings.catch_warnings():
            # small batches give small grids; that is expected, not worth a warning per call
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            stream = cuda.external_stream(cp_stream.ptr) if cp_stream.ptr else cuda.default_stream()
            # sync=False: the arrays were produced on this very stream, so no host wait
            dev = [cuda.as_cuda_array(x, sync=False) if hasattr(x, "__cuda_array_interface__") else x
                   for x in args]
            kernel[blocks, self.tpb, stream](nthreads, *dev)

    def rows(self, code, nthreads, *args):
        self._launch(rows_kernel(code), nthreads, args)

    def phase1(self, code, nthreads, *args):
        self._launch(scan_kernel("phase1", code), nthreads, args)

    def phase3(self, code, nthreads, *args):
        self._launch(scan_kernel("phase3", code), nthreads, args)

    def pairs_reduce(self, nthreads, *args):
        self._launch(scan_kernel("pairs_reduce"), nthreads, args)

    def pairs_expand(self, nthreads, *args):
        self._launch(scan_kernel("pairs_expand"), nthreads, args)

    def pairs_serial(self, nthreads, *args):
        self._launch(scan_kernel("pairs_serial"), nthreads, args)


class PtxExecutor(CudaExecutor):
    """Compiles each kernel a call would launch to PTX (``numba.cuda.compile_ptx``) with the
    exact argument types of that launch, without running anything; ``self.ptx`` maps
    "kernel(argument types)" -> PTX text (each distinct kernel and signature once). Needs NVVM (e.g. ``CUDA_HOME`` pointing at a CUDA toolkit or
    at the ``nvidia-cuda-nvcc-cu12`` wheel's ``nvidia/cuda_nvcc``), not a GPU.

    A check tool, meant for a process of its own: numba compiles the device functions a
    kernel calls for the *current device's* compute capability, so while compiling, the
    device query is answered with ``cc`` (device functions compiled here stay cached for
    that capability in this process).
    """

    def __init__(self, cc=(9, 0)):
        super().__init__(np)
        self.cc = tuple(cc)
        self.ptx: dict[str, str] = {}

    def _launch(self, kernel, nthreads, args) -> None:
        import types

        from numba import typeof
        from numba.cuda import dispatcher as cuda_dispatcher

        sig = tuple(typeof(v) for v in (nthreads, *args))
        key = f"{kernel.py_func.__qualname__}[{id(kernel)}]{sig}"
        if key in self.ptx:
            return
        fake = types.SimpleNamespace(compute_capability=self.cc)
        saved = cuda_dispatcher.get_current_device
        cuda_dispatcher.get_current_device = lambda: fake
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=self.cc)
        finally:
            cuda_dispatcher.get_current_device = saved
        self.ptx[key] = ptx


# -- drivers -------------------------------------------------------------------------------
def choose_path(name: str, n_rows: int, T: int) -> str:
    """"scan" or "rows" for ``name`` over ``n_rows = P * n_series`` rows of ``T`` bars."""
    return "scan" if sm.use_scan(name, n_rows, T) else "rows"


def rows_compute(code: int, inputs, params, n_out: int, xp, exe):
    """The batch path: time-major transposed inputs, one thread per (parameter set, series)."""
    n, T = inputs[0].shape
    P = params.shape[0]
    xs = [xp.ascontiguousarray(x.T) for x in inputs]  # (T, n)
    xs = xs + [xs[0]] * (4 - len(xs))
    out = xp.empty((n_out, P, T, n), dtype=inputs[0].dtype)
    exe.rows(code, P * n, xs[0], xs[1], xs[2], xs[3], params, out)
    return xp.ascontiguousarray(out.transpose(0, 1, 3, 2))


def compute_xp(name: str, inputs, params, n_out: int, *, xp, exe=None, path: str | None = None,
               chunk: int | None = None, pair_block: int = sm.PAIR_BLOCK):
    """``compute`` against any array module ``xp`` (CuPy on a GPU, NumPy in the simulator).

    ``path`` forces "rows" or "scan" (default: :func:`choose_path`); ``chunk`` and
    ``pair_block`` override the scan's chunk length and carry-scan block (tests use
    them to force many chunks and a multi-level carry scan).
    """
    code = SPECS[name][0]
    if not isinstance(params, np.ndarray):
        params = xp.asnumpy(params)
    host = np.ascontiguousarray(params, dtype=np.float64).reshape(params.shape[0], -1)
    if host.shape[1] == 0:  # no parameters (OBV): keep the kernel argument non-empty
        host = np.zeros((host.shape[0], 1), dtype=np.float64)
    inputs = [xp.ascontiguousarray(x) for x in inputs]
    n, T = inputs[0].shape
    if path is None:
        path = choose_path(name, host.shape[0] * n, T)
    if exe is None:
        exe = CudaExecutor(xp)
    dparams = xp.asarray(host)
    if path == "scan":
        if chunk is None:
            chunk = sm.choose_chunk(name, host, host.shape[0] * n, T)
        return sm.scan_compute(name, inputs, dparams, n_out, xp, exe, chunk, pair_block)
    if path != "rows":
        raise ValueError(f"path must be 'rows' or 'scan', got {path!r}")
    return rows_compute(code, inputs, dparams, n_out, xp, exe)


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
    from ..indicator_specs import INPUT_FIELDS

    return [compute(name, [fields[f] for f in INPUT_FIELDS[name]], params, SPECS[name][2])
            for name, params in zip(names, params_list)]
