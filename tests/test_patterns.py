"""PatternMemory: embedding against a direct per-window loop, outcomes against the bars,
distillation against scikit-learn's KMeans objective."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from gpu_trader._internal import vector_xp
from gpu_trader.patterns import PatternMemory, window_patterns

AREA = "vectors"  # the backends that implement it run these tests (conftest.py)

sklearn_cluster = pytest.importorskip("sklearn.cluster")


def ohlcv(n_bars, seed=0):
    """Random-walk bars of one symbol (writable copies)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
    spread = rng.uniform(0.0, 0.01, (2, n_bars))
    return {"open": close.copy(), "high": close * (1 + spread[0]), "low": close * (1 - spread[1]),
            "close": close, "volume": rng.integers(1, 10_000, n_bars).astype(np.float64)}


SPEC = {"rsi": ("rsi", {"window": 14}), "sma": ("sma", {"window": 10}), "obv": ("obv", {})}


def loop_pattern(feats: dict, end: int, window: int) -> np.ndarray:
    """The pattern of the window ending at bar ``end``, one feature at a time, unit length."""
    parts = []
    for key in feats:
        w = np.asarray(feats[key][end - window + 1:end + 1], np.float64)
        sd = w.std()
        parts.append((w - w.mean()) / sd if sd > 0 else np.zeros(window))
    v = np.concatenate(parts)
    return v / np.linalg.norm(v)


def test_embedding_matches_a_per_window_loop(backend):
    bars = ohlcv(300)
    pm = PatternMemory(12, SPEC, backend=backend)
    ends, pats = pm.embed_history({k: gt.get_backend(backend).asarray(v) for k, v in bars.items()})
    feats = gt.features(bars, SPEC)
    assert ends[0] == 14 + 12 - 1  # RSI(14) is the longest lookback
    assert ends[-1] == 299 and len(ends) == 300 - ends[0]
    pats = gt.to_numpy(pats)
    for j in (0, 7, len(ends) - 1):
        got = pats[j] / np.linalg.norm(pats[j])
        np.testing.assert_allclose(got, loop_pattern(feats, int(ends[j]), 12), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gt.to_numpy(pm.embed(bars)), pats[-1], rtol=1e-12)


def test_window_patterns_constant_feature_gives_zeros():
    f = np.vstack([np.ones(10), np.arange(10.0)])
    p = window_patterns(np, f, 4)
    assert p.shape == (7, 8)
    assert (p[:, :4] == 0).all()
    np.testing.assert_allclose(p[0, 4:], (np.arange(4) - 1.5) / np.arange(4).std())


def test_add_history_outcomes_and_query(backend):
    bars_a, bars_b = ohlcv(400, seed=1), ohlcv(400, seed=2)
    pm = PatternMemory(10, SPEC, backend=backend)
    ids_a = pm.add_history(bars_a, horizon=3, metadata={"symbol": "A"})
    ids_b = pm.add_history(bars_b, horizon=3, metadata={"symbol": "B"})
    assert len(pm) == len(ids_a) + len(ids_b)
    # the pattern ending at bar t is stored with close[t + 3] / close[t] - 1
    t = 200
    probe = pm.embed({k: v[:t + 1] for k, v in bars_a.items()})
    scores, ids, outcomes = pm.query(probe, 5)
    assert gt.to_numpy(scores)[0] == pytest.approx(1.0, abs=1e-5)
    close = bars_a["close"]
    assert outcomes[0] == pytest.approx(close[t + 3] / close[t] - 1, rel=1e-12)
    assert np.all(np.diff(gt.to_numpy(scores)) <= 1e-7)
    # filtered by symbol: only B's patterns
    _, ids_f, _ = pm.query(probe, 20, filter={"symbol": "B"})
    assert np.isin(gt.to_numpy(ids_f), ids_b).all()
    # the last 3 bars have no outcome yet: not stored
    assert len(ids_a) == 400 - 3 - (14 + 10 - 1)


