"""The ``trajectories`` suite: the trajectory store (docs/design.md#benchmarks-and-targets).

Cases: ``record`` (one trajectory of 50 steps appended to a store, which starts afresh every
:data:`RESET_EVERY` steps), ``query`` (the 10 steps nearest one state) and ``verdict`` (the
same plus the weighted mean and t-interval of their outcomes), on a store of ``STEPS[size]``
steps of dimension :data:`DIM` (random unit states, 50-step trajectories, per-step outcomes).
The query case has FAISS's ``IndexFlatIP`` over the same normalized states as its reference
(``ratio:faiss``; BLAS and FAISS pinned to one thread, as in the ``vectors`` suite).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..harness import Reference, Workload
from .vectors import _pin_threads

__all__ = ["workloads"]

DIM = 64
LENGTH = 50  # steps per trajectory
K = 10
RESET_EVERY = 20_000  # steps per store before the record case starts a fresh one
STEPS = {"quick": 2_000, "standard": 10_000, "full": 100_000}  # steps stored for query and verdict
N_STATES = 64  # distinct query states the cases cycle through


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n, DIM)).astype(np.float32)
    states /= np.linalg.norm(states, axis=1, keepdims=True)
    actions = rng.integers(-1, 2, n).astype(np.float64)
    outcomes = rng.normal(0.0, 0.01, n)
    return states, actions, outcomes


def _store(be, n: int):
    from gpu_trader.trajectories import TrajectoryStore

    _pin_threads()
    states, actions, outcomes = _data(n)
    store = TrajectoryStore(DIM, backend=be.name)
    for start in range(0, n, LENGTH):
        rows = slice(start, start + LENGTH)
        store.record(be.asarray(states[rows]), actions[rows], outcomes[rows], {"regime": start % 3})
    return store


def _record() -> Workload:
    states, actions, outcomes = _data(4 * LENGTH, seed=1)

    def setup(be):
        from gpu_trader.trajectories import TrajectoryStore

        _pin_threads()
        chunks = [(be.asarray(states[i:i + LENGTH]), actions[i:i + LENGTH], outcomes[i:i + LENGTH])
                  for i in range(0, len(states), LENGTH)]
        state = {"store": TrajectoryStore(DIM, backend=be.name)}
        nxt = itertools.cycle(chunks).__next__

        def run():
            store = state["store"]
            if len(store) >= RESET_EVERY:
                store = state["store"] = TrajectoryStore(DIM, backend=be.name)
            store.record(*nxt(), {"regime": 1})
        return run

    return Workload(name=f"record one trajectory of {LENGTH} steps dim {DIM}", sizes={"steps": LENGTH, "dim": DIM},
                    setup=setup, run=lambda fn: fn(), items=LENGTH, unit="step", dtype="float32",
                    target="trajectories.record")


def _lookup(kind: str, n: int) -> Workload:
    queries = _data(N_STATES, seed=2)[0]

    def setup(be):
        store = _store(be, n)
        states = itertools.cycle([be.asarray(q) for q in queries]).__next__
        if kind == "query":
            return lambda: store.query(states(), K)
        return lambda: store.verdict(states(), K, temperature=0.1)

    def ref_setup():
        import faiss

        _pin_threads()
        index = faiss.IndexFlatIP(DIM)
        index.add(_data(n)[0])
        nxt = itertools.cycle(queries[:, None, :]).__next__
        return lambda: index.search(nxt(), K)

    references = (Reference("faiss", ref_setup, lambda fn: fn(), requires="faiss"),) if kind == "query" else ()
    return Workload(name=f"{kind} k={K}, {n} steps dim {DIM}", sizes={"steps": n, "dim": DIM, "k": K},
                    setup=setup, run=lambda fn: fn(), items=1, unit="query", dtype="float32",
                    target=f"trajectories.{kind}", references=references)


def workloads(size: str) -> list[Workload]:
    """All cases of the suite; ``size`` picks the steps stored (:data:`STEPS`)."""
    return [_record(), _lookup("query", STEPS[size]), _lookup("verdict", STEPS[size])]
