"""The one-series latency path of the indicators, ``features()`` and ``FeatureStream``.

A plain float64 1-D ``numpy.ndarray`` on the CPU backend skips ``backend.resolve`` and runs the
batch's row body on the calling thread (``gpu_trader.indicators``). Oracles: the general path on
the same values (bit for bit: the 2-D batch call, and the same 1-D call with the latency path
switched off), TA-Lib (as ``test_indicators`` compares it), and the errors the general path
raises (same type, same message) for every input it refuses.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpu_trader as gt
from gpu_trader import backend as backend_module
from gpu_trader import indicators as ind
from test_indicators import DEFAULT_PARAMS, FUNCS, PARAM_CASES, as_tuple, assert_matches, pick, reference

talib = pytest.importorskip("talib")

NAMES = sorted(FUNCS)


def series(T, seed=0, nan_rate=0.0, inf_rate=0.0, lead=0):
    """high, low, close, volume: (T,) float64 random walks, with NaN/inf sprinkled and ``lead``
    leading NaN bars."""
    rng = np.random.default_rng(seed)
    c = 100.0 + rng.standard_normal(T).cumsum()
    h = c + rng.random(T)
    lo = c - rng.random(T)
    v = rng.random(T) * 1e6
    out = []
    for a in (h, lo, c, v):
        a = a.copy()
        a[rng.random(T) < nan_rate] = np.nan
        a[rng.random(T) < inf_rate] = np.inf
        a[:lead] = np.nan
        out.append(a)
    return tuple(out)


def general_path_from_now_on(monkeypatch):
    """Switch the one-series path off: later calls go through resolve and the batch drivers."""
    monkeypatch.setattr(ind, "_SERIES_MAX_ELEMENTS", -1)


@pytest.fixture
def no_resolve(monkeypatch):
    """Fail a call that reaches resolve (the one-series path must not)."""
    def refuse(*args, **kwargs):
        raise AssertionError("resolve called on the one-series path")

    monkeypatch.setattr(ind, "resolve", refuse)


def assert_same(a, b):
    """Bit-for-bit equal outputs (NaN where NaN), same shapes and dtypes."""
    a, b = as_tuple(a), as_tuple(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y) is np.ndarray and x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(np.int64) if x.dtype == np.float64 else x,
                                      y.view(np.int64) if y.dtype == np.float64 else y)


CASES = [(name, params) for name, ps in PARAM_CASES.items() for params in ps] + [("obv", ())]
DATA = [dict(T=300, seed=1), dict(T=300, seed=2, nan_rate=0.03, lead=17), dict(T=200, seed=3, inf_rate=0.02),
        dict(T=120, seed=4, nan_rate=0.05, inf_rate=0.05), dict(T=5, seed=5), dict(T=1, seed=6), dict(T=0, seed=7),
        dict(T=40, seed=8, lead=40)]


# -- the same values as the general path and as TA-Lib -------------------------------------------
@pytest.mark.parametrize("data", DATA, ids=[f"T{d['T']}-{i}" for i, d in enumerate(DATA)])
@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}{p}" for n, p in CASES])
def test_fast_path_equals_batch_and_general_path(name, params, data, monkeypatch):
    inputs = pick(name, series(**data))
    fast = FUNCS[name](*inputs, *params)
    batch = as_tuple(FUNCS[name](*[a[None] for a in inputs], *params))
    assert_same(fast, tuple(b[0] for b in batch))
    general_path_from_now_on(monkeypatch)
    assert_same(fast, FUNCS[name](*inputs, *params))


@pytest.mark.parametrize("name", NAMES)
def test_fast_path_matches_talib(name, no_resolve):
    inputs = pick(name, series(400, seed=11, nan_rate=0.01, lead=9))
    params = DEFAULT_PARAMS[name]
    ours = as_tuple(FUNCS[name](*inputs, *params))
    for o, r in zip(ours, reference(name, inputs, params)):
        assert_matches(o, r)


def layouts(x):
    """``x``'s values as float64 arrays the one-series path reads in place (strided, negative
    strides, read-only, misaligned) and as a big-endian one, which the general path converts."""
    strided = np.empty(2 * x.size)
    strided[::2] = x
    reversed_view = x[::-1].copy()[::-1]
    read_only = x.copy()
    read_only.flags.writeable = False
    raw = np.zeros(x.size * 8 + 1, dtype=np.uint8)
    misaligned = raw[1:].view(np.float64)
    misaligned[:] = x
    assert not misaligned.flags.aligned
    return {"strided": strided[::2], "reversed": reversed_view, "read_only": read_only, "misaligned": misaligned,
            "big_endian": x.astype(">f8")}


@pytest.mark.parametrize("name", NAMES)
def test_any_float64_layout_gives_the_same_values(name):
    inputs = pick(name, series(150, seed=21, nan_rate=0.02))
    want = as_tuple(FUNCS[name](*inputs, *DEFAULT_PARAMS[name]))
    variants = [layouts(a) for a in inputs]
    for kind in variants[0]:
        got = FUNCS[name](*[v[kind] for v in variants], *DEFAULT_PARAMS[name])
        assert_same(got, want)
    if len(inputs) > 1:  # a mix of layouts across inputs
        mixed = [list(v.values())[i % 4] for i, v in enumerate(variants)]
        assert_same(FUNCS[name](*mixed, *DEFAULT_PARAMS[name]), want)


@pytest.mark.parametrize("name", NAMES)
def test_other_dtypes_give_what_the_general_path_gives(name, monkeypatch):
    inputs = pick(name, series(120, seed=31, nan_rate=0.02))
    params = DEFAULT_PARAMS[name]
    kinds = [[a.astype(np.float32) for a in inputs], [np.round(np.nan_to_num(a)).astype(np.int64) for a in inputs],
             [a.astype(">f8") for a in inputs], [np.round(np.nan_to_num(a)).astype(np.int32) for a in inputs]]
    fast = [FUNCS[name](*k, *params) for k in kinds]
    general_path_from_now_on(monkeypatch)
    for k, got in zip(kinds, fast):
        assert_same(got, FUNCS[name](*k, *params))
    assert as_tuple(fast[0])[0].dtype == np.float32


def test_pandas_in_pandas_out():
    pd = pytest.importorskip("pandas")
    h, lo, c, v = series(80, seed=41, nan_rate=0.05)
    index = pd.date_range("2025-01-01", periods=80, freq="min")
    close = pd.Series(c, index=index, name="close")
    out = gt.sma(close, 10)
    assert isinstance(out, pd.Series) and out.index.equals(index)
    assert_same(out.to_numpy(), gt.sma(c, 10))
    m = gt.macd(close)
    assert all(isinstance(o, pd.Series) for o in m)
    assert_same(tuple(o.to_numpy() for o in m), gt.macd(c))
    a = gt.atr(pd.Series(h, index=index), pd.Series(lo, index=index), close, 7)
    assert isinstance(a, pd.Series)
    assert_same(a.to_numpy(), gt.atr(h, lo, c, 7))


def test_fast_path_skips_resolve_and_returns_fresh_buffers(no_resolve):
    h, lo, c, v = series(60, seed=51)
    a, b = gt.sma(c, 5), gt.sma(c, 5)
    assert a is not b and not np.shares_memory(a, b) and a.flags.writeable and a.flags.c_contiguous
    upper, middle, lower = gt.bollinger(c, 5)
    assert all(x.flags.c_contiguous and x.shape == (60,) for x in (upper, middle, lower))
    assert gt.stoch(h, lo, c)[0].shape == (60,)
    c_before = c.copy()
    gt.vwap(h, lo, c, v, 5)
    np.testing.assert_array_equal(c, c_before)  # inputs are never written


def test_cpu_backend_named_or_default_keeps_the_fast_path(no_resolve):
    c = series(50, seed=61)[2]
    want = gt.sma(c, 5)
    for backend in ("cpu", "CPU", gt.get_backend("cpu")):
        assert_same(gt.sma(c, 5, backend=backend), want)
    with gt.use_backend("cpu"):
        assert_same(gt.sma(c, 5), want)


def test_a_default_backend_elsewhere_takes_the_general_path():
    if "jax" not in gt.available_backends():
        pytest.skip("needs a second backend (jax)")
    c = series(50, seed=62)[2]
    want = gt.sma(c, 5)
    with gt.use_backend("jax"):
        got = gt.sma(c, 5)
    assert type(got) is not np.ndarray  # a JAX array: the call ran on the default backend
    np.testing.assert_allclose(gt.to_numpy(got), want, rtol=1e-12, equal_nan=True)
    got = gt.features({"high": c + 1, "low": c - 1, "close": c, "volume": np.ones(50)}, backend="jax")
    assert type(got["sma_20"]) is not np.ndarray


# -- the same errors ----------------------------------------------------------------------------------
def errors(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return type(exc), str(exc)
    return None


BAD_PARAMS = [
    ("sma", (0,)), ("sma", (-3,)), ("sma", (True,)), ("sma", (np.True_,)), ("sma", (2.5,)), ("sma", (20.0,)),
    ("sma", ("10",)), ("sma", (None,)), ("sma", (100_001,)), ("sma", (2**63,)), ("sma", (np.int64(-1),)),
    ("sma", ([5, 0],)), ("sma", ((20, 30.0),)), ("sma", ([],)), ("ema", (0,)), ("wma", (1.5,)), ("rsi", (1,)),
    ("macd", (1, 26, 9)), ("macd", (12, 26, 0)), ("macd", (12, 26.0, 9)), ("bollinger", (20, float("nan"))),
    ("bollinger", (20, float("inf"))), ("bollinger", (1, 2.0)), ("bollinger", (20, "2")), ("atr", (0,)),
    ("stoch", (5, 3.0, 3)), ("stoch", (0, 3, 3)), ("vwap", (0,)), ("vwap", (None,)),
]


@pytest.mark.parametrize("name,params", BAD_PARAMS, ids=[f"{n}{p!r}" for n, p in BAD_PARAMS])
def test_bad_parameters_give_the_general_paths_error(name, params):
    inputs = pick(name, series(50, seed=71))
    fast = errors(lambda: FUNCS[name](*inputs, *params))
    assert fast is not None and fast[0] in (TypeError, ValueError)
    assert errors(lambda: FUNCS[name](*[a[None] for a in inputs], *params)) == fast


def test_a_cached_grid_does_not_validate_a_hash_equal_one():
    c = series(50, seed=72)[2]
    gt.sma(c, (20, 30))
    with pytest.raises(TypeError, match="window must be an integer.*30.0"):
        gt.sma(c, (20, 30.0))
    gt.sma(c, 1)
    with pytest.raises(TypeError, match="window"):
        gt.sma(c, True)


OTHER_INPUTS = [
    ("complex", lambda c: c.astype(complex)), ("object", lambda c: c.astype(object)),
    ("strings", lambda c: c.astype(str)), ("datetime", lambda c: np.zeros(c.size, "datetime64[s]")),
    ("masked", lambda c: np.ma.masked_invalid(c)), ("scalar", lambda c: np.float64(3.0)),
    ("0-d", lambda c: np.array(3.0)), ("list", lambda c: list(c)), ("None", lambda c: None),
    ("ragged", lambda c: [[1.0], [1.0, 2.0]]), ("huge broadcast", lambda c: np.broadcast_to(c[:1], (2**32 + 1,))),
]


@pytest.mark.parametrize("kind,make", OTHER_INPUTS, ids=[k for k, _ in OTHER_INPUTS])
def test_other_inputs_give_the_general_paths_result_or_error(kind, make, monkeypatch):
    c = series(30, seed=81)[2]
    fast = errors(lambda: gt.sma(make(c), 3))
    general_path_from_now_on(monkeypatch)
    assert errors(lambda: gt.sma(make(c), 3)) == fast
    assert fast is not None or kind == "list"


@pytest.fixture
def resolve_calls(monkeypatch):
    """The calls that reached resolve (the general path), counted."""
    calls = []
    real = ind.resolve

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(ind, "resolve", counting)
    return calls


def test_the_general_path_switch_reaches_resolve(resolve_calls, monkeypatch):
    """The switch the tests above use really turns the one-series path off (else they would
    compare the fast path with itself)."""
    h, lo, c, v = series(30, seed=82)
    gt.sma(c, 3)
    gt.vwap(h, lo, c, v, 3)
    assert resolve_calls == []
    general_path_from_now_on(monkeypatch)
    gt.sma(c, 3)
    gt.vwap(h, lo, c, v, 3)
    gt.features({"high": h, "low": lo, "close": c, "volume": v})
    assert len(resolve_calls) == 3


# One input replaced by something the one-series path must leave to the general path: the values
# it must give (as the float64 input would: None, where only the general path's answer is the oracle).
ODD_INPUTS = [
    ("float32", lambda a: a.astype(np.float32)),
    ("int64", lambda a: np.round(np.nan_to_num(a)).astype(np.int64)),
    ("bool", lambda a: a > 100.0),
    ("big_endian", lambda a: a.astype(">f8")),
    ("shorter", lambda a: a[:-3]),
    ("longer", lambda a: np.concatenate([a, a[:2]])),
    ("2-D", lambda a: a[None]),
    ("0-d", lambda a: np.array(a[0])),
    ("complex", lambda a: a.astype(complex)),
    ("masked", lambda a: np.ma.masked_invalid(a)),
    ("matrix subclass", lambda a: np.asmatrix(a)),
    ("list", lambda a: a.tolist()),
    ("pandas", lambda a: __import__("pandas").Series(a)),
]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("kind,make", ODD_INPUTS, ids=[k for k, _ in ODD_INPUTS])
@pytest.mark.parametrize("name", NAMES)
def test_any_odd_input_takes_the_general_path_with_its_result_or_error(name, kind, make, monkeypatch, resolve_calls):
    """Every input position of every indicator: one odd input among plain float64 ones gives the
    general path's result or error (each position is checked separately on the one-series path)."""
    if kind == "pandas":
        pytest.importorskip("pandas")
    inputs = pick(name, series(40, seed=93, nan_rate=0.05))
    params = DEFAULT_PARAMS[name]
    if len(inputs) == 1 and kind in ("shorter", "longer"):
        pytest.skip("one input: a plain float64 series of any length")
    for pos in range(len(inputs)):
        case = list(inputs)
        case[pos] = make(inputs[pos])
        fast = errors(lambda: FUNCS[name](*case, *params))
        if fast is None:
            got = FUNCS[name](*case, *params)
            assert resolve_calls, f"{kind} input {pos} of {name} took the one-series path"
            if kind in ("int64", "bool"):  # converted exactly: the float64 path on the same values
                assert_same(got, FUNCS[name](*[np.asarray(a, dtype=np.float64) for a in case], *params))
            elif kind in ("big_endian", "list"):
                assert_same(got, FUNCS[name](*inputs, *params))
        resolve_calls.clear()
        with monkeypatch.context() as m:
            general_path_from_now_on(m)
            general = errors(lambda: FUNCS[name](*case, *params))
            if fast is None:
                want = FUNCS[name](*case, *params)
                for x, y in zip(as_tuple(got), as_tuple(want)):
                    assert type(x) is type(y)
                    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert general == fast, (pos, kind)


