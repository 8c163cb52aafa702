"""Trajectory store: recorded (state embedding, action, outcome) sequences, retrieved by similarity.

A *trajectory* is ``T`` steps of one episode (a trade, a day of a strategy): a state embedding
``(dim,)`` per step (e.g. :meth:`gpu_trader.patterns.PatternMemory.embed`), the action taken
(a finite real: a position, an order size, a discrete action's code) and the outcome that
followed (a finite real: the step's reward, return-to-go, or one final outcome given to every
step). :class:`TrajectoryStore` keeps every step's state in a
:class:`gpu_trader.vectors.VectorIndex` (ids = step rows in recording order; the trajectory's
metadata on each of its steps, so queries can filter on it) and the trajectory id, step,
action and outcome of each row on the host.

* :meth:`TrajectoryStore.query`: the ``k`` past steps most similar to a state, with their
  trajectory, step, action and outcome;
* :meth:`TrajectoryStore.verdict`: their outcomes aggregated into a weighted mean with a
  Student-t confidence interval (:mod:`gpu_trader._internal.trajectory_stats`: uniform weights
  by default, a softmax of the similarity with ``temperature=``; standard error from Kish's
  effective sample size);
* :meth:`TrajectoryStore.save` / :meth:`TrajectoryStore.load`: one file in the vector index's
  atomic, checksummed format (:mod:`gpu_trader._internal.vector_io`), validated on load.

Errors: ``TypeError``/``ValueError`` naming the argument; a refused call stores nothing.
Thread safety: queries may run in many threads while one records (records are serialized).
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .backend import get_backend, to_numpy
from .profiling import annotate_methods
from .vectors import VectorIndex, VectorIndexFileError, _as_rows, _real_array
from ._internal import vector_io
from ._internal.trajectory_stats import similarity_weights, weighted_interval
from ._internal.validation import check_count, check_float, finite_real_array

__all__ = ["TrajectoryStore", "Neighbours", "Verdict", "Trajectory"]

FORMAT = "gpu-trader trajectory store"
"""The ``format`` field of a saved store's config (a vector index file has none)."""
MAX_STEPS = 1 << 40
"""Most steps one store holds (ids stay exact in float64 metadata and int64)."""
_META_TYPES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Neighbours:
    """Result of :meth:`TrajectoryStore.query`, best first, each ``(k,)`` (``(nq, k)`` for a
    batch of states): ``scores`` float32 on the store's device (as
    :meth:`VectorIndex.search`), and host arrays ``trajectories`` and ``steps`` (int64, -1
    where a filter left fewer than ``k`` matches), ``actions`` and ``outcomes`` (float64, NaN there)."""

    scores: Any
    trajectories: np.ndarray
    steps: np.ndarray
    actions: np.ndarray
    outcomes: np.ndarray


@dataclass(frozen=True)
class Verdict:
    """Result of :meth:`TrajectoryStore.verdict`: the weighted ``mean`` outcome of the ``k``
    neighbours used, its ``std_error`` and the ``level`` confidence interval ``[low, high]``
    (NaN when ``n_eff < 2``), Kish's effective sample size ``n_eff``; and, best first,
    ``weights`` (summing to 1), ``outcomes``, ``trajectories``, ``steps`` and ``scores`` of those
    neighbours (host arrays ``(k,)``)."""

    mean: float
    std_error: float
    low: float
    high: float
    level: float
    k: int
    n_eff: float
    weights: np.ndarray
    outcomes: np.ndarray
    trajectories: np.ndarray
    steps: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Trajectory:
    """One recorded trajectory (:meth:`TrajectoryStore.trajectory`): ``states`` ``(T, dim)``
    float32 as stored (unit length for cosine), ``actions`` and ``outcomes`` ``(T,)`` float64,
    ``meta`` (a dict copy)."""

    states: Any
    actions: np.ndarray
    outcomes: np.ndarray
    meta: dict


