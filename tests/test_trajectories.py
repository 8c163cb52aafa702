"""TrajectoryStore: recording, k-NN retrieval against NumPy brute force, verdicts against SciPy's
Student-t, and the saved file (round trip, corrupt and truncated files refused)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gpu_trader.trajectories import Trajectory, TrajectoryStore, Verdict
from gpu_trader.vectors import VectorIndex, VectorIndexFileError
from gpu_trader._internal import vector_io
from gpu_trader._internal.trajectory_stats import student_t_quantile

AREA = "vectors"  # the backends that implement it run these tests (conftest.py)


def episodes(n_traj, dim, seed=0, max_len=12):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_traj):
        T = int(rng.integers(1, max_len + 1))
        states = rng.normal(size=(T, dim))
        actions = rng.integers(-1, 2, T).astype(np.float64)
        outcomes = rng.normal(0.01, 0.05, T) if i % 3 else float(rng.normal())  # some final outcomes
        out.append((states, actions, outcomes, {"regime": "bull" if i % 2 else "bear", "i": i}))
    return out


def fill(store, eps):
    for states, actions, outcomes, meta in eps:
        store.record(states, actions, outcomes, meta)
    return store


def brute_force(eps, query, k, metric, keep=lambda meta: True):
    """Top-k (trajectory, step, score, outcome) over every recorded step, float64 NumPy."""
    rows = []
    for tid, (states, _, outcomes, meta) in enumerate(eps):
        if not keep(meta):
            continue
        outs = np.broadcast_to(outcomes, (len(states),))
        for step, s in enumerate(states):
            if metric == "cosine":
                score = s @ query / np.linalg.norm(s) / np.linalg.norm(query)
            elif metric == "ip":
                score = s @ query
            else:
                score = -np.sum((s - query) ** 2)
            rows.append((score, tid, step, float(outs[step])))
    rows.sort(key=lambda r: -r[0])
    return rows[:k]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_query_matches_brute_force(backend, metric):
    dim = 8
    eps = episodes(30, dim, seed=1)
    store = fill(TrajectoryStore(dim, metric, backend=backend), eps)
    assert store.n_trajectories == 30 and len(store) == sum(len(e[0]) for e in eps)
    rng = np.random.default_rng(2)
    for _ in range(5):
        q = rng.normal(size=dim)
        got = store.query(q, 7)
        want = brute_force(eps, q, 7, metric)
        assert list(zip(got.trajectories, got.steps)) == [(t, s) for _, t, s, _ in want]
        np.testing.assert_array_equal(got.outcomes, [o for *_, o in want])
        np.testing.assert_array_equal(got.actions, [eps[t][1][s] for _, t, s, _ in want])
        scores = np.asarray(got.scores, np.float64)
        np.testing.assert_allclose(-scores if metric == "l2" else scores, [w[0] for w in want], rtol=1e-4, atol=1e-4)
    batch = store.query(rng.normal(size=(3, dim)), 4)
    assert batch.trajectories.shape == (3, 4)


def test_filtered_query_and_verdict_vs_oracle(backend):
    dim = 6
    eps = episodes(40, dim, seed=3)
    store = fill(TrajectoryStore(dim, backend=backend), eps)
    q = np.random.default_rng(4).normal(size=dim)
    got = store.query(q, 5, filter={"regime": "bull"})
    want = brute_force(eps, q, 5, "cosine", keep=lambda m: m["regime"] == "bull")
    assert list(zip(got.trajectories, got.steps)) == [(t, s) for _, t, s, _ in want]
    # uniform weights: the textbook t-interval
    v = store.verdict(q, 9)
    y = np.array([o for *_, o in brute_force(eps, q, 9, "cosine")])
    se = y.std(ddof=1) / math.sqrt(9)
    half = stats.t.ppf(0.975, 8) * se
    assert isinstance(v, Verdict) and v.k == 9 and v.n_eff == pytest.approx(9)
    assert (v.mean, v.std_error, v.low, v.high) == pytest.approx((y.mean(), se, y.mean() - half, y.mean() + half),
                                                                  rel=1e-9, abs=1e-12)
    # softmax weights at a temperature
    v = store.verdict(q, 9, temperature=0.2, level=0.9)
    s = np.array([w[0] for w in brute_force(eps, q, 9, "cosine")])
    w = np.exp(s / 0.2) / np.exp(s / 0.2).sum()
    m = w @ y
    n_eff = 1 / np.sum(w ** 2)
    se = math.sqrt(np.sum(w * (y - m) ** 2) / (1 - np.sum(w ** 2)) / n_eff)
    half = stats.t.ppf(0.95, n_eff - 1) * se
    np.testing.assert_allclose(v.weights, w, rtol=1e-5)
    assert (v.mean, v.std_error, v.n_eff, v.high - v.low) == pytest.approx((m, se, n_eff, 2 * half), rel=1e-4)
    # a filter leaving fewer than k: the matches only; one match: no interval
    only = store.verdict(q, 5, filter={"i": 7})
    assert only.k == min(5, len(eps[7][0])) and set(only.trajectories) == {7}
    one = store.verdict(q, 3, filter={"i": [i for i, e in enumerate(eps) if len(e[0]) == 1][0]})
    assert one.k == 1 and math.isnan(one.std_error) and math.isnan(one.low)
    with pytest.raises(ValueError, match="filter"):
        store.verdict(q, 3, filter={"i": 999})


def test_student_t_quantile_vs_scipy():
    for df in (1.0, 1.3, 2.0, 2.7, 4.0, 9.5, 40.0, 1e4):
        for p in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9999):
            assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_record_inputs_and_errors():
    store = TrajectoryStore(4)
    states = np.asfortranarray(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))[:, :]
    states.flags.writeable = False
    actions = np.arange(10.0)[::2]
    actions.flags.writeable = False
    keep = states.copy()
    assert store.record(states, actions, 1.5) == 0
    np.testing.assert_array_equal(states, keep)
    assert store.record(np.ones(4), [1], [0.1], {"sym": np.str_("A")}) == 1  # one step, (dim,)
    t = store.trajectory(0)
    assert isinstance(t, Trajectory) and t.states.shape == (5, 4) and (t.outcomes == 1.5).all()
    np.testing.assert_allclose(np.linalg.norm(t.states, axis=1), 1, rtol=1e-6)
    assert store.trajectory(1).meta == {"sym": "A"}
    bad = [
        (dict(states=np.ones((0, 4)), actions=[], outcomes=[]), ValueError, "states"),
        (dict(states=np.ones((2, 3)), actions=[0, 0], outcomes=0.0), ValueError, "dimension"),
        (dict(states=np.ones((2, 4)), actions=[0], outcomes=0.0), ValueError, "actions"),
        (dict(states=np.ones((2, 4)), actions=[True, False], outcomes=0.0), TypeError, "actions"),
        (dict(states=np.ones((2, 4)), actions=[0, 0], outcomes=[0.0, np.nan]), ValueError, "outcomes"),
        (dict(states=np.ones((2, 4)), actions=[0, 0], outcomes=[0.0, 1, 2]), ValueError, "outcomes"),
        (dict(states=[[1, 1, 1, np.inf]], actions=[0], outcomes=0.0), ValueError, "NaN or infinite"),
        (dict(states=np.zeros((1, 4)), actions=[0], outcomes=0.0), ValueError, "all-zero"),
        (dict(states=np.ones((1, 4)), actions=[0], outcomes=0.0, meta={"sym": 1}), TypeError, "sym"),
        (dict(states=np.ones((1, 4)), actions=[0], outcomes=0.0, meta={"x": [1]}), TypeError, "meta"),
        (dict(states=np.ones((1, 4)), actions=[0], outcomes=0.0, meta={"x": math.inf}), ValueError, "meta"),
        (dict(states=np.ones((1, 4), bool), actions=[0], outcomes=0.0), TypeError, "states"),
    ]
    for kwargs, exc, match in bad:
        with pytest.raises(exc, match=match):
            store.record(**kwargs)
    assert (len(store), store.n_trajectories) == (6, 2)  # refused calls stored nothing
    assert store.query(np.ones(4), 6).trajectories.tolist().count(0) == 5
    for kwargs, exc in (({"level": 1.0}, ValueError), ({"level": True}, TypeError), ({"temperature": 0.0}, ValueError)):
        with pytest.raises(exc):
            store.verdict(np.ones(4), 2, **kwargs)
    with pytest.raises(ValueError, match="shape"):
        store.verdict(np.ones((2, 4)), 2)
    with pytest.raises(ValueError, match="k"):
        store.query(np.ones(4), 7)
    with pytest.raises(ValueError, match="empty"):
        TrajectoryStore(4).query(np.ones(4), 1)


def test_save_load_round_trip_and_refusals(tmp_path):
    dim = 5
    eps = episodes(12, dim, seed=5)
    store = fill(TrajectoryStore(dim, "l2"), eps)
    path = tmp_path / "traj.gtv"
    store.save(path)
    loaded = TrajectoryStore.load(path)
    assert (loaded.metric, len(loaded), loaded.n_trajectories) == ("l2", len(store), 12)
    q = np.random.default_rng(6).normal(size=dim)
    a, b = store.verdict(q, 6, filter={"regime": "bear"}), loaded.verdict(q, 6, filter={"regime": "bear"})
    assert (a.mean, a.std_error) == (b.mean, b.std_error)
    np.testing.assert_array_equal(a.trajectories, b.trajectories)
    assert loaded.trajectory(11).meta == eps[11][3]
    TrajectoryStore(3).save(tmp_path / "empty")
    assert len(TrajectoryStore.load(tmp_path / "empty")) == 0
    data = path.read_bytes()
    for name, blob in (("flip", data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]), ("cut", data[:len(data) // 2]),
                       ("empty", b"")):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(VectorIndexFileError):
            TrajectoryStore.load(tmp_path / name)
    VectorIndex(dim).save(tmp_path / "index")
    with pytest.raises(VectorIndexFileError, match="trajectory store"):
        TrajectoryStore.load(tmp_path / "index")
    # valid checksums, inconsistent contents
    config, sections = vector_io.read(path)
    arrays = {"states": sections["states"], "lengths": sections["lengths"]}
    blobs = {"values": sections["values"], "meta": sections["meta"]}
    for change in ({"lengths": sections["lengths"] + 1}, {"values": b"\0" * 8},
                   {"values": np.full(2 * len(store), np.nan).tobytes()}, {"meta": b"[1]"},
                   {"states": np.full_like(sections["states"], np.nan)}):
        a2 = {**arrays, **{k: v for k, v in change.items() if k in arrays}}
        b2 = {**blobs, **{k: v for k, v in change.items() if k in blobs}}
        vector_io.write(tmp_path / "bad", config, a2, b2)
        with pytest.raises(VectorIndexFileError):
            TrajectoryStore.load(tmp_path / "bad")
    vector_io.write(tmp_path / "bad", {**config, "dim": 0}, arrays, blobs)
    with pytest.raises(VectorIndexFileError, match="dim"):
        TrajectoryStore.load(tmp_path / "bad")


def test_queries_while_recording_from_another_thread():
    import threading

    dim = 4
    store = fill(TrajectoryStore(dim), episodes(3, dim, seed=7))
    errors = []

    def read():
        rng = np.random.default_rng(8)
        try:
            for _ in range(200):
                hits = store.query(rng.normal(size=dim), 3)
                n = len(store)
                assert ((hits.trajectories >= 0) & np.isfinite(hits.outcomes)).all()
                assert (hits.steps >= 0).all() and n >= 3
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for states, actions, outcomes, meta in episodes(60, dim, seed=9):
        store.record(states, actions, outcomes, meta)
    reader.join()
    assert not errors
    assert store.n_trajectories == 63