@pytest.mark.parametrize("name", NAMES)
def test_pandas_in_pandas_out_for_every_indicator(name):
    pd = pytest.importorskip("pandas")
    inputs = pick(name, series(60, seed=42, nan_rate=0.05))
    index = pd.date_range("2025-01-01", periods=60, freq="min")
    got = as_tuple(FUNCS[name](*[pd.Series(a, index=index) for a in inputs], *DEFAULT_PARAMS[name]))
    want = as_tuple(FUNCS[name](*inputs, *DEFAULT_PARAMS[name]))
    assert all(isinstance(g, pd.Series) and g.index.equals(index) for g in got)
    assert_same(tuple(g.to_numpy() for g in got), want)


@pytest.mark.parametrize("name", ["atr", "stoch", "obv", "vwap"])
def test_mismatched_inputs_give_the_general_paths_error(name, monkeypatch):
    inputs = list(pick(name, series(40, seed=91)))
    cases = [
        inputs[:-1] + [inputs[-1][:30]],  # shorter last input
        [inputs[0][:30]] + inputs[1:],  # shorter first input
        inputs[:-1] + [inputs[-1][None]],  # 2-D last input
        inputs[:-1] + [inputs[-1].astype(np.float32)],  # mixed dtypes: converted, not refused
        inputs[:-1] + [inputs[-1].astype(complex)],
    ]
    params = DEFAULT_PARAMS[name]
    results = [errors(lambda: FUNCS[name](*case, *params)) for case in cases]
    general_path_from_now_on(monkeypatch)
    assert [errors(lambda: FUNCS[name](*case, *params)) for case in cases] == results
    assert results[0] is not None and results[0][0] is ValueError
    assert results[3] is None


