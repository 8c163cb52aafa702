"""NVTX ranges (gpu_trader.profiling) with a fake ``nvtx`` module that records every call.

Oracle: the recorder's event log -- which range names were pushed/popped (or started/ended)
and in what order -- against the names the profiling module promises
(``<module>.<qualname>``, ``bench.<suite>.<case>``), and an independent walk over the
package's public API for the "everything is decorated" check.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest

import gpu_trader as gt
from gpu_trader import profiling

# Configuration helpers of the backend registry: not compute entry points, left undecorated.
NOT_ENTRY_POINTS = {"available_backends", "get_backend", "set_backend", "use_backend", "to_numpy"}


class Recorder(types.ModuleType):
    """A stand-in for the ``nvtx`` package: records push/pop and start/end calls."""

    def __init__(self) -> None:
        super().__init__("nvtx")
        self.events: list[tuple] = []
        self._next = 0

    def push_range(self, message=None, color=None, domain=None, category=None, payload=None):
        self.events.append(("push", message, domain))

    def pop_range(self, domain=None):
        self.events.append(("pop", domain))

    def start_range(self, message=None, color=None, domain=None, category=None, payload=None):
        self._next += 1
        self.events.append(("start", message, domain, self._next))
        return (self._next, 0)

    def end_range(self, range_id):
        self.events.append(("end", range_id[0]))

    def pushed(self) -> list[str]:
        return [e[1] for e in self.events if e[0] in ("push", "start")]

    def assert_balanced(self) -> None:
        depth, open_ids = 0, set()
        for e in self.events:
            if e[0] == "push":
                assert e[2] == profiling.DOMAIN
                depth += 1
            elif e[0] == "pop":
                assert e[1] == profiling.DOMAIN
                depth -= 1
                assert depth >= 0, "pop without push"
            elif e[0] == "start":
                assert e[2] == profiling.DOMAIN
                open_ids.add(e[3])
            else:
                open_ids.remove(e[1])
        assert depth == 0 and not open_ids, self.events


@pytest.fixture
def fake_nvtx(monkeypatch):
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "nvtx", rec)
    assert profiling.enable() is True
    try:
        yield rec
    finally:
        profiling.disable()


X = np.random.default_rng(1).standard_normal(100).cumsum() + 100.0
R = np.random.default_rng(2).standard_normal((3, 60)) * 0.01


def _vector_index():
    idx = gt.VectorIndex(4)
    idx.add(np.eye(4, dtype=np.float32))
    return idx


# (expected outermost range, call) across modules; each call's first range must be its own.
CASES = [
    ("gpu_trader.indicators.sma", lambda: gt.sma(X, 20)),
    ("gpu_trader.indicators.bollinger", lambda: gt.bollinger(X, 20)),
    ("gpu_trader.indicators.features", lambda: gt.features(np.stack([X, X + 1, X - 1, X, X + 200.0]))),
    ("gpu_trader.risk.sharpe", lambda: gt.risk.sharpe(R[0])),
    ("gpu_trader.risk.var_historical", lambda: gt.risk.var_historical(R[0])),
    ("gpu_trader.correlation.corr", lambda: gt.correlation.corr(R)),
    ("gpu_trader.correlation.corr", lambda: gt.risk.corr(R)),  # re-export: the same wrapper
    ("gpu_trader.montecarlo.var_monte_carlo",
     lambda: gt.var_monte_carlo(np.array([0.5, 0.5]), np.full(2, 1e-3), np.eye(2) * 1e-4,
                                n_scenarios=2_000, seed=3)),
    ("gpu_trader.vectors.VectorIndex.search", lambda: _vector_index().search(np.ones((1, 4), np.float32), 2)),
    ("gpu_trader.marketdata.parse_tick",
     lambda: gt.parse_tick(b'{"symbol": "A", "ts": 1, "price": 1.5, "size": 2}')),
    ("gpu_trader.strategies.momentum", lambda: gt.momentum(X, 3, 8)),
    ("gpu_trader.portfolio.batch_pnl", lambda: gt.batch_pnl(np.ones((2, 3)), np.ones((2, 3)), np.ones(3) * 2)),
    ("gpu_trader.portfolio.Portfolio.apply_fill", lambda: gt.Portfolio(1e6).apply_fill("A", 2.0, 10.0)),
    ("gpu_trader.orders.market_order", lambda: gt.market_order("A", "buy", 1.0)),
    ("gpu_trader.commissions.FixedCommission.__call__", lambda: gt.FixedCommission(1.0)(5.0, 2.0)),
    ("gpu_trader.streaming.FeatureStream.update",
     lambda: gt.FeatureStream(2).update(np.ones((5, 2)))),
]


@pytest.mark.parametrize("expected, call", CASES, ids=[f"{i}-{c[0].rsplit('.', 1)[-1]}" for i, c in enumerate(CASES)])
def test_enabled_calls_push_and_pop_their_range(fake_nvtx, expected, call):
    call()
    assert expected in fake_nvtx.pushed()
    # the range of the call itself encloses everything it does (setup calls come before it)
    first = next(i for i, e in enumerate(fake_nvtx.events) if e[0] == "push" and e[1] == expected)
    depth_before = sum(1 if e[0] == "push" else -1 if e[0] == "pop" else 0 for e in fake_nvtx.events[:first])
    assert depth_before == 0
    fake_nvtx.assert_balanced()


def test_pipeline_on_tick_range(fake_nvtx):
    pipe = gt.TradingPipeline(["A"], gt.Momentum(2, 5), gt.OrderManager(gt.SimulatedBroker("sim", latency_s=0.0),
                                                                         portfolio=gt.Portfolio(1e6)), timeframe=1_000)
    fake_nvtx.events.clear()
    pipe.on_tick(b'{"symbol": "A", "ts": 1, "price": 1.5, "size": 2}')
    assert fake_nvtx.pushed()[0] == "gpu_trader.pipeline.TradingPipeline.on_tick"
    fake_nvtx.assert_balanced()


def test_async_methods_use_start_end_ranges(fake_nvtx):
    broker = gt.SimulatedBroker("sim", latency_s=0.0)
    broker.set_price("A", 10.0)
    assert inspect.iscoroutinefunction(gt.SimulatedBroker.submit)
    asyncio.run(broker.submit(gt.market_order("A", "buy", 1.0)))
    starts = [e for e in fake_nvtx.events if e[0] == "start"]
    assert [e[1] for e in starts] == ["gpu_trader.brokers.SimulatedBroker.submit"]
    fake_nvtx.assert_balanced()


def test_inherited_methods_are_named_after_the_class(fake_nvtx):
    ing = gt.TickIngestor(["A"])
    ing.append(b'{"symbol": "A", "ts": 1, "price": 1.5, "size": 2}')
    assert fake_nvtx.pushed()[0] == "gpu_trader.marketdata.TickIngestor.append"


def test_ranges_balanced_when_the_call_raises(fake_nvtx):
    with pytest.raises(ValueError):
        gt.sma(X, 0)
    with pytest.raises((TypeError, ValueError)):
        gt.Portfolio(1e6).apply_fill("A", 1.0, -5.0)
    assert fake_nvtx.pushed() == ["gpu_trader.indicators.sma", "gpu_trader.portfolio.Portfolio.apply_fill"]
    fake_nvtx.assert_balanced()


def test_async_range_ends_when_the_coroutine_raises(fake_nvtx):
    @profiling.annotate("boom")
    async def boom():
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        asyncio.run(boom())
    assert fake_nvtx.pushed() == ["boom"]
    fake_nvtx.assert_balanced()


def test_disabled_makes_no_nvtx_calls(monkeypatch):
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "nvtx", rec)
    profiling.disable()  # off even when the suite runs with GPU_TRADER_NVTX=1
    for _, call in CASES:
        call()
    with profiling.nvtx_range("x"):
        pass
    assert rec.events == []


def test_enable_disable_round_trip(monkeypatch):
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "nvtx", rec)
    profiling.disable()
    original, method = gt.sma, gt.Portfolio.apply_fill
    assert not hasattr(original, "__nvtx_range__")  # off: the function itself, no wrapper
    for _ in range(2):
        assert profiling.enable() and profiling.is_enabled()
        wrapper = gt.sma
        assert wrapper is profiling.wrapper_of(original) and wrapper.__wrapped__ is original
        assert gt.indicators.sma is wrapper and gt.Portfolio.apply_fill.__wrapped__ is method
        gt.sma(X, 5)
        original(X, 5)  # a reference taken while off stays unprofiled
        profiling.disable()
        assert not profiling.is_enabled()
        assert gt.sma is original and gt.indicators.sma is original and gt.Portfolio.apply_fill is method
        assert "append" not in vars(gt.TickIngestor)  # inherited: the wrapper on the subclass is removed
        wrapper(X, 5)  # a wrapper kept after disable() falls through
    assert rec.pushed() == ["gpu_trader.indicators.sma"] * 2
    rec.assert_balanced()


def test_enable_without_nvtx_warns_and_stays_off(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)  # ``import nvtx`` raises ImportError
    with pytest.warns(RuntimeWarning, match="nvtx"):
        assert profiling.enable() is False
    assert not profiling.is_enabled()
    assert not hasattr(gt.sma, "__nvtx_range__")


def test_wrappers_keep_signature_doc_and_wrapped(fake_nvtx):
    for fn in (gt.sma, gt.risk.sharpe, gt.VectorIndex.search, gt.Portfolio.apply_fill, gt.OrderManager.submit):
        raw = fn.__wrapped__
        assert not hasattr(raw, "__nvtx_range__")
        assert inspect.signature(fn) == inspect.signature(raw)
        assert fn.__doc__ == raw.__doc__ and fn.__name__ == raw.__name__
        assert inspect.iscoroutinefunction(fn) == inspect.iscoroutinefunction(raw)
    # static/class methods stay static/class methods
    assert isinstance(inspect.getattr_static(gt.VectorIndex, "load"), (staticmethod, classmethod))


def test_bench_case_runs_inside_its_range(fake_nvtx):
    from gpu_trader.backend import get_backend
    from gpu_trader.bench.harness import QUICK, Workload, run_workload

    wl = Workload("sma_tiny", {"T": 100}, setup=lambda be: X, run=lambda x: gt.sma(x, 20), items=100)
    res = run_workload("demo", wl, get_backend("cpu"), QUICK)
    assert res.status == "ok"
    names = fake_nvtx.pushed()
    assert names[0] == "bench.demo.sma_tiny"
    assert names.count("bench.demo.sma_tiny") == 1  # one range per case, outside the timed loop
    assert names.count("gpu_trader.indicators.sma") >= res.stats.n  # every timed call has its own
    assert fake_nvtx.events[-1] == ("pop", profiling.DOMAIN)  # the case's range closes last
    fake_nvtx.assert_balanced()


def _public_api():
    """(qualified name, object) for every public function and class reachable from gt.__all__,
    the public modules it names and the lazily imported trading-loop modules."""
    seen, out = set(), []
    modules = [gt] + [importlib.import_module(f"gpu_trader.{m}") for m in sorted(gt._MODULES)]
    for mod in modules:
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType):
                modules.append(obj)
                continue
            if id(obj) in seen or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            seen.add(id(obj))
            out.append((f"{mod.__name__}.{name}", obj))
    return out


def test_every_public_entry_point_is_decorated(fake_nvtx):
    api = _public_api()
    names = {n.rsplit(".", 1)[-1] for n, _ in api}
    assert {"sma", "var_monte_carlo", "VectorIndex", "TradingPipeline", "batch_pnl", "cov"} <= names
    missing, checked = [], 0
    for qual, obj in api:
        if inspect.isfunction(obj):
            if obj.__name__ in NOT_ENTRY_POINTS:
                continue
            checked += 1
            if not hasattr(obj, "__nvtx_range__"):
                missing.append(qual)
        elif not issubclass(obj, BaseException):
            for klass in obj.__mro__:
                if klass is object or not klass.__module__.startswith("gpu_trader"):
                    continue
                for attr, raw in vars(klass).items():
                    if attr.startswith("_") and attr != "__call__":
                        continue
                    if not (inspect.isfunction(raw) or isinstance(raw, (staticmethod, classmethod))):
                        continue
                    checked += 1
                    if not hasattr(getattr(obj, attr), "__nvtx_range__"):
                        missing.append(f"{qual}.{attr}")
    assert not missing, missing
    assert checked > 80
    profiling.disable()  # and off, every one is the original again
    assert not [q for q, obj in _public_api() if hasattr(obj, "__nvtx_range__")]


def test_import_is_cheap_and_env_var_enables(tmp_path):
    """``import gpu_trader`` imports no nvtx while off; GPU_TRADER_NVTX=1 enables at import."""
    (tmp_path / "nvtx.py").write_text(textwrap.dedent("""
        calls = []
        def push_range(message=None, color=None, domain=None, category=None, payload=None):
            calls.append(message)
        def pop_range(domain=None):
            calls.append(None)
    """))
    code = ("import sys, numpy as np, gpu_trader as gt; on = gt.profiling.is_enabled(); "
            "print(on, 'nvtx' in sys.modules, 'numba' in sys.modules, 'cupy' in sys.modules); "
            "on and (gt.sma(np.ones(30), 5), print(sys.modules['nvtx'].calls), "
            "print(hasattr(gt.Portfolio.apply_fill, '__nvtx_range__')))")
    import os

    def run(env_value):
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        env.pop(profiling.ENV_VAR, None)
        if env_value is not None:
            env[profiling.ENV_VAR] = env_value
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout.split("\n")

    assert run(None)[0] == "False False False False"
    out = run("1")
    assert out[0] == "True True False False"
    assert out[1] == "['gpu_trader.indicators.sma', None]"
    assert out[2] == "True"  # a module imported after enabling gets its wrappers at definition


def test_real_nvtx_package_when_installed():
    """With the real package (no profiler attached) ranges are accepted and results unchanged."""
    pytest.importorskip("nvtx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert profiling.enable()
    try:
        np.testing.assert_array_equal(gt.sma(X, 20), gt.sma.__wrapped__(X, 20))
        with pytest.raises(ValueError):
            gt.sma(X, 0)
        broker = gt.SimulatedBroker("sim", latency_s=0.0)
        broker.set_price("A", 10.0)
        asyncio.run(broker.submit(gt.market_order("A", "buy", 1.0)))
    finally:
        profiling.disable()
