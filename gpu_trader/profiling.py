"""NVTX ranges around every public function, method and bench case (for Nsight Systems).

Profiling is off by default. Switch it on with the environment variable
``GPU_TRADER_NVTX=1`` (read once, when :mod:`gpu_trader` is imported) or at run time
with :func:`enable` / :func:`disable`. :func:`enable` imports the ``nvtx`` package
(in the ``cuda12``/``cuda13``/``nvtx`` extras); when it is not installed, profiling
stays off (a warning says so) and :func:`enable` returns False. ``import gpu_trader``
never imports ``nvtx`` while profiling is off.

:func:`annotate` gives a function an NVTX range named ``<module>.<qualname>`` (e.g.
``gpu_trader.indicators.sma``; pass a name to choose another); :func:`annotate_methods`
does the same for every public method of a class (``__call__`` included, properties
excluded), under the class's own name for inherited ones. Ranges live in the NVTX domain
``gpu_trader``. Synchronous calls use push/pop (thread-local, nested); ``async def``
methods use start/end process ranges, which survive interleaving on an event loop. A
range is closed even when the call raises.

Design -- zero cost while off: the decorators return the function itself and keep its
wrapper aside; :func:`enable` swaps the wrappers into every loaded ``gpu_trader`` module's
namespace (re-exports such as ``gpu_trader.sma`` included) and onto the classes, and
:func:`disable` puts the originals back; a module imported while profiling is on gets its
wrappers at definition. A wrapper keeps the signature, docstring and ``__wrapped__``
(:func:`functools.wraps`), records its range name in ``__nvtx_range__``
(:func:`wrapper_of` finds it) and checks one flag per call, so a wrapper still referenced
after :func:`disable` falls through. References taken while off -- ``from gpu_trader
import sma`` in user code, a bound method stored as a callback -- stay unprofiled after
:func:`enable`: set ``GPU_TRADER_NVTX=1`` to have every name wrapped from import on.
(A wrapper that always sits there and checks a flag was measured first: +0.05 us per
call, which made the trading loop's median tick 0.97 us instead of 0.64 us.)

Overhead (``python benches/nvtx_overhead.py [--tick]``: p50 of 20 000 single calls,
median of 5 interleaved runs, shared 2-core machine, so absolute figures drift by
~0.1-0.2 us between runs; the differences within one run are stable):

* 100-bar latency path, ``gt.sma(np.ndarray of 100 float64, 20)``, CPU backend: profiling
  off 3.43 us -- the undecorated function itself, zero overhead by construction; after
  :func:`enable` failed because ``nvtx`` is not installed: 3.43 us (nothing swapped);
  profiling on with the real ``nvtx`` and no profiler attached: 3.78 us (+0.35 us);
  a wrapper called while off: +0.08 us (no-op function: 0.05 -> 0.10 us; on: 0.27 us).
* ``TradingPipeline.on_tick``, median over a 20 000-tick, 50-symbol stream (about 4 ranges
  per tick, 13 on a tick that completes a bar and sends an order): off 0.64 us, on 1.48 us.

Bench cases: the harness opens one range per case (``bench.<suite>.<case>``) around the
whole case (warm-up, timing, yardsticks), outside the timed loop, so it adds nothing to a
sample; the public calls inside the case get their own ranges when profiling is on.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import warnings
from typing import Any, Callable, Iterator, TypeVar

__all__ = ["DOMAIN", "ENV_VAR", "annotate", "annotate_methods", "public_methods", "wrapper_of", "enable", "disable",
           "is_enabled", "nvtx_range"]

DOMAIN = "gpu_trader"
ENV_VAR = "GPU_TRADER_NVTX"

C = TypeVar("C", bound=type)

_on = False  # checked by every wrapper (a wrapper still referenced after disable() falls through)
_nvtx: Any = None  # the nvtx module while enabled
_wrappers: dict[int, Callable] = {}  # id(original function) -> its wrapper
_originals: dict[int, Callable] = {}  # id(wrapper) -> the original function
_keep: list[Callable] = []  # keeps originals and method wrappers alive, so their ids stay unique
_methods: list[tuple[type, str, Any, Any]] = []  # (class, name, original attribute or None if inherited, wrapper)


def enable() -> bool:
    """Turn NVTX ranges on: install the wrappers; returns False (and warns) when ``nvtx``
    is not installed, in which case nothing changes."""
    global _on, _nvtx
    try:
        import nvtx
    except ImportError:
        warnings.warn("gpu_trader profiling: the nvtx package is not installed; NVTX ranges stay off "
                      "(install the 'nvtx' extra)", RuntimeWarning, stacklevel=2)
        return False
    _nvtx, _on = nvtx, True
    _install(True)
    return True


def disable() -> None:
    """Turn NVTX ranges off: put the original functions and methods back."""
    global _on, _nvtx
    _on, _nvtx = False, None
    _install(False)


def is_enabled() -> bool:
    """True while NVTX ranges are being emitted."""
    return _on


def wrapper_of(fn: Callable) -> Callable:
    """The NVTX wrapper of a function decorated with :func:`annotate` (``fn`` itself when it is one)."""
    if id(fn) in _originals:
        return fn
    try:
        return _wrappers[id(fn)]
    except KeyError:
        raise ValueError(f"{fn!r} is not annotated") from None


def _install(on: bool) -> None:
    """Swap every annotated function in the loaded gpu_trader modules' namespaces (re-exports
    included) and every annotated method for its wrapper (``on``) or back."""
    table = _wrappers if on else _originals
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "gpu_trader" or name.startswith("gpu_trader.")):
            continue
        namespace = vars(mod)
        for key, value in list(namespace.items()):
            new = table.get(id(value)) if callable(value) else None
            if new is not None:
                namespace[key] = new
    for cls, attr, original, wrapper in _methods:
        if on:
            setattr(cls, attr, wrapper)
        elif original is None:
            if attr in vars(cls):
                delattr(cls, attr)
        else:
            setattr(cls, attr, original)


@contextlib.contextmanager
def nvtx_range(name: str) -> Iterator[None]:
    """A push/pop range named ``name`` around a ``with`` block (nothing when profiling is off)."""
    if not _on:
        yield
        return
    nvtx = _nvtx
    nvtx.push_range(name, domain=DOMAIN)
    try:
        yield
    finally:
        nvtx.pop_range(domain=DOMAIN)


def _wrap(fn: Callable, name: str) -> Callable:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*args, **kwargs):
            if not _on:
                return await fn(*args, **kwargs)
            nvtx = _nvtx
            handle = nvtx.start_range(name, domain=DOMAIN)
            try:
                return await fn(*args, **kwargs)
            finally:
                nvtx.end_range(handle)

        wrapper = awrapper
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not _on:
                return fn(*args, **kwargs)
            nvtx = _nvtx
            nvtx.push_range(name, domain=DOMAIN)
            try:
                return fn(*args, **kwargs)
            finally:
                nvtx.pop_range(domain=DOMAIN)

    wrapper.__nvtx_range__ = name
    return wrapper


def _register(fn: Callable, name: str) -> Callable:
    """The wrapper of ``fn`` (made once; a function annotated twice keeps its first name)."""
    wrapper = _wrappers.get(id(fn))
    if wrapper is None:
        wrapper = _wrap(fn, name)
        _wrappers[id(fn)] = wrapper
        _originals[id(wrapper)] = fn
        _keep.append(fn)
    return wrapper


def annotate(fn_or_name: Callable | str | None = None):
    """Decorator: an NVTX range around every call of the function while profiling is on.

    ``@annotate`` names the range ``<module>.<qualname>``; ``@annotate("name")`` uses
    ``name``. Returns the function itself while profiling is off (its wrapper is swapped
    in by :func:`enable`), the wrapper while it is on. Works on plain and ``async def``
    functions, ``staticmethod`` and ``classmethod`` objects.
    """
    def deco(fn, name=None):
        if isinstance(fn, (staticmethod, classmethod)):
            return type(fn)(deco(fn.__func__, name))
        wrapper = _register(fn, name or f"{fn.__module__}.{fn.__qualname__}")
        return wrapper if _on else fn

    if callable(fn_or_name) or isinstance(fn_or_name, (staticmethod, classmethod)):
        return deco(fn_or_name)
    return lambda fn: deco(fn, fn_or_name)


def public_methods(cls: type) -> dict[str, Any]:
    """The public methods of ``cls`` (``__call__`` included; properties, data and
    methods of ``object`` or of classes outside ``gpu_trader`` excluded), name -> the
    raw class attribute (function, staticmethod or classmethod), nearest in the MRO."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is object or not klass.__module__.startswith("gpu_trader"):
            continue
        for attr, value in vars(klass).items():
            if attr in out or (attr.startswith("_") and attr != "__call__"):
                continue
            if isinstance(value, (staticmethod, classmethod)) or inspect.isfunction(value):
                out[attr] = value
    return out


def annotate_methods(cls: C) -> C:
    """Class decorator: :func:`annotate` every public method of ``cls`` (see
    :func:`public_methods`); inherited ones get their own wrapper on ``cls``, named
    ``<cls.__module__>.<cls.__qualname__>.<method>``. Like :func:`annotate`, the
    wrappers are on the class only while profiling is on. Apply it outermost (after
    ``@dataclass``)."""
    for attr, value in public_methods(cls).items():
        descriptor = type(value) if isinstance(value, (staticmethod, classmethod)) else None
        fn = value.__func__ if descriptor else value
        fn = _originals.get(id(fn), fn)  # a base class's wrapper, installed while on
        wrapper = _wrap(fn, f"{cls.__module__}.{cls.__qualname__}.{attr}")
        _originals[id(wrapper)] = fn
        _keep.append(wrapper)
        _methods.append((cls, attr, vars(cls).get(attr), descriptor(wrapper) if descriptor else wrapper))
        if _on:
            setattr(cls, attr, _methods[-1][3])
    return cls


if os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on"):
    enable()