def test_bad_backend_gives_the_general_paths_error(monkeypatch):
    c = series(30, seed=92)[2]
    for backend in ("tpu", 3, gt.get_backend):
        fast = errors(lambda: gt.sma(c, 3, backend=backend))
        assert fast is not None
        assert errors(lambda: gt.sma(c[None], 3, backend=backend)) == fast
    monkeypatch.setenv(backend_module.ENV_VAR, "nope")
    gt.set_backend(None)
    try:
        fast = errors(lambda: gt.sma(c, 3))
        assert fast is not None and fast[0] is ValueError and backend_module.ENV_VAR in fast[1]
        assert errors(lambda: gt.sma(c[None], 3)) == fast
    finally:
        monkeypatch.delenv(backend_module.ENV_VAR)
        gt.set_backend(None)


# -- features() -----------------------------------------------------------------------------------
SPECS = [
    None,
    {"s": ("sma", {"window": 7}), "b": ("bollinger", {"window": 7, "nstd": 1.5}), "w": ("wma", {"window": 3}),
     "v": ("vwap", {"window": 4}), "k": ("stoch", {"fastk": 1, "slowk": 1, "slowd": 1})},
    {"c": ("ema", {"window": 5}), "r": ("rsi", {"window": 3})},
    {"o": ("obv", {}), "a": ("atr", {"window": 1})},
]


