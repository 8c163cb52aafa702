"""How the GPU modules launch their numba.cuda kernels: on a device, in the simulator, or to PTX.

Every kernel of :mod:`gpu_trader.kernels` that runs one thread per work item is launched
through an executor's :meth:`~CudaExecutor.launch` ``(kernel, nthreads, args)``: a 1-D grid
of ``ceil(nthreads / threads_per_block)`` blocks of ``threads_per_block`` threads
(default :data:`THREADS_PER_BLOCK`), the kernel called as ``kernel(nthreads, *args)``
(it returns at once on threads ``j >= nthreads``). The GPU modules take the executor as
an argument (``exe=``), so the same driver code

* runs on the device (:class:`CudaExecutor` with ``xp = cupy``: CuPy arrays, CuPy's
  current stream and device);
* runs in numba's CUDA simulator (:class:`CudaExecutor` with ``xp = numpy`` under
  ``NUMBA_ENABLE_CUDASIM=1``, set before numba is first imported): the tests' way to
  exercise launchers and kernels without a GPU;
* compiles every kernel it would launch to PTX without running anything
  (:class:`PtxExecutor`): the tests' check that the kernels build for a real GPU.
"""
from __future__ import annotations

import warnings

import numpy as np
from numba import config as _numba_config
from numba import cuda

__all__ = ["THREADS_PER_BLOCK", "CudaExecutor", "PtxExecutor"]

THREADS_PER_BLOCK = 128


class CudaExecutor:
    """Launches kernels: on the device (CuPy arrays, on CuPy's current stream and device)
    or, under ``NUMBA_ENABLE_CUDASIM=1``, in numba's simulator (NumPy arrays)."""

    def __init__(self, xp, threads_per_block: int = THREADS_PER_BLOCK):
        self.xp = xp
        self.tpb = int(threads_per_block)
        self.simulated = bool(_numba_config.ENABLE_CUDASIM)

    def launch(self, kernel, nthreads: int, args) -> None:
        """Run ``kernel(nthreads, *args)`` on a 1-D grid covering ``nthreads`` threads (nothing
        when ``nthreads <= 0``). On the device the launch is queued on CuPy's current stream
        without a host wait (the arguments were produced on that stream)."""
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


class PtxExecutor(CudaExecutor):
    """Compiles each kernel a call would launch to PTX (``numba.cuda.compile_ptx``) with the
    exact argument types of that launch, without running anything; ``self.ptx`` maps
    "kernel(argument types)" -> PTX text (each distinct kernel and signature once). Needs NVVM
    (e.g. ``CUDA_HOME`` pointing at a CUDA toolkit or at the ``nvidia-cuda-nvcc-cu12`` wheel's
    ``nvidia/cuda_nvcc``), not a GPU.

    A check tool, meant for a process of its own: numba compiles the device functions a
    kernel calls for the *current device's* compute capability, so while compiling, the
    device query is answered with ``cc`` (device functions compiled here stay cached for
    that capability in this process).
    """

    def __init__(self, cc=(9, 0)):
        super().__init__(np)
        self.cc = tuple(cc)
        self.ptx: dict[str, str] = {}

    def launch(self, kernel, nthreads, args) -> None:
        """Compile ``kernel`` for the types of ``(nthreads, *args)`` into :attr:`ptx`."""
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
