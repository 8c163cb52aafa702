"""Scale-out on Dask: Monte Carlo VaR over a cluster, indicators over Dask arrays.

Install with ``pip install "gpu-trader[distributed]"`` (dask and distributed; for several
GPUs also ``dask-cuda``). Nothing here is imported by ``import gpu_trader``.

**Monte Carlo VaR** (:func:`var_monte_carlo`): the scenario range ``0 .. N-1`` is cut
into contiguous partitions on chunk boundaries; each worker simulates its partitions
with the same counter-based random streams a single process uses (block ``b`` is keyed
by ``(seed, b)``, see :mod:`gpu_trader.mc_engine`) and sends back only each
portfolio's worst ``k + b`` losses and their scenario numbers. The driver merges those
tails and computes VaR, CVaR, the standard error and the Euler contributions (re-drawing
the few scenarios of the band by number). The chunks are the single process's chunks,
so the same seed gives **bit-for-bit the same result** on one process and on any
cluster. Traffic per partition is ``O(n_portfolios * (k + b))`` numbers, not scenarios.

On several GPUs::

    from dask_cuda import LocalCUDACluster
    from distributed import Client
    client = Client(LocalCUDACluster())            # one worker per visible GPU
    res = gpu_trader.distributed.var_monte_carlo(client, weights, mu, cov, n_scenarios=100_000_000,
                                                 seed=7, backend="cuda")

**Indicators** (:func:`indicator`): any public indicator over a Dask array of many
symbols, time on the last axis; the time axis is gathered into one chunk (an
indicator is a scan over time) and the symbols stay chunked, one task per chunk.
A dask DataFrame (time along the index, one column per symbol) is turned into such an
array with ``ddf.to_dask_array(lengths=True).T``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import mc_engine
from .backend import get_backend, to_numpy
from .montecarlo import MONTE_CARLO_DEFAULTS, MonteCarloVaR, plan_monte_carlo, result
from .profiling import annotate
from .validation import check_count

__all__ = ["var_monte_carlo", "indicator"]


def partition_bounds(n_scenarios: int, chunk: int, partitions: int) -> list[tuple[int, int]]:
    """Split ``0 .. n_scenarios`` into at most ``partitions`` contiguous ``(start, stop)``
    ranges whose starts are multiples of ``chunk`` (so each worker runs whole chunks)."""
    n_chunks = math.ceil(n_scenarios / chunk)
    parts = max(1, min(partitions, n_chunks))
    edges = [round(i * n_chunks / parts) for i in range(parts + 1)]
    return [(a * chunk, min(b * chunk, n_scenarios)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _partition_tail(plan: mc_engine.Plan, start: int, stop: int, backend: str):
    """Run on a worker: the tail of scenarios ``start .. stop - 1``, as host arrays."""
    ops = get_backend(backend).ops("montecarlo")
    vals, idx = mc_engine.tail(plan, ops, start, stop)
    return to_numpy(vals), to_numpy(idx)


@annotate
def var_monte_carlo(client: Any, weights, mu, cov, *, partitions: int | None = None, **kwargs) -> MonteCarloVaR:
    """:func:`gpu_trader.var_monte_carlo` with the scenarios simulated on a Dask cluster.

    ``client``: a ``distributed.Client``. ``partitions``: how many scenario ranges to
    hand out (default: twice the number of workers). Every keyword of
    :func:`gpu_trader.var_monte_carlo` (``level``, ``n_scenarios``, ``horizon``, ``dist``,
    ``dof``, ``seed``, ``options``, ``contributions``, ``chunk_size``, ``dtype``,
    ``backend``) is accepted with the same default and meaning, and for the same
    ``seed``, ``backend`` and ``chunk_size`` the result is identical to it. ``backend``
    names the backend the *workers* use (and the driver, for the merge).
    """
    unknown = set(kwargs) - set(MONTE_CARLO_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    be, plan, single = plan_monte_carlo(weights, mu, cov, **{**MONTE_CARLO_DEFAULTS, **kwargs})
    if partitions is None:
        partitions = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    partitions = check_count(partitions, "partitions", 1)
    bounds = partition_bounds(plan.n_scenarios, plan.chunk, partitions)
    shared = client.scatter(plan, broadcast=True, hash=False)  # a fresh key: never a released one
    futures = [client.submit(_partition_tail, shared, start, stop, be.name, pure=False) for start, stop in bounds]
    tails = client.gather(futures)
    ops = be.ops("montecarlo")
    vals, idx = mc_engine.merge_tails(plan, ops, tails)
    return result(plan, mc_engine.finish(plan, ops, vals, idx), single, kwargs.get("dist", MONTE_CARLO_DEFAULTS["dist"]))


def _apply_indicator(name: str, n_out: int, params: dict, backend: str | None, *blocks):
    import gpu_trader

    out = getattr(gpu_trader, name)(*blocks, backend=backend, **params)
    return np.stack(out) if n_out > 1 else out


@annotate
def indicator(name: str, *arrays, backend: str | None = None, **params):
    """A public indicator (``"sma"``, ``"macd"``, ...) over Dask arrays ``(..., T)``.

    ``arrays``: the indicator's inputs (e.g. ``high, low, close`` for ``"atr"``), Dask
    arrays of one shape; ``params``: its scalar parameters (a parameter grid is not
    supported here: call once per value). Returns a Dask array of the input's shape, or
    a tuple of them for multi-output indicators (``macd``, ``bollinger``, ``stoch``).
    Lazy: nothing runs until ``.compute()``.
    """
    import dask.array as da

    from .indicator_specs import SPECS

    if name not in SPECS:
        raise ValueError(f"unknown indicator {name!r}; known: {', '.join(sorted(SPECS))}")
    n_in = SPECS[name][1]
    if len(arrays) != n_in:
        raise TypeError(f"indicator {name!r} takes {n_in} input array(s), got {len(arrays)}")
    for key, value in params.items():
        if isinstance(value, (list, tuple, range, np.ndarray)):
            raise TypeError(f"{key} must be one value here (a parameter grid is not supported over Dask)")
    arrays = [a if isinstance(a, da.Array) else da.asarray(a) for a in arrays]
    shape = arrays[0].shape
    for i, a in enumerate(arrays[1:], 1):
        if a.shape != shape:
            raise ValueError(f"input {i} has shape {a.shape} but input 0 has shape {shape}; they must match")
    arrays = [a.rechunk({a.ndim - 1: -1}) for a in arrays]
    arrays = [a.rechunk(arrays[0].chunks) for a in arrays]
    n_out = SPECS[name][2]
    dtype = np.result_type(*(a.dtype for a in arrays), np.float32)
    if n_out == 1:
        return da.map_blocks(_apply_indicator, name, 1, params, backend, *arrays, dtype=dtype)
    stacked = da.map_blocks(_apply_indicator, name, n_out, params, backend, *arrays, dtype=dtype,
                            new_axis=0, chunks=((n_out,),) + arrays[0].chunks)
    return tuple(stacked[i] for i in range(n_out))