@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
@pytest.mark.parametrize("data", DATA, ids=[f"T{d['T']}-{i}" for i, d in enumerate(DATA)])
def test_features_fast_path_equals_the_batch(spec, data, monkeypatch):
    h, lo, c, v = series(**data)
    ohlcv = {"Open": c, "High": h, "Low": lo, "Close": c, "Volume": v}
    fast = gt.features(ohlcv, spec)
    batch = gt.features({k: a[None] for k, a in ohlcv.items()}, spec)
    assert list(fast) == list(batch) == gt.indicators.feature_keys(spec)
    for key in fast:
        assert_same(fast[key], batch[key][0])
    assert_same(tuple(gt.features(np.stack([c, h, lo, c, v]), spec).values()), tuple(fast.values()))
    general_path_from_now_on(monkeypatch)
    general = gt.features(ohlcv, spec)
    for key in fast:
        assert_same(fast[key], general[key])


def test_features_fast_path_matches_talib_and_shares_the_bollinger_middle(no_resolve):
    h, lo, c, v = series(300, seed=101, nan_rate=0.01, lead=5)
    out = gt.features({"high": h, "low": lo, "close": c, "volume": v})
    assert_matches(out["sma_20"], talib.SMA(c, 20))
    assert_matches(out["stoch_d"], talib.STOCH(h, lo, c, 5, 3, 0, 3, 0)[1])
    assert_matches(out["atr_14"], talib.ATR(h, lo, c, 14))
    assert np.shares_memory(out["sma_20"], out["bb_middle"])
    assert_same(out["sma_20"], out["bb_middle"])