@annotate_methods
class TrajectoryStore:
    """A k-NN store of trajectories (see the module docstring).

    ``dim``, ``metric``, ``kind``, ``backend``, ``dtype``: those of the underlying
    :class:`VectorIndex` (``kind="exact"`` by default: with an approximate kind the
    neighbours, and so the verdict, are approximate).
    """

    def __init__(self, dim: int, metric: str = "cosine", *, kind: str = "exact", backend: str | None = None,
                 dtype: str = "float32"):
        self._index = VectorIndex(dim, metric, kind, backend, dtype)
        self._lengths: list[int] = []
        self._starts = np.empty(0, np.int64)  # first step row of each trajectory
        self._meta: list[dict] = []
        self._trajectory = np.empty(0, np.int64)  # by step row (= the index id)
        self._step = np.empty(0, np.int64)
        self._action = np.empty(0, np.float64)
        self._outcome = np.empty(0, np.float64)
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def metric(self) -> str:
        return self._index.metric

    @property
    def backend(self) -> str:
        return self._index.backend

    @property
    def index(self) -> VectorIndex:
        """The vector index of the step states (read it; adding to it directly breaks the store)."""
        return self._index

    def __len__(self) -> int:
        """Steps stored (all trajectories)."""
        return self._action.shape[0]

    @property
    def n_trajectories(self) -> int:
        return len(self._lengths)

    def __repr__(self) -> str:
        return (f"TrajectoryStore(dim={self.dim}, metric={self.metric!r}, backend={self.backend!r}, "
                f"trajectories={self.n_trajectories}, steps={len(self)})")

    # -- recording ----------------------------------------------------------------------
    def record(self, states, actions, outcomes, meta: Mapping[str, Any] | None = None) -> int:
        """Store one trajectory; return its id (they count up from 0).

        ``states``: ``(T, dim)`` (or ``(dim,)`` for one step) real, finite (for cosine no
        all-zero row); ``actions``: ``(T,)`` finite reals (not bool); ``outcomes``: ``(T,)``
        finite reals, or one scalar given to every step (the trajectory's final outcome);
        ``meta``: ``field -> value`` (str fields; None, bool, int, float or str values) put on
        every step, for :meth:`query`'s ``filter``. ``T``: 1 or more.
        """
        be = get_backend(self._index.backend)
        x, _ = _as_rows(_real_array(be, states, "states"), "states")
        T = x.shape[0]
        if T == 0:
            raise ValueError("states holds no step: a trajectory has at least one")
        act = finite_real_array(actions, "actions")
        if act.shape != (T,):
            raise ValueError(f"actions has shape {act.shape}, expected ({T},) for {T} states")
        out = finite_real_array(outcomes, "outcomes")
        if out.ndim == 0:
            out = np.full(T, float(out))
        elif out.shape != (T,):
            raise ValueError(f"outcomes has shape {out.shape}, expected ({T},) or a scalar for {T} states")
        return self._append(x, [T], act, out, [_checked_meta(meta)])

    def _append(self, states, lengths: list[int], actions, outcomes, metas: list[dict]) -> int:
        """Store checked trajectories (their rows concatenated); return the first one's id."""
        T = int(sum(lengths))
        fields = sorted({f for m in metas for f in m})
        if len(metas) == 1:
            metadata = metas[0] or None  # scalars: one value for every step
        else:
            metadata = {f: [m.get(f) for m, t in zip(metas, lengths) for _ in range(t)] for f in fields} or None
        with self._lock:
            n, tid = len(self), self.n_trajectories
            if n + T > MAX_STEPS:
                raise ValueError(f"the store holds at most {MAX_STEPS} steps")
            before = self._columns()
            # published before the index holds the rows, so a concurrent query finds them
            self._trajectory = np.concatenate([self._trajectory, np.repeat(np.arange(tid, tid + len(lengths)), lengths)])
            self._step = np.concatenate([self._step, *(np.arange(t, dtype=np.int64) for t in lengths)])
            self._action = np.concatenate([self._action, actions])
            self._outcome = np.concatenate([self._outcome, outcomes])
            try:
                self._index.add(states, ids=np.arange(n, n + T), metadata=metadata)
            except BaseException:
                self._trajectory, self._step, self._action, self._outcome = before
                raise
            self._starts = np.concatenate([self._starts, n + np.cumsum([0, *lengths[:-1]])]).astype(np.int64)
            self._lengths.extend(lengths)
            self._meta.extend(metas)
        return tid

    def _columns(self):
        return self._trajectory, self._step, self._action, self._outcome

    def trajectory(self, trajectory_id: int) -> Trajectory:
        """The recorded trajectory ``trajectory_id`` (an int in ``[0, n_trajectories)``)."""
        if not self.n_trajectories:
            raise ValueError("the store is empty: record a trajectory first")
        tid = check_count(trajectory_id, "trajectory_id", 0, self.n_trajectories - 1)
        start = int(self._starts[tid])
        rows = slice(start, start + self._lengths[tid])
        _, vectors = self._index.vectors()
        return Trajectory(vectors[rows], self._action[rows].copy(), self._outcome[rows].copy(), dict(self._meta[tid]))

    # -- retrieval ----------------------------------------------------------------------
    def query(self, state, k: int = 10, filter=None) -> Neighbours:
        """The ``k`` stored steps whose states are most similar to ``state`` (``(dim,)`` or
        ``(nq, dim)``), best first (see :class:`Neighbours`). ``k`` and ``filter`` as
        :meth:`VectorIndex.search` takes them (the filter sees the trajectories' meta fields)."""
        if not len(self):
            raise ValueError("the store is empty: record a trajectory first")
        scores, ids = self._index.search(state, k, filter=filter)
        rows = to_numpy(ids)
        found = rows >= 0
        safe = np.where(found, rows, 0)
        trajectory, step, action, outcome = self._columns()

        def pick(column, missing):
            return np.where(found, column[safe], missing)

        return Neighbours(scores, pick(trajectory, -1), pick(step, -1), pick(action, np.nan), pick(outcome, np.nan))

    def verdict(self, state, k: int = 10, *, level: float = 0.95, temperature: float | None = None,
                filter=None) -> Verdict:
        """Aggregate the outcomes of the ``k`` steps most similar to one ``state`` ``(dim,)``.

        Weights: uniform (``temperature=None``), or a softmax of the similarity at
        ``temperature`` (a finite float > 0; in score units: cosine similarity, inner
        product, or squared l2 distance). ``level``: the interval's confidence, a float in
        ``(0, 1)``. With a filter, the neighbours that match (at least one, else
        ``ValueError``). See :func:`gpu_trader._internal.trajectory_stats.weighted_interval`
        for the formulas.
        """
        level = check_float(level, "level", positive=True)
        if not level < 1.0:
            raise ValueError(f"level must be a confidence in (0, 1) such as 0.95, got {level}")
        if temperature is not None:
            temperature = check_float(temperature, "temperature", positive=True)
        if getattr(state, "ndim", np.ndim(state)) != 1:
            raise ValueError(f"state must have shape (dim,), got {np.shape(state)}")
        hits = self.query(state, k, filter=filter)
        used = hits.trajectories >= 0
        if not used.any():
            raise ValueError("no stored step matches the filter")
        scores = np.asarray(to_numpy(hits.scores), np.float64)[used]
        weights = similarity_weights(scores, self.metric, temperature)
        outcomes = hits.outcomes[used]
        mean, se, n_eff, low, high = weighted_interval(outcomes, weights, level)
        return Verdict(mean, se, low, high, level, int(used.sum()), n_eff, weights, outcomes,
                       hits.trajectories[used], hits.steps[used], scores)

    # -- persistence --------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the store to ``path`` atomically in the vector index file format
        (:func:`gpu_trader._internal.vector_io.write`: checksummed sections, temporary file
        renamed over the target): the states (as stored), the trajectory lengths, actions
        and outcomes (float64, exact) and the meta as JSON."""
        with self._lock:
            ids, vectors = self._index.vectors()
            lengths = np.array(self._lengths, np.int64)
            values = np.stack([self._action, self._outcome]).astype("<f8")
            meta = json.dumps(self._meta, allow_nan=False).encode()
            config = {"format": FORMAT, "dim": self.dim, "metric": self.metric, "kind": self._index.kind,
                      "dtype": self._index.dtype, "steps": len(self), "trajectories": self.n_trajectories}
        vector_io.write(path, config, {"states": to_numpy(vectors), "lengths": lengths},
                        {"values": values.tobytes(), "meta": meta})

    @classmethod
    def load(cls, path, *, backend: str | None = None) -> "TrajectoryStore":
        """Read a store written by :meth:`save`. ``VectorIndexFileError`` (a ``ValueError``)
        for a file that is not one: besides :func:`gpu_trader._internal.vector_io.read`'s checks
        (magic, checksums, truncation), the config's fields, the sections' names and shapes,
        lengths (>= 1, summing to the steps), finite actions and outcomes, the meta (one JSON
        object of scalars per trajectory) and the states (as :meth:`VectorIndex.add` checks
        them). ``OSError`` if the path cannot be opened."""
        config, sections = vector_io.read(path)
        try:
            store, states, lengths, values, meta = _file_contents(cls, config, sections, backend)
            if len(lengths):
                be = get_backend(store.backend)
                store._append(be.asarray(states), lengths.tolist(), values[0].copy(), values[1].copy(), meta)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            if isinstance(exc, VectorIndexFileError):
                raise
            raise VectorIndexFileError(f"{path}: {type(exc).__name__}: {exc}") from exc
        return store


def _checked_meta(meta) -> dict:
    """``meta`` as a dict of str fields and JSON scalar values (finite floats)."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping field -> value, got {type(meta).__name__}")
    out = {}
    for field, value in meta.items():
        if not isinstance(field, str):
            raise TypeError(f"meta fields must be str, got {field!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, _META_TYPES):
            raise TypeError(f"meta[{field!r}] must be None, bool, int, float or str, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"meta[{field!r}] is not finite")
        out[field] = value
    return out


def _file_contents(cls, config: dict, sections: dict, backend):
    """``(empty store, states, lengths, values (2, n), meta)`` of a read file, checked."""
    if config.get("format") != FORMAT:
        raise ValueError(f"not a trajectory store (format {config.get('format')!r})")
    if set(sections) != {"states", "lengths", "values", "meta"}:
        raise ValueError(f"sections {sorted(sections)}, expected states, lengths, values and meta")
    store = cls(config["dim"], config["metric"], kind=config["kind"], backend=backend, dtype=config["dtype"])
    n = check_count(config["steps"], "steps", 0, MAX_STEPS)
    m = check_count(config["trajectories"], "trajectories", 0, n)
    states, lengths, values = sections["states"], sections["lengths"], sections["values"]
    if states.dtype != np.float32 or states.shape != (n, store.dim):
        raise ValueError(f"states has dtype {states.dtype} and shape {states.shape}, expected float32 ({n}, {store.dim})")
    if lengths.dtype != np.int64 or lengths.shape != (m,) or (lengths < 1).any() or int(lengths.sum()) != n:
        raise ValueError(f"lengths must be {m} ints >= 1 summing to {n}")
    if len(values) != 16 * n:
        raise ValueError(f"values has {len(values)} bytes, expected {16 * n}")
    values = np.frombuffer(values, "<f8").reshape(2, n)
    if not np.isfinite(values).all():
        raise ValueError("actions or outcomes are not finite")
    meta = json.loads(sections["meta"])
    if not isinstance(meta, list) or len(meta) != m:
        raise ValueError(f"meta must be a JSON list of {m} objects")
    return store, states, lengths, values, [_checked_meta(item) for item in meta]
