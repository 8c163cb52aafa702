"""How the GPU modules launch their numba.cuda kernels: on a device, in the simulator, or to PTX.

Every numba.cuda kernel of :mod:`gpu_trader.kernels` runs one thread per work item and is
launched through an executor's :meth:`~CudaExecutor.launch` ``(kernel, nthreads, args)``: a
1-D grid of ``ceil(nthreads / threads_per_block)`` blocks of ``threads_per_block`` threads
(default :data:`THREADS_PER_BLOCK`), the kernel called as ``kernel(nthreads, *args)`` (it
returns at once on threads ``j >= nthreads``). Modules without an executor argument use
:func:`default_executor` ``(xp)``. The GPU modules take the executor as an argument
(``exe=``), so the same driver code

* runs on the device (:class:`CudaExecutor` with ``xp = cupy``: CuPy arrays, CuPy's
  current stream and device);
* runs in numba's CUDA simulator (:class:`CudaExecutor` with ``xp = numpy`` under
  ``NUMBA_ENABLE_CUDASIM=1``, set before numba is first imported): the tests' way to
  exercise launchers and kernels without a GPU;
* compiles every kernel it would launch to PTX without running anything
  (:class:`PtxExecutor`): the tests' check that the kernels build for a real GPU.

Every launch goes through :meth:`CudaExecutor.launch`, which

* ignores numba's "low occupancy" performance warning for the launch (small batches give
  small grids; that is expected), whichever numba provides the CUDA target: the built-in
  ``numba.cuda`` raises ``numba.core.errors.NumbaPerformanceWarning``, numba-cuda its own
  ``numba.cuda.core.errors.NumbaPerformanceWarning`` (:func:`performance_warning_classes`);
* hands CuPy arrays to numba with ``as_cuda_array(sync=False)`` on CuPy's current stream,
  so numba neither waits on the host per argument nor launches on another stream.

Host -> device copies of small constant arrays (parameter grids) go through
:meth:`CudaExecutor.constant`, which keeps one device copy per content (so a repeated call
uploads nothing); :class:`LaunchRecorder` counts launches and uploads per call (the tests'
proof of "launches per call" and "no per-call uploads").

:func:`device_props` reads the device's :class:`~gpu_trader.kernels.scan.DeviceProps` (how many
threads it holds at once) for the path policies; :data:`~gpu_trader.kernels.scan.H100` where
there is no device.
"""
from __future__ import annotations

import functools
import threading
import warnings
from collections import OrderedDict

import numpy as np
from numba import config as _numba_config
from numba import cuda

from .scan import H100, DeviceProps

__all__ = [
    "THREADS_PER_BLOCK", "device_props", "performance_warning_classes",
    "CudaExecutor", "PtxExecutor", "LaunchRecorder", "default_executor",
]

THREADS_PER_BLOCK = 128
# Device copies of constant arrays kept per process (parameter grids: a few KB each); a
# larger array is uploaded on every call instead of being kept.
MAX_CONSTANTS = 256
MAX_CONSTANT_BYTES = 1 << 16


@functools.lru_cache(maxsize=None)
def _cupy_device_props(device_id: int) -> DeviceProps:
    import cupy

    attrs = cupy.cuda.Device(device_id).attributes
    return DeviceProps(int(attrs["MultiProcessorCount"]), int(attrs["MaxThreadsPerMultiProcessor"]))


def device_props(xp) -> DeviceProps:
    """The current device's :class:`DeviceProps` for CuPy (read once per device from its
    attributes); :data:`H100` for any other array module (NumPy in the simulator)."""
    if xp is np or getattr(xp, "__name__", "") != "cupy":
        return H100
    return _cupy_device_props(xp.cuda.Device().id)


@functools.lru_cache(maxsize=1)
def performance_warning_classes() -> tuple[type[Warning], ...]:
    """numba's "low occupancy" warning classes: ``numba.core.errors``'s, and numba-cuda's
    ``numba.cuda.core.errors`` one where numba-cuda provides the CUDA target."""
    from numba.core.errors import NumbaPerformanceWarning

    classes = [NumbaPerformanceWarning]
    try:
        from numba.cuda.core.errors import NumbaPerformanceWarning as CudaPerformanceWarning
    except ImportError:  # numba's built-in CUDA target: it warns with numba.core's class
        pass
    else:
        if CudaPerformanceWarning not in classes:
            classes.append(CudaPerformanceWarning)
    return tuple(classes)