def test_features_with_a_grid_or_pandas_takes_the_general_path():
    pd = pytest.importorskip("pandas")
    h, lo, c, v = series(90, seed=111)
    spec = {"s": ("sma", {"window": [3, 5]})}
    out = gt.features({"close": c}, spec)
    assert out["s"].shape == (2, 90)
    frame = pd.DataFrame({"high": h, "low": lo, "close": c, "volume": v})
    from_frame = gt.features(frame)
    plain = gt.features({"high": h, "low": lo, "close": c, "volume": v})
    for key, value in from_frame.items():
        assert isinstance(value, pd.Series)
        assert_same(value.to_numpy(), plain[key])


def test_features_errors_are_unchanged(monkeypatch):
    h, lo, c, v = series(40, seed=121)
    cases = [
        lambda: gt.features({"close": c, "volume": v}),
        lambda: gt.features({"high": h, "low": lo, "close": c[:30], "volume": v}),
        lambda: gt.features({"high": h, "low": lo, "close": c, "Close": c, "volume": v}),
        lambda: gt.features({"high": h, "low": lo, "close": c.astype(complex), "volume": v}),
        lambda: gt.features(np.stack([c, h, lo, c])),
        lambda: gt.features({"high": h, "low": lo, "close": c, "volume": v}, {"a": ("rsi", {"window": 1})}),
        lambda: gt.features({"high": h, "low": lo, "close": c, "volume": v}, backend="tpu"),
    ]
    fast = [errors(call) for call in cases]
    assert all(f is not None for f in fast)
    general_path_from_now_on(monkeypatch)
    assert [errors(call) for call in cases] == fast


