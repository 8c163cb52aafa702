"""Scale-out on Dask: Monte Carlo VaR over a cluster, indicators over Dask arrays.

Install with ``pip install "gpu-trader[distributed]"`` (dask and distributed; for several
GPUs also ``dask-cuda``). Nothing here is imported by ``import gpu_trader``.

**Monte Carlo VaR** (:func:`var_monte_carlo`): the scenario range ``0 .. N-1`` is cut
into contiguous partitions on chunk boundaries; each worker simulates its partitions
with the same counter-based random streams a single process uses (block ``b`` is keyed
by ``(seed, b)``, see :mod:`gpu_trader._internal.montecarlo_xp`) and sends back only each
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
A dask DataFrame (time along the index, one column per symbol, as pandas input
everywhere in the package) gives a dask DataFrame back with the same index, columns and
partitions. The indicator's name, parameters (with their bounds) and the inputs' dtypes
are checked when the graph is built, not when it runs.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ._internal import montecarlo_xp
from .backend import is_pandas, check_real_dtype, get_backend, host_input, to_numpy
from .montecarlo import MONTE_CARLO_DEFAULTS, MonteCarloVaR, plan_monte_carlo, result
from .profiling import annotate
from ._internal.validation import MAX_GRID, check_count, check_work_memory

__all__ = ["var_monte_carlo", "merge_bytes", "indicator"]


def partition_bounds(n_scenarios: int, chunk: int, partitions: int) -> list[tuple[int, int]]:
    """Split ``0 .. n_scenarios`` into at most ``partitions`` contiguous ``(start, stop)``
    ranges whose starts are multiples of ``chunk`` (so each worker runs whole chunks)."""
    n_chunks = math.ceil(n_scenarios / chunk)
    parts = max(1, min(partitions, n_chunks))
    edges = [round(i * n_chunks / parts) for i in range(parts + 1)]
    return [(a * chunk, min(b * chunk, n_scenarios)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _partition_tail(plan: montecarlo_xp.Plan, start: int, stop: int, backend: str):
    """Run on a worker: the tail of scenarios ``start .. stop - 1``, as host arrays."""
    ops = get_backend(backend).ops("montecarlo")
    vals, idx = montecarlo_xp.tail(plan, ops, start, stop)
    return to_numpy(vals), to_numpy(idx)


@annotate
def var_monte_carlo(client: Any, weights, mu, cov, *, partitions: int | None = None, **kwargs) -> MonteCarloVaR:
    """:func:`gpu_trader.var_monte_carlo` with the scenarios simulated on a Dask cluster.

    ``client``: a ``distributed.Client``. ``partitions``: how many scenario ranges to
    hand out (default: twice the number of workers; at most 100000). Every keyword of
    :func:`gpu_trader.var_monte_carlo` (``level``, ``n_scenarios``, ``horizon``, ``dist``,
    ``dof``, ``seed``, ``options``, ``contributions``, ``chunk_size``, ``dtype``,
    ``backend``) is accepted with the same default and meaning, and for the same
    ``seed``, ``backend`` and ``chunk_size`` the result is identical to it. ``backend``
    names the backend the *workers* use (and the driver, for the merge).

    The driver holds every partition's tail before merging them: about
    :func:`merge_bytes` on top of the single process's
    :func:`gpu_trader._internal.montecarlo_xp.work_bytes`; a call whose total exceeds
    :data:`gpu_trader._internal.validation.WORK_MEMORY_LIMIT` is refused (``ValueError``) before
    anything is sent to the cluster.
    """
    missing = [m for m in ("scheduler_info", "scatter", "submit", "gather") if not callable(getattr(client, m, None))]
    if missing:
        raise TypeError(f"client must be a distributed.Client (it lacks {', '.join(missing)}), "
                        f"got {type(client).__name__}")
    unknown = set(kwargs) - set(MONTE_CARLO_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    be, plan, single = plan_monte_carlo(weights, mu, cov, **{**MONTE_CARLO_DEFAULTS, **kwargs})
    if partitions is None:
        partitions = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    partitions = check_count(partitions, "partitions", 1, MAX_GRID)
    bounds = partition_bounds(plan.n_scenarios, plan.chunk, partitions)
    ops = be.ops("montecarlo")
    check_work_memory(merge_bytes(plan, len(bounds)) + montecarlo_xp.work_bytes(plan, ops),
                      f"distributed var_monte_carlo merging {len(bounds)} partitions' tails")
    shared = client.scatter(plan, broadcast=True, hash=False)  # a fresh key: never a released one
    futures = [client.submit(_partition_tail, shared, start, stop, be.name, pure=False) for start, stop in bounds]
    tails = client.gather(futures)
    vals, idx = montecarlo_xp.merge_tails(plan, ops, tails)
    return result(plan, montecarlo_xp.finish(plan, ops, vals, idx), single, kwargs.get("dist", MONTE_CARLO_DEFAULTS["dist"]))


@annotate
def merge_bytes(plan: Any, n_partitions: int) -> int:
    """Bytes the driver holds to merge ``n_partitions`` tails of ``plan``: each partition's
    ``(P, keep)`` losses and scenario numbers, their concatenation and its sort order."""
    if not isinstance(plan, montecarlo_xp.Plan):
        raise TypeError(f"plan must be a gpu_trader._internal.montecarlo_xp.Plan, got {type(plan).__name__}")
    n_partitions = check_count(n_partitions, "n_partitions", 1)
    P, m = plan.weights.shape[0], plan.keep
    return 2 * n_partitions * P * m * (plan.dtype.itemsize + 8) + 8 * n_partitions * P * m


class _Frame:
    """What a set of dask DataFrame (or Series) inputs share: index, columns, partitions."""

    def __init__(self, first, columns, row_chunks, n_chunks: int):
        self.first, self.columns, self.row_chunks, self.n_chunks = first, columns, row_chunks, n_chunks


def _frame_layout(inputs) -> _Frame | None:
    """None for array inputs; the shared layout of dask DataFrame/Series inputs (``TypeError``
    for a mix of kinds, ``ValueError`` for frames that do not line up)."""
    dd = sys.modules.get("dask.dataframe")
    if dd is None:
        return None
    kinds = [isinstance(a, dd.DataFrame) or isinstance(a, dd.Series) for a in inputs]
    if not any(kinds):
        return None
    if not all(kinds) or len({type(a) for a in inputs}) > 1:
        raise TypeError("inputs must be all Dask arrays, all dask DataFrames or all dask Series, not a mix")
    first = inputs[0]
    columns = list(first.columns) if isinstance(first, dd.DataFrame) else None
    for i, a in enumerate(inputs[1:], 1):
        if columns is not None and list(a.columns) != columns:
            raise ValueError(f"input {i} has columns {list(a.columns)} but input 0 has {columns}; they must match")
        if a.npartitions != first.npartitions:
            raise ValueError(f"input {i} has {a.npartitions} partitions but input 0 has {first.npartitions}")
    if all(a.known_divisions for a in inputs):
        for i, a in enumerate(inputs[1:], 1):
            if tuple(a.divisions) != tuple(first.divisions):
                raise ValueError(f"input {i} has index divisions {a.divisions} but input 0 has {first.divisions}")
    import dask

    # the one eager step: partition lengths (a pass over the index) to cut the time axis back
    counts = dask.compute(*[a.map_partitions(len) for a in inputs])
    lengths = tuple(int(n) for n in counts[0])
    for i, c in enumerate(counts[1:], 1):
        if tuple(int(n) for n in c) != lengths:
            raise ValueError(f"input {i} has partitions of {tuple(int(n) for n in c)} rows but input 0 has "
                             f"{lengths}; the frames must be partitioned alike")
    if columns is not None and not columns:
        raise ValueError("a DataFrame input needs at least one column (symbol)")
    n_symbols = len(columns) if columns is not None else 1
    return _Frame(first, columns, lengths, max(1, min(first.npartitions, n_symbols)))


def _frame_to_array(a, frame: _Frame):
    """A dask DataFrame ``(T, n)`` as a Dask array ``(n, T)`` in ``frame.n_chunks`` symbol chunks
    (a Series as ``(T,)``)."""
    x = a.to_dask_array(lengths=frame.row_chunks)
    if frame.columns is None:
        return x
    n = len(frame.columns)
    return x.T.rechunk({0: -(-n // frame.n_chunks), 1: -1})


def _array_to_frame(x, frame: _Frame):
    """The inverse of :func:`_frame_to_array`: the original index, columns and partitions."""
    import dask.dataframe as dd

    if frame.columns is None:
        return dd.from_dask_array(x.rechunk((frame.row_chunks,)), columns=frame.first.name, index=frame.first.index)
    return dd.from_dask_array(x.T.rechunk((frame.row_chunks, -1)), columns=frame.columns, index=frame.first.index)


def _from_pandas(a):
    """A pandas DataFrame or Series as a one-partition dask one (time along the index, as
    everywhere in the package); anything else as it is."""
    if not is_pandas(a):
        return a
    import dask.dataframe as dd

    return dd.from_pandas(a, npartitions=1)


def _dask_input(da, a, name: str):
    """A Dask array of real numbers; a host array is checked (and made native, see
    :func:`gpu_trader.backend.host_input`) before it is wrapped."""
    if isinstance(a, da.Array):
        check_real_dtype(a.dtype, name)
        return a
    return da.asarray(host_input(a, name))


def _apply_indicator(name: str, n_out: int, params: dict, backend: str | None, *blocks):
    import gpu_trader

    out = getattr(gpu_trader, name)(*blocks, backend=backend, **params)
    return np.stack(out) if n_out > 1 else out


@annotate
def indicator(name: str, *arrays, backend: str | None = None, **params):
    """A public indicator (``"sma"``, ``"macd"``, ...) over Dask arrays or dask DataFrames.

    ``arrays``: the indicator's inputs (e.g. ``high, low, close`` for ``"atr"``), either
    Dask arrays ``(..., T)`` of one shape, or dask DataFrames with time along the index
    and one column per symbol (the pandas convention of the whole package; every frame
    with the same columns and partitions), or dask Series (one symbol); a pandas DataFrame
    or Series is taken as a one-partition dask one (and gives one). ``params``: its
    scalar parameters (a parameter grid is not supported here: call once per value).
    Returns the input's kind and shape (a DataFrame keeps its index, columns and
    partitions), or a tuple of them for multi-output indicators (``macd``,
    ``bollinger``, ``stoch``). Lazy: nothing runs until ``.compute()``, except, for dask
    DataFrames, one pass that counts the rows of each partition (the time axis has to be
    cut back into them; for a frame read from files that pass reads the index).

    A DataFrame's row partitions cut the time axis, which an indicator scans whole; its
    columns are therefore regrouped into as many symbol chunks as it has partitions
    (one task each) and the results cut back into the original partitions.
    """
    import dask.array as da

    from ._internal.indicator_specs import INPUT_FIELDS, SPECS, check_name
    from ._internal.indicator_params import check_params_by_name

    check_name(name, "indicator")
    n_in = SPECS[name][1]
    if len(arrays) != n_in:
        raise TypeError(f"indicator {name!r} takes {n_in} input array(s), got {len(arrays)}")
    for key, (_, is_grid) in zip(SPECS[name][3], check_params_by_name(name, params, f"indicator {name!r}")):
        if is_grid:
            raise TypeError(f"{key} must be one value here (a parameter grid is not supported over Dask)")
    arrays = tuple(_from_pandas(a) for a in arrays)
    frame = _frame_layout(arrays)
    if frame is not None:
        outs = indicator(name, *(_frame_to_array(a, frame) for a in arrays), backend=backend, **params)
        if isinstance(outs, tuple):
            return tuple(_array_to_frame(o, frame) for o in outs)
        return _array_to_frame(outs, frame)

    fields = INPUT_FIELDS[name]
    arrays = [_dask_input(da, a, f"input {i} ({fields[i]})") for i, a in enumerate(arrays)]
    shape = arrays[0].shape
    if not shape:
        raise ValueError("input 0 must have at least one dimension (time is the last axis)")
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
