"""JAX implementations of the backend areas (docs/architecture.md#layers).

Each module here is the JAX twin of the ``cpu_fallback``/``kernels`` module of the
same name and has the same contract. The array formulations shared with CuPy
(:mod:`gpu_trader._internal.risk_xp`, :mod:`gpu_trader._internal.correlation_xp`) run on
``jax.numpy`` with their public methods compiled by :func:`jax.jit`
(:func:`jit_methods`); indicators have formulations of their own (parallel scans,
:mod:`.indicators`); Monte Carlo draws with ``jax.random`` (:mod:`.montecarlo`).

The backend object (:class:`gpu_trader.backend.JaxBackend`) switches on JAX's 64-bit
mode before any module here is imported.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import jax

__all__ = ["jit_methods", "jit_static_tail"]

_STATIC_TYPES = (int, str, tuple, type(None))  # bool is an int; floats and arrays are traced


def jit_static_tail(fn: Callable[..., Any], static_floats: Iterable[int] = ()) -> Callable[..., Any]:
    """``fn(x, *params)`` compiled by :func:`jax.jit` with ``x`` traced, Python floats traced too
    (a new level, rate or decay does not recompile) and every other argument static: ints,
    flags and tuples, which fix shapes or code paths (a new value compiles once).
    ``static_floats``: argument positions (``x`` is 0) of floats the code needs as Python
    numbers (e.g. a confidence level turned into a normal quantile on the host)."""
    keep = frozenset(static_floats)

    @functools.lru_cache(maxsize=None)
    def compiled(static: tuple[int, ...]):
        return jax.jit(fn, static_argnums=static)

    @functools.wraps(fn)
    def call(x, *params):
        static = tuple(i for i, v in enumerate(params, 1)
                       if isinstance(v, _STATIC_TYPES) or (type(v) is float and i in keep))
        return compiled(static)(x, *params)

    return call


def jit_methods(obj: Any, names: Iterable[str], static_floats: dict[str, Iterable[int]] | None = None) -> Any:
    """Replace the methods ``names`` of the instance ``obj`` by jitted versions
    (:func:`jit_static_tail`, with ``static_floats[name]``); calls between methods then go
    through the compiled ones."""
    static_floats = static_floats or {}
    for name in names:
        setattr(obj, name, jit_static_tail(getattr(obj, name), static_floats.get(name, ())))
    return obj