# -- FeatureStream rows ------------------------------------------------------------------------------
STREAM_FIELDS = ("open", "high", "low", "close", "volume")


def stream_row(H, t, kind):
    """Bar t of H (5, n, T) as a mapping of (n,) arrays of one kind."""
    row = {}
    for i, f in enumerate(STREAM_FIELDS):
        a = H[i, :, t]  # a strided view
        if kind == "contiguous":
            a = a.copy()
        elif kind == "read_only":
            a = a.copy()
            a.flags.writeable = False
        elif kind == "big_endian":
            a = a.astype(">f8")
        elif kind == "float32":
            a = a.astype(np.float32)
        row[f] = a
    return row


def test_stream_rows_of_any_float64_layout_or_dtype_give_the_same_values():
    n, T = 3, 60
    rng = np.random.default_rng(131)
    H = 100 + rng.standard_normal((5, n, T)).cumsum(axis=2)
    H[4] = rng.random((n, T)) * 1e3
    H[:, 1, 7] = np.nan
    H32 = H.astype(np.float32).astype(np.float64)
    want, want32 = gt.FeatureStream(n), gt.FeatureStream(n)
    kinds = ("strided", "read_only", "big_endian", "float32")
    streams = {kind: gt.FeatureStream(n) for kind in kinds}
    for t in range(T):
        expected = want.update(stream_row(H, t, "contiguous"))
        expected32 = want32.update(stream_row(H32, t, "contiguous"))
        for kind, s in streams.items():
            got = s.update(stream_row(H, t, kind))
            for key in expected:
                assert_same(got[key], (expected32 if kind == "float32" else expected)[key])
    # one symbol: a (5,) row, and a mapping of scalars
    one, ref = gt.FeatureStream(1), gt.FeatureStream(1)
    for t in range(T):
        a = one.update(H[:, 0, t].copy())
        b = ref.update({"high": H[1, 0, t], "low": H[2, 0, t], "close": H[3, 0, t], "volume": H[4, 0, t]})
        for key in a:
            assert_same(a[key], b[key])


def test_stream_update_errors_are_unchanged():
    s = gt.FeatureStream(2)
    good = {f: np.ones(2) for f in ("high", "low", "close", "volume")}
    s.update(good)
    with pytest.raises(ValueError, match=r"row\['close'\] must have shape \(2,\), got \(3,\)"):
        s.update({**good, "close": np.ones(3)})
    with pytest.raises(ValueError, match=r"row\['close'\] must have shape \(2,\), got \(1, 2\)"):
        s.update({**good, "close": np.ones((1, 2))})
    with pytest.raises(TypeError, match=r"row\['volume'\]"):
        s.update({**good, "volume": np.ones(2, dtype=complex)})
    with pytest.raises(ValueError, match=r"row is missing field\(s\) \['volume'\]"):
        s.update({f: good[f] for f in ("high", "low", "close")})
    assert s.n_bars == 1  # a refused row changes nothing