def test_distill_objective_vs_sklearn(backend):
    rng = np.random.default_rng(0)
    pm = PatternMemory(5, {"c": ("sma", {"window": 2})}, backend=backend)
    centres = rng.standard_normal((6, 5))
    pats = centres[rng.integers(0, 6, 300)] + 0.05 * rng.standard_normal((300, 5))
    pm.add(pats, rng.standard_normal(300))
    res = pm.distill(6, seed=1)
    _, x = pm.index.vectors()
    x = gt.to_numpy(x).astype(np.float64)
    best = sklearn_cluster.KMeans(6, n_init=10, random_state=0).fit(x).inertia_
    assert res.inertia == pytest.approx(best, rel=1e-3)
    # the reported objective is that of the reported centroids and labels
    c = gt.to_numpy(res.centroids).astype(np.float64)
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(res.labels, d.argmin(1))
    assert res.inertia == pytest.approx(d.min(1).sum(), rel=1e-4)
    assert res.counts.sum() == 300
    out = pm._outcomes
    np.testing.assert_allclose(res.mean_outcome, [out[res.labels == j].mean() for j in range(6)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_on_random_data_close_to_sklearn(seed):
    x = np.random.default_rng(seed).standard_normal((400, 8))
    _, _, inertia = vector_xp.kmeans(np, x, 10, 100, seed, 0.0, np.asarray)
    best = sklearn_cluster.KMeans(10, n_init=10, random_state=seed).fit(x).inertia_
    assert inertia <= 1.05 * best


def test_errors():
    pm = PatternMemory(5)
    with pytest.raises(ValueError, match="empty"):
        pm.query(np.ones(5))
    with pytest.raises(ValueError, match="window"):
        PatternMemory(1)
    with pytest.raises(ValueError, match="outcomes"):
        pm.add(np.ones((2, 5)), [1.0])
    with pytest.raises(ValueError, match="NaN"):
        pm.add(np.ones(5), np.nan)
    pm.add(np.eye(5), np.arange(5.0))
    with pytest.raises(ValueError, match="n_clusters"):
        pm.distill(6)
    with pytest.raises(ValueError, match="horizon"):
        pm.add_history(ohlcv(100), horizon=0)
    with pytest.raises(ValueError, match="pass more history"):
        PatternMemory(20).embed(ohlcv(30))


def test_integer_parameters_are_bounded():
    from gpu_trader.patterns import MAX_KMEANS_ITER
    from gpu_trader._internal.validation import MAX_WINDOW

    for bad in (2**63, 2**63 - 1, MAX_WINDOW + 1, np.uint64(2**64 - 1)):
        with pytest.raises(ValueError, match="window"):
            PatternMemory(bad)
    for bad in (True, np.True_, 20.0):
        with pytest.raises(TypeError, match="window"):
            PatternMemory(bad)
    assert PatternMemory(np.int32(5)).window == 5
    pm = PatternMemory(5)
    pm.add(np.eye(5), np.arange(5.0))
    for bad in (6, 2**63, 2**62):
        with pytest.raises(ValueError, match="k must be <= 5"):
            pm.query(np.ones(5), k=bad)
        with pytest.raises(ValueError, match="k must be <= 5"):
            pm.query(np.ones(5), k=bad, filter=lambda meta: np.ones(5, bool))
    with pytest.raises(TypeError, match="k"):
        pm.query(np.ones(5), k=True)
    scores, ids, outcomes = pm.query(np.eye(5)[2], k=np.int64(2))
    assert int(ids[0]) == 2 and outcomes[0] == 2.0
    with pytest.raises(ValueError, match="horizon"):
        pm.add_history(ohlcv(100), horizon=2**63)
    with pytest.raises(ValueError, match="n_iter"):
        pm.distill(2, n_iter=MAX_KMEANS_ITER + 1)
    with pytest.raises(ValueError, match="seed"):
        pm.distill(2, seed=-1)
    with pytest.raises(ValueError, match="tol"):
        pm.distill(2, tol=float("nan"))
    with pytest.raises(ValueError, match="empty"):
        PatternMemory(5).distill(1)
    with pytest.raises(ValueError, match="window"):
        window_patterns(np, np.ones((3, 10)), 2**63)


@settings(max_examples=30, deadline=None)
@given(window=st.one_of(st.integers(-(2**70), 2**70), st.integers(2, 12), st.integers(0, 2**64 - 1).map(np.uint64),
                        st.sampled_from([2**63, 100_000, 100_001, 1, True, np.True_])),
       k=st.one_of(st.integers(-(2**64), 2**64), st.integers(1, 8).map(np.int16), st.sampled_from([True, 2**63])))
def test_hostile_integers_refused_or_correct(window, k):
    from gpu_trader._internal.validation import MAX_WINDOW

    if isinstance(window, (bool, np.bool_)) or not 2 <= int(window) <= MAX_WINDOW:
        with pytest.raises((TypeError, ValueError), match="window"):
            PatternMemory(window)
        return
    pm = PatternMemory(window)
    assert pm.window == int(window)
    pm.add(np.eye(8), np.arange(8.0))
    if isinstance(k, (bool, np.bool_)) or not 1 <= int(k) <= 8:
        with pytest.raises((TypeError, ValueError), match="k"):
            pm.query(np.eye(8)[3], k=k)
        return
    _, ids, outcomes = pm.query(np.eye(8)[3], k=k)
    assert len(ids) == int(k) and int(ids[0]) == 3 and outcomes[0] == 3.0


def test_read_only_mixed_and_vendor_named_bars():
    bars = ohlcv(160, seed=5)
    frozen = {k.capitalize(): v.copy() for k, v in bars.items()}
    for k in ("Open", "High", "Close"):
        frozen[k].flags.writeable = False
    frozen["Volume"] = bars["volume"].astype(np.int64)  # writable, another dtype
    a, b = PatternMemory(10, SPEC), PatternMemory(10, SPEC)
    ids_a = a.add_history(frozen, horizon=2)
    ids_b = b.add_history({**bars, "volume": bars["volume"].astype(np.int64).astype(np.float64)}, horizon=2)
    assert len(ids_a) == len(ids_b) > 0
    np.testing.assert_array_equal(a._outcomes, b._outcomes)
    np.testing.assert_array_equal(a.embed(frozen), b.embed(bars))
    with pytest.raises(TypeError, match="outcomes is a masked array"):
        a.add(np.ones(a.index.dim), np.ma.masked_array([1.0], mask=[True]))
    with pytest.raises(ValueError, match=r"missing field\(s\) \['volume'\]"):
        a.add_history({k: v for k, v in frozen.items() if k != "Volume"})


# -- the embedding cache ------------------------------------------------------------------
from collections import OrderedDict  # noqa: E402

from gpu_trader import patterns as patterns_module  # noqa: E402
from gpu_trader.patterns import CacheStats, EmbeddingCache  # noqa: E402


@pytest.fixture
def zscore_rows(monkeypatch):
    """Counts the windows PatternMemory z-scores (embeds), through a spy on the shared helper."""
    count = [0]
    real = patterns_module._zscore_windows

    def spy(xp, w):
        count[0] += int(w.shape[0])
        return real(xp, w)

    monkeypatch.setattr(patterns_module, "_zscore_windows", spy)
    return count


def test_cached_history_embeds_only_new_windows_and_matches_uncached(zscore_rows):
    bars = ohlcv(160, seed=3)
    plain = PatternMemory(12, SPEC)
    cached = PatternMemory(12, SPEC, cache=EmbeddingCache(max_entries=1000))
    expected, seen = {}, []
    for T in (60, 100, 160):  # a growing (append-only) history, re-embedded from the start each time
        head = {k: v[:T] for k, v in bars.items()}
        e0, p0 = plain.embed_history(head)
        zscore_rows[0] = 0
        e1, p1 = cached.embed_history(head, symbol="AAA")
        np.testing.assert_array_equal(e0, e1)
        np.testing.assert_array_equal(p0, p1)  # bit-identical: the same z-scoring
        assert zscore_rows[0] == len(e1) - len(expected)  # only windows not seen before were embedded
        seen.append(len(expected))
        expected.update(zip(e1.tolist(), p1))
    s = cached.cache.stats()
    assert s.hits == sum(seen) and s.misses == len(expected) and s.evictions == 0
    assert s.entries == len(expected) and s.nbytes == sum(p.nbytes for p in expected.values())
    # another symbol, or the same bars changed inside a window, is not a hit
    zscore_rows[0] = 0
    cached.embed_history(bars, symbol="BBB")
    assert zscore_rows[0] == len(expected)
    moved = {k: v.copy() for k, v in bars.items()}
    moved["close"][-1] *= 1.01  # the last bar corrected (the contract: bars change only inside a window)
    zscore_rows[0] = 0
    e2, p2 = cached.embed_history(moved, symbol="AAA")
    assert zscore_rows[0] == 1  # the one window holding it
    np.testing.assert_array_equal(p2, plain.embed_history(moved)[1])


def test_cached_embed_and_add_history(zscore_rows):
    bars = ohlcv(120, seed=4)
    import pandas as pd
    frame = pd.DataFrame(bars, index=pd.date_range("2024-01-01", periods=120, freq="D"))
    cache = EmbeddingCache(max_entries=4)
    pm = PatternMemory(10, SPEC, cache=cache)
    ref = PatternMemory(10, SPEC)
    for T in (80, 81, 80, 81):  # a rolling query: each window end embedded once
        np.testing.assert_array_equal(pm.embed(frame.iloc[:T], symbol="X"), ref.embed(frame.iloc[:T]))
    assert (cache.stats().hits, cache.stats().misses) == (2, 2)
    assert zscore_rows[0] == 2 + 4  # two misses here, four embeds by the uncached reference
    ids = pm.add_history(frame, symbol="X")
    np.testing.assert_array_equal(ids, ref.add_history(frame))
    assert cache.stats().entries == 4 and cache.stats().evictions > 0  # bounded by max_entries
    with pytest.raises(TypeError, match="cache"):
        PatternMemory(10, SPEC, cache={})


def test_lru_eviction_order_matches_a_model():
    rng = np.random.default_rng(0)
    cache = EmbeddingCache(max_entries=5, max_bytes=6 * 80)
    model: OrderedDict = OrderedDict()
    hits = misses = evictions = 0
    for _ in range(400):
        key = int(rng.integers(0, 9))
        if rng.random() < 0.5:
            got = cache.get(key) if rng.random() < 0.5 else cache.get_many([key])[0]
            if key in model:
                model.move_to_end(key)
                hits += 1
                assert got is model[key]
            else:
                misses += 1
                assert got is None
        else:
            value = np.zeros(int(rng.integers(1, 40)))  # 8 to 312 bytes
            model.pop(key, None)
            model[key] = value
            while len(model) > 5 or sum(v.nbytes for v in model.values()) > 6 * 80:
                model.popitem(last=False)
                evictions += 1
            cache.put(key, value)
            assert not value.flags.writeable
        assert list(cache._entries) == list(model)
        assert cache.nbytes == sum(v.nbytes for v in model.values()) <= 6 * 80
    assert cache.stats() == CacheStats(hits, misses, evictions, len(model), cache.nbytes)
    assert cache.stats().hit_rate == hits / (hits + misses)
    cache.put("big", np.zeros(100))  # larger than max_bytes on its own: not stored
    assert "big" not in cache


def test_embedding_cache_arguments_and_threads():
    for bad in ({}, {"max_entries": 0}, {"max_bytes": -1}):
        with pytest.raises(ValueError):
            EmbeddingCache(**bad)
    for bad in ({"max_entries": True}, {"max_bytes": 1.5}):
        with pytest.raises(TypeError):
            EmbeddingCache(**bad)
    import threading
    cache = EmbeddingCache(max_entries=50)

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(300):
            key = int(rng.integers(0, 80))
            if cache.get(key) is None:
                cache.put(key, np.zeros(2))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = cache.stats()
    assert s.hits + s.misses == 1200 and s.entries == 50 and s.nbytes == 50 * 16
