"""JAX implementations of the backend areas (DESIGN.md section 1: ``jax_backend/``).

Each module here is the JAX twin of the ``cpu_fallback``/``kernels`` module of the
same name and has the same contract. The array formulations shared with CuPy
(:mod:`gpu_trader.risk_math`, :mod:`gpu_trader.correlation_math`) run on
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


def jit_static_tail(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(x, *params)`` compiled by :func:`jax.jit` with ``x`` traced and every other
    argument static (Python numbers, tuples and flags; a new value compiles once)."""
    @functools.lru_cache(maxsize=None)
    def compiled(n_params: int):
        return jax.jit(fn, static_argnums=tuple(range(1, 1 + n_params)))

    @functools.wraps(fn)
    def call(x, *params):
        return compiled(len(params))(x, *params)

    return call


def jit_methods(kernels: Any, names: Iterable[str]) -> Any:
    """Replace the methods ``names`` of the instance ``kernels`` by jitted versions
    (:func:`jit_static_tail`); calls between methods then go through the compiled ones."""
    for name in names:
        setattr(kernels, name, jit_static_tail(getattr(kernels, name)))
    return kernels