class CudaExecutor:
    """Launches kernels: on the device (CuPy arrays, on CuPy's current stream and device)
    or, under ``NUMBA_ENABLE_CUDASIM=1``, in numba's simulator (NumPy arrays). ``device``
    fixes the :class:`~gpu_trader.kernels.scan.DeviceProps` the path policies see (default:
    the current device's, :func:`device_props`)."""

    def __init__(self, xp, threads_per_block: int = THREADS_PER_BLOCK, device: DeviceProps | None = None):
        self.xp = xp
        self.tpb = int(threads_per_block)
        self.simulated = bool(_numba_config.ENABLE_CUDASIM)
        self._device = device

    @property
    def device(self) -> DeviceProps:
        """The device the policies plan for: the one given, else the current one."""
        return self._device or device_props(self.xp)

    def constant(self, host: np.ndarray):
        """A device copy of the host array ``host`` (kernels only read it). Up to
        :data:`MAX_CONSTANT_BYTES`, one copy is shared by every call with the same content:
        uploaded once per process and device (with NumPy, a private copy, so the simulator
        follows the same path); a larger array is copied per call."""
        return _device_constant(self.xp, np.ascontiguousarray(host))

    def launch(self, kernel, nthreads: int, args) -> None:
        """Run ``kernel(nthreads, *args)`` on a 1-D grid covering ``nthreads`` threads (nothing
        when ``nthreads <= 0``). On the device the launch is queued on CuPy's current stream
        without a host wait (the arguments were produced on that stream)."""
        if nthreads <= 0:
            return
        blocks = -(-nthreads // self.tpb)
        with warnings.catch_warnings():
            # small batches give small grids; that is expected, not worth a warning per call
            for cls in performance_warning_classes():
                warnings.simplefilter("ignore", cls)
            if self.simulated or self.xp is np:
                kernel[blocks, self.tpb](nthreads, *args)
                return
            import cupy

            cp_stream = cupy.cuda.get_current_stream()
            with cuda.gpus[cupy.cuda.Device().id]:
                stream = cuda.external_stream(cp_stream.ptr) if cp_stream.ptr else cuda.default_stream()
                # sync=False: the arrays were produced on this very stream, so no host wait
                dev = [cuda.as_cuda_array(x, sync=False) if hasattr(x, "__cuda_array_interface__") else x
                       for x in args]
                kernel[blocks, self.tpb, stream](nthreads, *dev)


_constants: OrderedDict = OrderedDict()
_uploads = [0]  # host -> device copies made by _device_constant in this process
_constants_lock = threading.Lock()


def _device_constant(xp, host: np.ndarray):
    if host.nbytes > MAX_CONSTANT_BYTES:
        _uploads[0] += 1
        return xp.array(host, copy=True)
    device = xp.cuda.Device().id if xp is not np else -1
    key = (id(xp), device, host.dtype.str, host.shape, host.tobytes())
    with _constants_lock:  # calls from several threads share the cache
        dev = _constants.get(key)
        if dev is None:
            dev = xp.array(host, copy=True)
            _uploads[0] += 1
            _constants[key] = dev
            while len(_constants) > MAX_CONSTANTS:
                _constants.popitem(last=False)
        else:
            _constants.move_to_end(key)
    return dev


@functools.lru_cache(maxsize=None)
def _default_executor(xp, threads_per_block: int) -> CudaExecutor:
    return CudaExecutor(xp, threads_per_block)


def default_executor(xp, threads_per_block: int = THREADS_PER_BLOCK) -> CudaExecutor:
    """The process's :class:`CudaExecutor` for array module ``xp`` (one per module and block size)."""
    return _default_executor(xp, int(threads_per_block))


class LaunchRecorder:
    """An executor wrapper that records what a call asks of the GPU: ``launches`` (kernel
    name, thread count) and ``uploads`` (shapes of host arrays :meth:`constant` had to copy
    to the device), then forwards to ``inner``; ``run=False`` records without running
    anything (the outputs are then garbage: for counting only)."""

    def __init__(self, inner: CudaExecutor, run: bool = True):
        self.inner = inner
        self.run = run
        self.xp = inner.xp
        self.tpb = inner.tpb
        self.launches: list[tuple[str, int]] = []
        self.uploads: list[tuple[int, ...]] = []

    @property
    def device(self) -> DeviceProps:
        return self.inner.device

    def constant(self, host: np.ndarray):
        before = _uploads[0]
        dev = self.inner.constant(host)
        if _uploads[0] != before:
            self.uploads.append(tuple(host.shape))
        return dev

    def launch(self, kernel, nthreads: int, args) -> None:
        if nthreads > 0:
            self.launches.append((getattr(kernel, "py_func", kernel).__name__, int(nthreads)))
        if self.run:
            self.inner.launch(kernel, nthreads, args)


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
