"""Backend registry, selection and array conversion.

This is the only module that knows about CuPy and JAX. It never imports them at
``import gpu_trader`` time: CuPy (JAX) is imported the first time somebody asks
whether the ``cuda`` (``jax``) backend is available or passes one of its arrays, and
array-type inference only looks at frameworks already present in ``sys.modules``
(the einops trick), so a NumPy user never pays for a GPU import.

Resolution order for one call (docs/design.md#backends-and-areas):
explicit ``backend=`` keyword > :func:`use_backend` context > :func:`set_backend`
or the ``GPU_TRADER_BACKEND`` environment variable (read on import and again by
``set_backend(None)``) > the type of the input array
(CuPy -> ``cuda``) > ``cpu``. A NumPy input is never moved to the GPU unless one of
the first three names a GPU backend.

``GPU_TRADER_BACKEND``: empty or whitespace means unset; surrounding whitespace and
case are ignored. A value naming an unknown backend, or one not present on this
machine, never fails ``import gpu_trader``: the first call that needs the default
backend raises ``ValueError`` naming the variable, its value and the available
backends. ``auto`` (the GPU image's setting) means ``cuda`` when a CUDA device is usable
and ``cpu`` otherwise, decided on first use; the fallback says so once, on stderr.

Input conversion (:func:`resolve`, once per call, before any compiled code): every
host input becomes a plain ``numpy.ndarray`` (subclasses such as ``np.matrix`` are
viewed as their base class) in native byte order, aligned, of a float dtype
(float32/float64 kept, other reals cast to float64, values preserved). A masked
array is refused (``TypeError``: pass ``x.filled(np.nan)``, which marks its masked
entries as missing), as are object, complex, datetime, string and structured dtypes
(``TypeError`` naming the argument). Read-only inputs (pandas' copy-on-write
columns) are read, never copied for being read-only and never written. An input holding
more than :data:`MAX_ELEMENTS` values is a ``ValueError`` (naming the argument) before
anything is copied or allocated.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, overload

import numpy as np

if TYPE_CHECKING:
    from ._internal import areas as _areas

__all__ = [
    "Backend",
    "AreaNotImplemented",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "to_numpy",
    "resolve",
]

ENV_VAR = "GPU_TRADER_BACKEND"

MAX_ELEMENTS = 2**32
"""Most values one array may hold, as an input or as one output allocation (32 GiB of
float64); re-exported as :data:`gpu_trader._internal.validation.MAX_ELEMENTS`. An input past it (a
zero-stride ``np.broadcast_to`` view, say, that costs no memory until it is copied) is a
``ValueError`` before anything is allocated."""


def _read_env() -> str | None:
    """The backend ``GPU_TRADER_BACKEND`` names, stripped; None when unset, empty or blank."""
    return os.environ.get(ENV_VAR, "").strip() or None


_ENV = [_read_env()]  # read on import and by set_backend(None); checked on first use
AUTO = "auto"
"""The ``GPU_TRADER_BACKEND`` value meaning: ``cuda`` when usable, else ``cpu`` (said once on stderr)."""
_AUTO: list[Backend | None] = [None]  # what ``auto`` resolved to; reset by set_backend(None)


DISPATCHED_AREAS = frozenset(
    {"indicators", "risk", "correlation", "montecarlo", "vectors", "marketdata", "portfolio", "strategies",
     "sizing"}
)
"""Public areas whose calls run on the backend they resolve (``backend=``, the context, the
default, the input's type)."""
HOST_AREAS = frozenset({"streaming", "risk_stream"})
"""Areas that run on the ``cpu`` backend whatever backend is current: the compiled kernels of
:class:`gpu_trader.streaming.FeatureStream` and :class:`gpu_trader.risk_stream.RiskStream`, which
update host state one bar at a time."""
AREAS = DISPATCHED_AREAS | HOST_AREAS
"""Every area a backend may implement; what each area's module provides is stated by
:data:`gpu_trader._internal.areas.AREA_PROTOCOLS`."""


class AreaNotImplemented(ValueError):
    """A backend was asked for a public area it does not implement (a ``ValueError``)."""


class Backend:
    """One compute backend: its array module, its device, and its kernel modules.

    Subclasses set:

    * ``name``: the registry key (``backend="cpu"``); a label only, never branched on:
      code that depends on what a backend can do reads one of the capability flags below;
    * ``ops_package``: the package holding one module per area it implements, e.g.
      ``gpu_trader.cpu_fallback`` (:meth:`ops`);
    * ``array_module``: the top-level module name of its array type (type inference).

    Capabilities:

    * ``areas``: the areas (:data:`AREAS`) it implements, each a module of
      ``ops_package`` that provides what :data:`gpu_trader._internal.areas.AREA_PROTOCOLS`
      states for the area;
    * ``host_memory``: its arrays are plain ``numpy.ndarray`` in host memory, so host code
      (NumPy checks, FAISS) reads them as they are, without a copy to the host;
    * ``mutable_arrays``: its arrays can be written in place (``out=``, ``copyto``); JAX's
      cannot;
    * ``ann_kinds``: the approximate nearest-neighbour index kinds a
      :class:`gpu_trader.vectors.VectorIndex` can build on it (``"hnsw"``: FAISS's HNSW graph on host
      arrays; ``"cagra"``: cuVS on CuPy arrays); ``"exact"`` is always possible.
    """

    name: str = ""
    ops_package: str = ""
    array_module: str = ""
    areas: frozenset[str] = frozenset()
    host_memory: bool = False
    mutable_arrays: bool = True
    ann_kinds: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._ops: dict[str, Any] = {}
        self._available: bool | None = None

    # -- presence ---------------------------------------------------------------
    def is_available(self) -> bool:
        if self._available is None:
            self._available = self._probe()
        return self._available

    def _probe(self) -> bool:  # pragma: no cover - overridden
        return True

    # -- arrays -----------------------------------------------------------------
    @property
    def xp(self):
        """The NumPy-compatible array module of this backend."""
        return importlib.import_module(self.array_module)

    def owns(self, x: Any) -> bool:
        """True when ``x`` is this backend's array type (without importing anything)."""
        mod = sys.modules.get(self.array_module)
        return mod is not None and isinstance(x, mod.ndarray)

    def asarray(self, x: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Block until all queued work on this backend's device has finished."""

    def ready(self, result: Any) -> Any:
        """Block until ``result`` (arrays, or containers and dataclasses of them) is computed;
        returns it. Callers that time work also call :meth:`synchronize`, which covers
        backends with a device stream; JAX has no stream to wait on and blocks on the result."""
        return result

    def configure_process(self) -> None:
        """Process-wide settings this backend needs, applied up front by a program that owns
        the process (the bench CLI); a library call applies them lazily instead."""

    def unstack(self, x: Any) -> tuple[Any, ...]:
        """``x`` split along its first axis (one array per output of a multi-output kernel)."""
        return tuple(x)

    def contiguous(self, x: Any) -> Any:
        """``x`` as a C-contiguous array of this backend (``x`` itself when it already is)."""
        return x if x.flags.c_contiguous else self.xp.ascontiguousarray(x)

    def kernel_arrays(self, arrays: Any, shape: tuple[int, ...]) -> list[Any]:
        """``arrays`` (already of one dtype, see :func:`resolve`) reshaped to ``shape`` as
        compiled kernels take them together: C-contiguous and all of one array type (see
        the CPU override); views where they already are."""
        return [self.contiguous(a.reshape(shape)) for a in arrays]

    def supports(self, area: str) -> bool:
        """Whether this backend implements the area ``area`` (``"indicators"``, ...; see :data:`AREAS`)."""
        return area in self.areas

    def device_name(self) -> str:
        raise NotImplementedError

    # -- kernels ----------------------------------------------------------------
    @overload
    def ops(self, area: Literal["indicators"]) -> _areas.IndicatorsOps: ...
    @overload
    def ops(self, area: Literal["risk"]) -> _areas.RiskOps: ...
    @overload
    def ops(self, area: Literal["correlation"]) -> _areas.CorrelationOps: ...
    @overload
    def ops(self, area: Literal["montecarlo"]) -> _areas.MontecarloOps: ...
    @overload
    def ops(self, area: Literal["vectors"]) -> _areas.VectorsOps: ...
    @overload
    def ops(self, area: Literal["marketdata"]) -> _areas.MarketdataOps: ...
    @overload
    def ops(self, area: Literal["portfolio"]) -> _areas.PortfolioOps: ...
    @overload
    def ops(self, area: Literal["strategies"]) -> _areas.StrategiesOps: ...
    @overload
    def ops(self, area: Literal["streaming"]) -> _areas.StreamingOps: ...
    @overload
    def ops(self, area: Literal["risk_stream"]) -> _areas.RiskStreamOps: ...
    @overload
    def ops(self, area: Literal["sizing"]) -> _areas.SizingOps: ...
    @overload
    def ops(self, area: str) -> Any: ...

    def ops(self, area: str) -> Any:
        """The module of ``ops_package`` for the area ``area``, imported on first use.

        It provides what the area's protocol in :mod:`gpu_trader._internal.areas` states
        (:data:`~gpu_trader._internal.areas.AREA_PROTOCOLS`; the overloads type the result
        per area). ``AreaNotImplemented`` naming the backends that have the area when this
        one does not implement it; ``ValueError`` for a name that is not an area.
        """
        mod = self._ops.get(area)
        if mod is None:
            if not self.supports(area):
                if area not in AREAS:
                    raise ValueError(f"unknown area {area!r}; the areas are {', '.join(sorted(AREAS))}")
                others = [n for n, be in _REGISTRY.items() if be.supports(area) and be.is_available()]
                raise AreaNotImplemented(
                    f"backend {self.name!r} does not implement {area} (it implements "
                    f"{', '.join(sorted(self.areas))}); use backend= one of {', '.join(others)}"
                )
            mod = importlib.import_module(f"{self.ops_package}.{area}")
            self._ops[area] = mod
        return mod

    def __repr__(self) -> str:
        return f"<gpu_trader backend {self.name!r}>"


class CpuBackend(Backend):
    name = "cpu"
    ops_package = "gpu_trader.cpu_fallback"
    array_module = "numpy"
    areas = AREAS
    host_memory = True
    ann_kinds = frozenset({"hnsw"})

    def _probe(self) -> bool:
        return True

    def configure_process(self) -> None:
        """The CPU thread policy (docs/design.md#cpu-threads), which the ops package also applies
        when first imported: idle OpenMP workers sleep unless the user chose otherwise
        (``OMP_WAIT_POLICY``; effective before numba starts its thread pool)."""
        importlib.import_module(self.ops_package).prefer_passive_waits()

    def owns(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def kernel_arrays(self, arrays: Any, shape: tuple[int, ...]) -> list[np.ndarray]:
        """C-contiguous, and all writeable or all read-only: numba types a read-only array
        apart from a writeable one, and a tuple mixing them (pandas' copy-on-write columns
        next to a converted int64 volume, say) cannot be indexed at run time, so a mix is
        passed as read-only views (no copy; the kernels never write their inputs)."""
        out = []
        for a in arrays:  # a plain loop: this is on the one-series latency path
            a = a.reshape(shape)
            out.append(a if a.flags.c_contiguous else np.ascontiguousarray(a))
        if len(out) > 1 and len({a.flags.writeable for a in out}) > 1:
            out = [_read_only_view(a) for a in out]
        return out

    def asarray(self, x: Any) -> np.ndarray:
        return _host_array(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return _host_array(x)

    def device_name(self) -> str:
        import platform

        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return f"{name} ({os.cpu_count()} logical cores)"


class CudaBackend(Backend):
    name = "cuda"
    ops_package = "gpu_trader.kernels"
    array_module = "cupy"
    areas = DISPATCHED_AREAS
    ann_kinds = frozenset({"cagra"})

    def ops(self, area: str) -> Any:
        """As :meth:`Backend.ops`; first ``ImportError`` unless numba-cuda provides ``numba.cuda``."""
        if area not in self._ops and self.supports(area):
            require_numba_cuda()
        return super().ops(area)

    def _probe(self) -> bool:
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # ImportError, CUDARuntimeError, missing driver ...
            return False

    def asarray(self, x: Any):
        import cupy

        if isinstance(x, cupy.ndarray):
            return x
        return cupy.asarray(_host_array(x))

    def to_numpy(self, x: Any) -> np.ndarray:
        import cupy

        if isinstance(x, cupy.ndarray):
            return cupy.asnumpy(x)
        return _host_array(x)

    def synchronize(self) -> None:
        import cupy

        cupy.cuda.get_current_stream().synchronize()

    def device_name(self) -> str:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


def require_numba_cuda() -> None:
    """``ImportError`` unless ``numba.cuda`` is NVIDIA's numba-cuda package, the one supported CUDA
    target (numba's own built-in target, deprecated, cannot compile the kernels; the simulator,
    ``NUMBA_ENABLE_CUDASIM=1``, is accepted as the tests' stand-in)."""
    if importlib.util.find_spec("numba_cuda") is not None:
        return
    from numba import config

    if not config.ENABLE_CUDASIM:
        raise ImportError("the cuda backend needs numba-cuda (NVIDIA's CUDA target for numba), found only numba's "
                          "built-in numba.cuda: pip install 'gpu-trader[cuda12]' (or numba-cuda[cu12])")


class JaxBackend(Backend):
    """JAX on whatever device JAX picks (its CPU in CI; a GPU or TPU where jaxlib has one).

    Float64 is the contract (TA-Lib-exact indicators, risk metrics to 1e-10), so the
    first use of this backend switches on JAX's 64-bit mode (``jax_enable_x64``) for the
    process, with a warning if it was off: switch it on yourself, before creating JAX
    arrays, to keep your own float64 inputs float64 (JAX truncates them to float32
    while the mode is off).
    """

    name = "jax"
    ops_package = "gpu_trader.jax_backend"
    array_module = "jax.numpy"
    areas = frozenset({"indicators", "risk", "correlation", "montecarlo"})
    mutable_arrays = False

    def _probe(self) -> bool:
        try:
            import jax  # noqa: F401
        except Exception:  # ImportError, or a broken jaxlib
            return False
        return True

    @property
    def xp(self):
        enable_x64()
        import jax.numpy

        return jax.numpy

    def owns(self, x: Any) -> bool:
        jax = sys.modules.get("jax")
        return jax is not None and isinstance(x, jax.Array)

    def asarray(self, x: Any):
        enable_x64()
        import jax
        import jax.numpy as jnp

        if isinstance(x, jax.Array):
            return x
        return jnp.asarray(_host_array(x))

    def to_numpy(self, x: Any) -> np.ndarray:
        return _host_array(x)

    def ready(self, result: Any) -> Any:
        import dataclasses

        import jax

        if dataclasses.is_dataclass(result) and not isinstance(result, type):  # e.g. MonteCarloVaR
            jax.block_until_ready([getattr(result, f.name) for f in dataclasses.fields(result)])
            return result
        return jax.block_until_ready(result)

    def configure_process(self) -> None:
        enable_x64(warn=False)

    def unstack(self, x: Any) -> tuple[Any, ...]:
        import jax.numpy as jnp

        return tuple(jnp.unstack(x))  # one dispatch: indexing a JAX array costs ~40-100 us each

    def contiguous(self, x: Any) -> Any:
        return x  # JAX arrays have no strides to speak of

    def device_name(self) -> str:
        import jax

        dev = jax.devices()[0]
        return f"JAX {jax.__version__} on {dev.platform}: {dev.device_kind}"

    def ops(self, area: str) -> Any:
        enable_x64()
        return super().ops(area)


def enable_x64(warn: bool = True) -> None:
    """Switch on JAX's 64-bit mode (see :class:`JaxBackend`) if it is off; warn (``warn``) when
    this changes it. Checked on every use of the backend (one attribute read), so a mode
    switched off later by someone else is switched on again, with the warning again."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.config.jax_enable_x64:
        return
    import jax

    if not warn:
        jax.config.update("jax_enable_x64", True)
    if not jax.config.jax_enable_x64:
        import warnings

        warnings.warn(
            "gpu_trader's jax backend switched on JAX's 64-bit mode (jax_enable_x64) for float64 "
            "results; set it yourself before creating arrays to silence this",
            UserWarning,
            stacklevel=3,
        )
        jax.config.update("jax_enable_x64", True)

# Registration order is the order of type inference.
_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Add a backend to the registry (replacing one of the same name)."""
    _REGISTRY[backend.name] = backend


register(CpuBackend())
register(CudaBackend())
register(JaxBackend())

_CPU = _REGISTRY["cpu"]
_context: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("gpu_trader_backend", default=None)
_global: Backend | None = None


def available_backends(*, every_area: bool = False) -> tuple[str, ...]:
    """Names of the backends usable now, ``"cpu"`` first; ``every_area``: only those that
    implement every area a public call dispatches (:data:`DISPATCHED_AREAS`; the host areas
    run on ``cpu`` whatever the backend), and backends that do not are not even probed."""
    return tuple(name for name, be in _REGISTRY.items()
                 if (not every_area or DISPATCHED_AREAS <= be.areas) and be.is_available())


def registered_backends() -> tuple[Backend, ...]:
    """Every registered backend, present on this machine or not, in registration order."""
    return tuple(_REGISTRY.values())


def get_backend(name: str | Backend | None = None) -> Backend:
    """Return the backend object called ``name``; ``None`` gives the current default.

    Raises ``ValueError`` naming the available backends when ``name`` is unknown or
    not present on this machine.
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        return default_backend() or _CPU
    if not isinstance(name, str):
        raise TypeError(f"backend must be a backend name (str), got {type(name).__name__}")
    be = _REGISTRY.get(name.lower())
    if be is None or not be.is_available():
        why = "unknown" if be is None else "not available on this machine"
        raise ValueError(
            f"backend {name!r} is {why}; available backends: {', '.join(available_backends())}"
        )
    return be


def set_backend(name: str | None) -> None:
    """Make ``name`` the process-wide default backend.

    ``None`` restores the automatic choice and re-reads ``GPU_TRADER_BACKEND``
    (which is otherwise read once, on import, to keep it off the per-call path).
    """
    global _global
    if name is None:
        _global = None
        _ENV[0] = _read_env()
        _AUTO[0] = None
    else:
        _global = get_backend(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Context manager: calls inside it run on backend ``name`` unless they pass ``backend=``."""
    token = _context.set(get_backend(name))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


def default_backend() -> Backend | None:
    """The backend chosen by ``use_backend`` (this context), ``set_backend`` or
    ``GPU_TRADER_BACKEND``, in that order; ``None`` when none is, and a call follows its
    arrays' type."""
    be = _context.get()
    if be is not None:
        return be
    if _global is not None:
        return _global
    if _ENV[0] is not None:
        return _env_backend(_ENV[0])
    return None


def _env_backend(name: str) -> Backend:
    """The backend ``GPU_TRADER_BACKEND`` names (``auto``: :func:`_auto_backend`);
    ``ValueError`` naming the variable otherwise."""
    if name.lower() == AUTO:
        return _AUTO[0] or _auto_backend()
    try:
        return get_backend(name)
    except ValueError:
        be = _REGISTRY.get(name.lower())
        why = "an unknown backend" if be is None else "a backend not available on this machine"
        raise ValueError(
            f"{ENV_VAR}={name!r} names {why}; available backends: {', '.join(available_backends())}"
            f" (unset {ENV_VAR} or set it to one of them)"
        ) from None


def _auto_backend() -> Backend:
    """``GPU_TRADER_BACKEND=auto``: ``cuda`` when it is usable (CuPy sees a device), else ``cpu``
    with one line on stderr saying why (e.g. a GPU image started without ``--gpus``)."""
    cuda = _REGISTRY["cuda"]
    if cuda.is_available():
        _AUTO[0] = cuda
    else:
        _AUTO[0] = _CPU
        print(f"gpu-trader: {ENV_VAR}=auto found no usable CUDA device (no GPU, driver or CuPy; "
              "in Docker, start the container with --gpus all): running on the cpu backend", file=sys.stderr)
    return _AUTO[0]


def infer_backend(x: Any) -> Backend:
    """The backend whose array type ``x`` is, looking only at already-imported frameworks."""
    if type(x) is np.ndarray:
        return _CPU
    for be in _REGISTRY.values():
        if be is not _CPU and be.owns(x):
            return be
    return _CPU


def select_backend(x: Any, backend: str | Backend | None = None) -> Backend:
    """Apply the resolution order of the module docstring to one call."""
    if backend is not None:
        return get_backend(backend)
    return default_backend() or infer_backend(_unwrap_pandas(x)[0])


# -- conversions --------------------------------------------------------------
def is_pandas(x: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(x, (pd.Series, pd.DataFrame))


def is_cudf(x: Any) -> bool:
    """A cuDF ``Series``/``DataFrame``, recognized by its type's module name (cuDF is never
    imported here). cuDF in gives cuDF out, as pandas does (see :func:`_frame_module`)."""
    t = type(x)
    return t.__name__ in ("Series", "DataFrame") and t.__module__.partition(".")[0] == "cudf"


def is_polars(x: Any) -> bool:
    """A polars ``Series``/``DataFrame`` (polars is never imported here: only when the caller
    already has, through ``sys.modules``). polars in gives polars out (see :func:`_unwrap_polars`)."""
    pl = sys.modules.get("polars")
    return pl is not None and isinstance(x, (pl.Series, pl.DataFrame))


def _polars_split(x: Any) -> tuple[list[str], list[str]]:
    """A polars DataFrame's (time columns, series columns): temporal columns (``Datetime``,
    ``Date``, ``Time``, ``Duration``) are the time axis, kept as they are; numeric and
    boolean columns are the series, one per symbol. ``TypeError`` for any other column
    (a string column is neither: select or drop it first)."""
    times, series = [], []
    for name, dtype in x.schema.items():
        if dtype.is_temporal():
            times.append(name)
        elif dtype.is_numeric() or dtype == sys.modules["polars"].Boolean:
            series.append(name)
        else:
            raise TypeError(f"polars column {name!r} has dtype {dtype}: columns must be numeric series "
                            "or temporal (the time axis); select the series first")
    return times, series


def _polars_values(x: Any, series: list[str] | None = None) -> np.ndarray:
    """A polars Series' values, or a DataFrame's ``series`` columns as ``(T, n)``, as NumPy:
    nulls of numeric columns become NaN (integer columns with nulls become float64)."""
    if isinstance(x, sys.modules["polars"].Series):
        return x.to_numpy()
    return x.select(series).to_numpy() if series else np.empty((x.height, 0))


def _grid_label(name: str, idx: tuple[int, ...]) -> str:
    """The column name of one parameter set's result for series ``name``: ``name[i,j]``."""
    return f"{name}[{','.join(map(str, idx))}]"


def _unwrap_polars(x: Any) -> tuple[Any, Callable[[Any], Any]]:
    """Split a polars object into (array with time last, function that rewraps a result).

    A Series is one series (result: a Series of the same name). A DataFrame has time along
    its rows: its temporal columns are kept as they are, first, in the result; its numeric
    columns are the series (one per symbol), transposed to ``(n_symbols, T)``, and come back
    under the same names. A parameter grid result names its columns ``symbol[i,j]``."""
    pl = sys.modules["polars"]
    if isinstance(x, pl.Series):
        name = x.name

        def rewrap_series(res):
            res = to_numpy(res)
            if res.ndim == 1:
                return pl.Series(name, res)
            lead = res.shape[:-1]
            return pl.DataFrame({_grid_label(name, idx): res[idx] for idx in np.ndindex(lead)})

        return _polars_values(x), rewrap_series
    times, series = _polars_split(x)
    time_frame = x.select(times)

    def rewrap(res):
        res = to_numpy(res)
        lead = res.shape[:-2]
        if lead:
            cols = {_grid_label(n, idx): res[idx + (i,)] for idx in np.ndindex(lead) for i, n in enumerate(series)}
        else:
            cols = {n: res[i] for i, n in enumerate(series)}
        return time_frame.hstack(pl.DataFrame(cols)) if times else pl.DataFrame(cols)

    return _polars_values(x, series).T, rewrap


def _cudf_values(x: Any) -> Any:
    """A cuDF object's values as a CuPy array, without a host copy: numeric and boolean columns
    with nulls as float64 with NaN for them, float columns as they are; other dtypes as host
    NumPy (refused by the dtype check, naming the argument)."""
    dtypes = [x.dtype] if x.ndim == 1 else list(x.dtypes)
    kinds = {getattr(d, "kind", "O") for d in dtypes}
    if not kinds <= set("fiub"):
        return x.to_numpy()
    return x.to_cupy(dtype=None if kinds == {"f"} else np.float64, na_value=np.nan)


def _frame_module(x: Any) -> Any:
    """The module whose ``Series``/``DataFrame``/``MultiIndex`` rewrap results like ``x``: cuDF
    for a cuDF object (results stay on the device), else pandas."""
    if is_cudf(x):
        return sys.modules[type(x).__module__.partition(".")[0]]
    import pandas

    return pandas


def _frame_data(res: Any, device: bool) -> Any:
    """A result as a frame's data: host NumPy for pandas; for cuDF (``device``) a CUDA or NumPy
    array as it is (cuDF takes both), anything else through :func:`to_numpy`."""
    if device and (hasattr(res, "__cuda_array_interface__") or isinstance(res, np.ndarray)):
        return res
    return to_numpy(res)


def _host_labels(labels: Any) -> Any:
    """An index as host labels (a cuDF index, which cannot be iterated, through ``to_pandas``)."""
    return labels.to_pandas() if hasattr(labels, "to_pandas") else labels


def _pandas_values(x: Any) -> np.ndarray:
    """``x.to_numpy()`` of a Series/DataFrame, except that numeric and boolean columns that
    NumPy would hand out as objects (pandas' nullable ``Int64``/``Float64``/``boolean``
    holding ``pd.NA``) come back as float64 with NaN for the missing values. A cuDF object
    gives its device values (:func:`_cudf_values`)."""
    if is_cudf(x):
        return _cudf_values(x)
    values = x.to_numpy()
    if values.dtype == object:
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        dtypes = [x.dtype] if x.ndim == 1 else list(x.dtypes)
        if dtypes and all(is_numeric_dtype(d) or is_bool_dtype(d) for d in dtypes):
            values = x.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def _unwrap_pandas(x: Any) -> tuple[Any, Callable[[Any], Any] | None]:
    """Split a pandas object into (array with time last, function that rewraps a result).

    A Series is one series; a DataFrame has time along its index and one column per
    symbol, so its values are transposed to (n_symbols, T). polars objects: see
    :func:`_unwrap_polars`.
    """
    if is_polars(x):
        return _unwrap_polars(x)
    if not (is_pandas(x) or is_cudf(x)):
        return x, None
    pd, device = _frame_module(x), is_cudf(x)

    if isinstance(x, pd.Series):
        values = _pandas_values(x)
        index, name = x.index, x.name

        def rewrap(res):
            res = _frame_data(res, device)
            if res.ndim == 1:
                return pd.Series(res, index=index, name=name)
            # a parameter grid: one column per parameter set
            return pd.DataFrame(res.reshape(-1, res.shape[-1]).T, index=index)

        return values, rewrap

    values = _pandas_values(x).T
    index, columns = x.index, x.columns

    def rewrap(res):
        res = _frame_data(res, device)
        if res.ndim == 2:
            return pd.DataFrame(res.T, index=index, columns=columns)
        lead = res.shape[:-2]
        grid = pd.MultiIndex.from_product([range(n) for n in lead] + [columns])
        return pd.DataFrame(res.reshape(-1, res.shape[-1]).T, index=index, columns=grid)

    return values, rewrap


def unwrap_pandas_columns(x: Any) -> tuple[Any, Callable[[Any, str], Any] | None]:
    """Split a pandas object whose columns are series (time along the index) into
    (array with time last, function rewrapping a result that has *lost* the time axis).

    ``rewrap(res, kind, grid=None)``: ``kind="reduced"`` for one value per series (a
    Series input gives a scalar, a DataFrame input a Series indexed by its columns; a
    leading parameter-grid axis, labelled by the values ``grid``, becomes the index of
    a Series or the rows of a DataFrame); ``kind="matrix"`` for a
    series-by-series matrix (a DataFrame indexed and labelled by the columns);
    ``kind="matrix_path"`` for a matrix at every time step, ``(n, n, T)``, which becomes
    pandas' own rolling-pairwise layout: rows ``(time, column)``, one column per column.
    polars objects: see :func:`_unwrap_polars_columns`.
    """
    if is_polars(x):
        return _unwrap_polars_columns(x)
    if not (is_pandas(x) or is_cudf(x)):
        return x, None
    pd, device = _frame_module(x), is_cudf(x)

    if isinstance(x, pd.Series):
        values, columns, index = _pandas_values(x), None, x.index
    else:
        values, columns, index = _pandas_values(x).T, x.columns, x.index

    def rewrap(res: Any, kind: str, grid: Any = None) -> Any:
        res = _frame_data(res, device)
        if kind == "reduced":
            rows = None if grid is None else pd.Index(grid, name="level")
            if columns is None:
                return to_numpy(res)[()] if res.ndim == 0 else pd.Series(res, index=rows, name=x.name)
            return pd.Series(res, index=columns) if res.ndim == 1 else pd.DataFrame(
                res.reshape(-1, res.shape[-1]), index=rows, columns=columns)
        if kind == "matrix":
            return pd.DataFrame(res, index=columns, columns=columns)
        if kind == "matrix_path":
            rows = pd.MultiIndex.from_product([_host_labels(index), columns])
            return pd.DataFrame(res.transpose(2, 0, 1).reshape(-1, res.shape[1]), index=rows, columns=columns)
        raise ValueError(f"unknown result kind {kind!r}")

    return values, rewrap


def _unwrap_polars_columns(x: Any) -> tuple[Any, Callable[[Any, str], Any]]:
    """:func:`unwrap_pandas_columns` for polars (no index, so labels become columns).

    ``kind="reduced"``: a Series gives a scalar (a grid: a DataFrame with columns ``level``
    and the Series' name); a DataFrame gives a one-row DataFrame with its series columns
    (a grid: one row per level, a ``level`` column first). ``kind="matrix"``: a DataFrame
    with a ``symbol`` column (the series names) then one column per series.
    ``kind="matrix_path"``: one row per (time, symbol), time-major: the time columns (or,
    without one, a ``row`` column of row numbers), ``symbol``, then one column per series."""
    pl = sys.modules["polars"]
    if isinstance(x, pl.Series):
        values, names, time_frame = _polars_values(x), [x.name], pl.DataFrame({"row": np.arange(len(x))})
    else:
        times, names = _polars_split(x)
        values = _polars_values(x, names).T
        time_frame = x.select(times) if times else pl.DataFrame({"row": np.arange(x.height)})

    def rewrap(res: Any, kind: str, grid: Any = None) -> Any:
        res = to_numpy(res)
        if kind == "reduced":
            if isinstance(x, pl.Series) and grid is None:
                return res[()]
            rows = np.atleast_2d(res.reshape(-1, len(names)) if res.ndim else res)
            frame = pl.DataFrame({n: rows[:, i] for i, n in enumerate(names)})
            return frame if grid is None else pl.DataFrame({"level": list(grid)}).hstack(frame)
        if kind == "matrix":
            return pl.DataFrame({"symbol": names}).hstack(pl.DataFrame({n: res[:, i] for i, n in enumerate(names)}))
        if kind == "matrix_path":
            n, steps = len(names), res.shape[-1]
            flat = res.transpose(2, 0, 1).reshape(steps * n, n)
            lead = time_frame.select(pl.all().gather(np.repeat(np.arange(steps), n)))
            return lead.hstack(pl.DataFrame({"symbol": names * steps})).hstack(
                pl.DataFrame({c: flat[:, i] for i, c in enumerate(names)}))
        raise ValueError(f"unknown result kind {kind!r}")

    return values, rewrap


def _host_array(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if is_pandas(x):
        return _pandas_values(x)
    if is_cudf(x):
        return _host_array(_cudf_values(x))
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return np.array(x)  # a writable copy (np.asarray of a JAX array is a read-only view)
    return np.asarray(x)


def to_numpy(x: Any) -> Any:
    """Bring an array (NumPy, CuPy, pandas, or a tuple/dict of them) back to host NumPy."""
    if isinstance(x, tuple):
        return tuple(to_numpy(v) for v in x)
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    return _host_array(x)


def _read_only_view(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (``a`` itself when it is read-only already)."""
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view


def check_real_dtype(dtype: np.dtype, name: str) -> None:
    """``TypeError`` naming ``name`` unless ``dtype`` is a float, integer or bool dtype."""
    if dtype.kind not in "fiub":
        raise TypeError(
            f"{name} must be a real numeric array (float, integer or bool), got dtype {dtype}"
        )


def check_not_masked(x: Any, name: str) -> None:
    """``TypeError`` naming ``name`` for a masked array, whose mask NumPy's conversions drop."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask would be ignored: pass {name}.filled(np.nan) "
            "(masked entries become missing values)"
        )


def check_input_size(x: Any, name: str) -> None:
    """``ValueError`` naming ``name`` when the array ``x`` holds more than :data:`MAX_ELEMENTS`
    values (checked on its shape, before any copy)."""
    if x.size > MAX_ELEMENTS:
        raise ValueError(
            f"{name} holds {x.size} values (shape {x.shape}); at most {MAX_ELEMENTS} are allowed per call "
            "(split the batch)"
        )


def as_host_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array of any dtype (an array is not copied): pandas objects give their
    values (:func:`_pandas_values`). ``TypeError`` naming ``name`` for a masked array (see
    :func:`check_not_masked`) or what cannot become an array (a ragged list, ...)."""
    check_not_masked(x, name)
    try:
        if is_polars(x):
            return _unwrap_polars(x)[0]
        return _pandas_values(x) if is_pandas(x) else np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array, got {type(x).__name__}: {exc}") from None


def host_input(x: Any, name: str) -> np.ndarray:
    """A host input as a plain, aligned, native-byte-order ``numpy.ndarray`` of a real dtype.

    ``x`` itself when it already is one; a copy only for non-native byte order or a
    misaligned buffer (values preserved); ndarray subclasses (``np.matrix``, ``memmap``)
    are viewed as their base class; pandas objects give their values (nullable columns
    as float64 with NaN for ``pd.NA``, see :func:`_pandas_values`). ``TypeError`` naming
    ``name`` for a masked array (use ``x.filled(np.nan)``), a non-real dtype, or something
    that is not array-like; ``ValueError`` for more than :data:`MAX_ELEMENTS` values.
    """
    if type(x) is not np.ndarray:
        x = as_host_array(x, name)
    check_input_size(x, name)
    check_real_dtype(x.dtype, name)
    if not x.dtype.isnative:
        return x.astype(x.dtype.newbyteorder("="))
    if not x.flags.aligned:
        return x.copy()
    return x


def _is_device_array(x: Any) -> bool:
    """True for an array of a non-CPU backend (CuPy, JAX), looking only at imported frameworks."""
    return type(x) is not np.ndarray and infer_backend(x) is not _CPU


def backend_input(be: Backend, x: Any, name: str):
    """``x`` as ``be``'s array type, any dtype: a host input is normalised first
    (:func:`host_input`: ``TypeError`` naming ``name`` for a masked array, a non-real dtype
    or what cannot become an array); an array of another backend is handed to ``be``."""
    return be.asarray(x if _is_device_array(x) else host_input(x, name))


def as_float_array(be: Backend, x: Any, name: str):
    """Convert ``x`` to ``be``'s array type with a float dtype.

    Host inputs are normalised first (:func:`host_input`); float32/float64 are kept;
    bool and integer inputs are promoted to float64 (float16 and long double to
    float64); anything else raises ``TypeError`` naming the argument. Never mutates ``x``.
    """
    arr = backend_input(be, x, name)
    check_real_dtype(arr.dtype, name)
    if arr.dtype.kind == "f" and arr.dtype.itemsize in (4, 8):
        return arr
    return arr.astype(np.float64)


def resolve(
    arrays: tuple[Any, ...], names: tuple[str, ...], backend: str | Backend | None = None
) -> tuple[Backend, list[Any], Callable[[Any], Any] | None]:
    """Pick the backend for a call, convert its array inputs, and remember pandas wrapping.

    Returns ``(backend, arrays converted to that backend's float arrays, restore)``
    where ``restore(result)`` rewraps a result like the first input when that is a
    pandas object, and ``restore`` is ``None`` when there is nothing to rewrap (the
    caller returns its result as it is). The arrays share one dtype (float64 when the inputs'
    differ); host inputs are normalised by :func:`host_input` (plain, native byte
    order, aligned; ``TypeError`` naming the argument for masked or non-real input);
    read-only inputs stay read-only views (see :meth:`Backend.kernel_arrays` for
    handing a mix to compiled code). All inputs must have the same shape, and pandas
    inputs the same index and columns as the first pandas input, in the same order, where
    both are labelled (not a default ``RangeIndex``): ``ValueError`` naming the offending
    argument otherwise, as values are matched by position, never silently across labels.
    """
    first = arrays[0]
    if (
        type(first) is np.ndarray
        and len(arrays) == 1
        and first.dtype in _FAST_DTYPES
        and first.ndim
        and first.size <= MAX_ELEMENTS
        and first.flags.aligned
        and ((d := default_backend()) is None or d is _CPU if backend is None else backend is _CPU or backend == "cpu")
    ):  # the one-NumPy-series latency path, on the CPU by default (set or not) or by name
        return _CPU, [first], None
    first, rewrap = _unwrap_pandas(first)
    be = select_backend(first, backend)
    if len(arrays) > 1:
        check_same_labels(arrays, names)
    out = []
    for i, (a, name) in enumerate(zip(arrays, names)):
        raw = first if i == 0 else _unwrap_pandas(a)[0]
        if raw is None:
            raise TypeError(f"{name} must be an array, got None")
        arr = as_float_array(be, raw, name)
        if arr.ndim == 0:
            raise ValueError(f"{name} must have at least one dimension (time is the last axis)")
        if i and arr.shape != out[0].shape:
            raise ValueError(
                f"{name} has shape {arr.shape} but {names[0]} has shape {out[0].shape}; they must match"
            )
        out.append(arr)
    if len(out) > 1:
        dtypes = {a.dtype for a in out}
        if len(dtypes) > 1:
            out = [a.astype(np.float64) for a in out]
    return be, out, rewrap


_FAST_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def check_same_labels(arrays: tuple[Any, ...], names: tuple[str, ...]) -> None:
    """``ValueError`` naming the argument when a pandas input's index (or a DataFrame's columns)
    differs from the first pandas input's: inputs are combined by position, so differently
    ordered or labelled frames would be mixed silently. A default ``RangeIndex`` (0, 1, ...)
    carries no labels and matches any axis of its length."""
    _check_same_polars_columns(arrays, names)
    ref = None
    for a, name in zip(arrays, names):
        if not is_pandas(a):
            continue
        if ref is None:
            ref = (a, name)
            continue
        other, other_name = ref
        for axis in ("index", "columns"):
            mine, theirs = getattr(a, axis, None), getattr(other, axis, None)
            if mine is None or theirs is None or _positional(mine) or _positional(theirs):
                continue  # a Series has no columns; shapes are compared by the caller
            if not mine.equals(theirs):
                raise ValueError(
                    f"{name} and {other_name} have different {axis} (labels or their order); align them "
                    f"first, e.g. {name}.reindex_like({other_name})"
                )


def _check_same_polars_columns(arrays: tuple[Any, ...], names: tuple[str, ...]) -> None:
    """``ValueError`` naming the argument when a polars DataFrame input's columns (names and
    order) differ from the first polars DataFrame input's (polars has no index to compare)."""
    pl = sys.modules.get("polars")
    frames = [(a, n) for a, n in zip(arrays, names) if pl is not None and isinstance(a, pl.DataFrame)]
    for a, name in frames[1:]:
        if a.columns != frames[0][0].columns:
            raise ValueError(f"{name} and {frames[0][1]} have different columns (names or their order); "
                             f"select them in the same order first, e.g. {name}.select({frames[0][1]}.columns)")


def _positional(labels: Any) -> bool:
    """Whether a pandas axis is the default ``RangeIndex`` 0, 1, ..., n-1 (no labels)."""
    return type(labels).__name__ == "RangeIndex" and labels.start == 0 and labels.step == 1
