"""gpu_trader.sizing: the one-event rules against Python float oracles written from the
formulas, the batched rules against NumPy float64 re-implementations (NaN, broadcast, float32,
non-contiguous and read-only inputs), the sizer objects and order_for_signal's sizer=."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_trader import sizing
from gpu_trader.orders import OrderRejection, order_for_signal
from gpu_trader.portfolio import Portfolio

finite = st.floats(-1e6, 1e6, allow_nan=False)
positive = st.floats(1e-3, 1e4, allow_nan=False)
fraction = st.floats(0.0, 0.5, allow_nan=False)


def finish(size: float, max_size: float = math.inf, lot: float = 0.0) -> float:
    """The oracle of clip + round toward zero, with exact fractions for the lot count."""
    from fractions import Fraction

    size = min(max(size, -max_size), max_size)
    if lot:
        lots = Fraction(size) / Fraction(lot)
        n = math.trunc(lots + (Fraction(1, 10**9) if size > 0 else -Fraction(1, 10**9)))
        size = n * lot
    return size


@settings(max_examples=60, deadline=None)
@given(finite, fraction, positive, st.sampled_from([math.inf, 50.0, 1e4]), st.sampled_from([0.0, 1.0, 100.0, 0.1]))
def test_fixed_fractional_matches_the_formula(equity, f, d, max_size, lot):
    raw = max(equity * f, 0.0) / d
    got = sizing.fixed_fractional_size(equity, f, d, max_size=max_size, lot_size=lot)
    assert got == pytest.approx(finish(raw, max_size, lot), rel=1e-12, abs=1e-9)
    assert abs(got) <= max_size and (lot == 0 or got == 0 or abs(got / lot - round(got / lot)) < 1e-6)
    assert sizing.volatility_target_size(equity, f, d / 2, atr_multiple=2.0, max_size=max_size,
                                         lot_size=lot) == pytest.approx(got, rel=1e-12, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1), positive, st.floats(0, 2), st.floats(0, 1), finite, positive)
def test_kelly_matches_the_formula(p, b, mult, cap, equity, price):
    f = min(max(mult * (p - (1 - p) / b), 0.0), cap)
    assert sizing.kelly_fraction(p, b, multiplier=mult, max_fraction=cap) == pytest.approx(f, rel=1e-12, abs=1e-15)
    assert sizing.kelly_size(equity, price, f) == pytest.approx(max(equity * f, 0.0) / price, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(finite, st.floats(-2, 2), positive)
def test_value_and_weight(equity, w, price):
    assert sizing.value_size(equity, price) == pytest.approx(equity / price, rel=1e-12)
    assert sizing.weight_size(equity, w, price) == pytest.approx(equity * w / price, rel=1e-12)


def test_rounding_is_toward_zero_with_a_lot_tolerance():
    assert sizing.value_size(0.3, 1.0, lot_size=0.1) == pytest.approx(0.3)  # 2.9999999999999996 lots is 3
    assert sizing.value_size(399.0, 1.0, lot_size=100) == 300.0
    assert sizing.value_size(-399.0, 1.0, lot_size=100) == -300.0
    assert sizing.value_size(-50.0, 1.0, lot_size=100) == 0.0 and math.copysign(1, sizing.value_size(-5.0, 1.0, lot_size=100)) == 1
    assert sizing.value_size(-900.0, 1.0, max_size=250, lot_size=100) == -200.0
    assert sizing.fixed_fractional_size(-1e5, 0.01, 2.0) == 0.0  # a negative equity sizes nothing


@pytest.mark.parametrize("call, name", [
    (lambda: sizing.fixed_fractional_size(1e5, 0.01, 0.0), "stop_distance"),
    (lambda: sizing.fixed_fractional_size(1e5, 0.01, -1.0), "stop_distance"),
    (lambda: sizing.fixed_fractional_size(math.nan, 0.01, 1.0), "equity"),
    (lambda: sizing.volatility_target_size(1e5, 0.01, 0.0), "atr"),
    (lambda: sizing.kelly_fraction(1.5, 1.0), "win_rate"),
    (lambda: sizing.kelly_fraction(0.5, 0.0), "payoff_ratio"),
    (lambda: sizing.kelly_size(1e5, 10.0, -0.1), "fraction"),
    (lambda: sizing.value_size(100.0, math.inf), "price"),
    (lambda: sizing.weight_size(1e5, 0.1, 10.0, max_size=0), "max_size"),
    (lambda: sizing.weight_size(1e5, 0.1, 10.0, lot_size=-1), "lot_size"),
])
def test_bad_scalars_are_value_errors_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_non_numbers_are_type_errors():
    with pytest.raises(TypeError, match="equity"):
        sizing.fixed_fractional_size(True, 0.01, 1.0)
    with pytest.raises(TypeError, match="price"):
        sizing.value_size(1.0, "10")


# -- batched -------------------------------------------------------------------------------
def _book(rng, shape, nan=0.1):
    x = rng.uniform(-5, 50, shape)
    x[rng.random(shape) < nan] = np.nan
    return x


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 6), st.integers(1, 7), st.sampled_from([0.0, 10.0]),
       st.sampled_from(["float64", "float32"]))
def test_batched_rules_match_numpy(seed, books, n, lot, dtype):
    rng = np.random.default_rng(seed)
    equity = rng.uniform(-1e4, 1e6, (books, 1))
    price = _book(rng, (n,)).astype(dtype)
    dist = _book(rng, (books, n)).astype(dtype)[:, ::-1]  # non-contiguous
    weight = rng.uniform(-0.3, 0.3, (books, n))
    price.flags.writeable = False
    p64, d64 = price.astype(np.float64), dist.astype(np.float64)

    def oracle(raw):
        with np.errstate(invalid="ignore"):
            out = np.clip(raw, -500.0, 500.0)
            if lot:
                out = np.trunc(out / lot + np.copysign(1e-9, out)) * lot
        return out + 0.0

    with np.errstate(divide="ignore", invalid="ignore"):
        ff = np.maximum(equity * 0.01, 0) / np.where(d64 > 0, d64, np.nan)
        ws = equity * weight / np.where(p64 > 0, p64, np.nan)
        vs = 1e4 / np.where(p64 > 0, p64, np.nan)
    got = sizing.batch_fixed_fractional_size(equity, 0.01, dist, max_size=500.0, lot_size=lot)
    np.testing.assert_allclose(got, oracle(ff), rtol=1e-12)
    assert got.dtype == np.float64 and got.shape == (books, n)
    np.testing.assert_allclose(sizing.batch_volatility_target_size(equity, 0.01, dist / 2, atr_multiple=2.0,
                                                                   max_size=500.0, lot_size=lot), oracle(ff), rtol=1e-12)
    np.testing.assert_allclose(sizing.batch_weight_size(equity, weight, price, max_size=500.0, lot_size=lot),
                               oracle(ws), rtol=1e-12)
    np.testing.assert_allclose(sizing.batch_value_size(1e4, price, max_size=500.0, lot_size=lot), oracle(vs), rtol=1e-12)
    assert not price.flags.writeable and np.isnan(dist).any() == np.isnan(d64).any()


def test_batched_equals_the_one_event_form_where_defined():
    rng = np.random.default_rng(3)
    e, f, d = rng.uniform(1e3, 1e6, 50), rng.uniform(0, 0.05, 50), rng.uniform(0.1, 10, 50)
    got = sizing.batch_fixed_fractional_size(e, f, d, lot_size=1.0)
    assert got.tolist() == [sizing.fixed_fractional_size(*a, lot_size=1.0) for a in zip(e, f, d)]
    p, b = rng.uniform(0, 1, 50), rng.uniform(0.2, 3, 50)
    fr = sizing.batch_kelly_fraction(p, b, multiplier=0.5, max_fraction=0.2)
    assert fr.tolist() == [sizing.kelly_fraction(x, y, multiplier=0.5, max_fraction=0.2) for x, y in zip(p, b)]
    px = rng.uniform(1, 100, 50)
    assert sizing.batch_kelly_size(e, px, fr).tolist() == [sizing.kelly_size(*a) for a in zip(e, px, fr)]


def test_batched_nan_policy_and_errors():
    got = sizing.batch_fixed_fractional_size(1e5, 0.01, np.array([0.0, -1.0, np.nan, 2.0]))
    assert np.isnan(got[:3]).all() and got[3] == 500.0
    assert np.isnan(sizing.batch_kelly_fraction(np.array([0.5, np.nan]), np.array([0.0, 1.0]))).all()
    with pytest.raises(ValueError, match="broadcast"):
        sizing.batch_weight_size(np.ones(3), np.ones(4), 1.0)
    wide = np.broadcast_to(np.ones(1), (10**6, 1))
    with pytest.raises(ValueError, match="at most"):  # refused before 10**12 values are allocated
        sizing.batch_weight_size(wide, 0.1, np.broadcast_to(np.ones(1), (10**6,)))
    with pytest.raises(TypeError, match="price"):
        sizing.batch_value_size(1.0, np.array(["a"]))
    with pytest.raises(ValueError, match="atr_multiple"):
        sizing.batch_volatility_target_size(1.0, 0.01, np.ones(2), atr_multiple=0)


def test_kelly_from_returns_matches_win_rate_and_payoff():
    rng = np.random.default_rng(5)
    r = rng.normal(0.002, 0.01, (3, 400))
    r[0, :5] = np.nan
    got = sizing.kelly_fraction_of_returns(r, multiplier=0.5, max_fraction=0.3)
    for row, g in zip(r, got):
        x = row[~np.isnan(row) & (row != 0)]
        p = (x > 0).mean()
        b = x[x > 0].mean() / -x[x < 0].mean()
        assert g == pytest.approx(min(max(0.5 * (p - (1 - p) / b), 0), 0.3), rel=1e-12)
    k = sizing.Kelly.from_returns(r[1], multiplier=0.5, max_fraction=0.3)
    assert k.fraction == pytest.approx(float(got[1]), rel=1e-12)
    assert k(1e5, 20.0) == pytest.approx(1e5 * k.fraction / 20.0)
    with pytest.raises(ValueError, match="no win or no loss"):
        sizing.Kelly.from_returns(np.full(10, 0.01))


def test_sizers_and_order_for_signal():
    pf = Portfolio(100_000.0)
    ff = sizing.FixedFractional(risk_fraction=0.01, stop_distance=2.5, lot_size=10)
    assert ff(1e5, 50.0) == 400.0
    order = order_for_signal("X", 1, 50.0, portfolio=pf, sizer=ff)
    assert order.side == "buy" and order.quantity == 400.0
    pf.apply_fill("X", 400.0, 50.0)
    assert order_for_signal("X", 1, 50.0, portfolio=pf, sizer=ff) is None  # at target already
    short = order_for_signal("Y", -1, 20.0, equity=1e5, sizer=sizing.ByWeight(weight=0.05))
    assert short.side == "sell" and short.quantity == 250.0
    assert order_for_signal("Y", 1, 20.0, equity=1e5, sizer=sizing.ByValue(notional=1000.0)).quantity == 50.0
    vt = sizing.VolatilityTarget(target_risk=0.01, atr=2.0, atr_multiple=2.0)
    assert order_for_signal("Y", 1, 20.0, equity=1e5, sizer=vt).quantity == 250.0
    assert order_for_signal("Y", 1, 20.0, equity=1e5, sizer=sizing.Kelly.from_odds(0.6, 1.0)).quantity == pytest.approx(1000.0)
    assert order_for_signal("Y", 1, 20.0, unit_quantity=3).quantity == 3.0  # default unchanged
    # a scaled signal keeps whole lots (toward zero): 0.55 x 400 = 220 -> 220, 0.33 x 400 = 132 -> 130
    for signal, lots in ((0.55, 220.0), (0.33, 130.0), (-0.33, 130.0), (0.3, 120.0)):
        assert order_for_signal("Z", signal, 50.0, equity=1e5, sizer=ff).quantity == lots
    for bad in (dict(sizer=ff), dict(sizer=lambda e, p: 1 / 0, equity=1.0), dict(sizer=lambda e, p: "x", equity=1.0)):
        r = order_for_signal("Y", 1, 20.0, **bad)
        assert isinstance(r, OrderRejection) and r.code == "invalid"
    with pytest.raises(ValueError, match="stop_distance"):
        sizing.FixedFractional(risk_fraction=0.01, stop_distance=0.0)
    with pytest.raises(TypeError):
        sizing.ByWeight(0.1)  # keyword arguments only


def test_batch_kelly_fraction_gives_nan_for_a_win_rate_the_one_event_form_refuses():
    got = sizing.batch_kelly_fraction(np.array([1.5, -0.2, 0.6, 1.0, 0.0]), 2.0)
    np.testing.assert_array_equal(got[:2], [np.nan, np.nan])  # were 1.0 and 0.0
    for p, g in zip([0.6, 1.0, 0.0], got[2:]):
        assert g == sizing.kelly_fraction(p, 2.0)
    for bad in (1.5, -0.2):
        with pytest.raises(ValueError, match="win_rate"):
            sizing.kelly_fraction(bad, 2.0)


def test_one_event_sizes_that_overflow_are_a_value_error_not_an_overflow_error():
    with pytest.raises(ValueError, match="overflows"):
        sizing.fixed_fractional_size(1e300, 1e10, 1e-300, lot_size=1.0)  # was OverflowError from math.trunc
    with pytest.raises(ValueError, match="overflows"):
        sizing.value_size(1e300, 1e-300)  # was inf, returned as a size
    assert sizing.value_size(1e300, 1e-300, max_size=5.0, lot_size=2.0) == 4.0  # clipped first: fine
    assert sizing.value_size(1e300, 1.0, lot_size=1e-300) == 1e300  # beyond 1e308 lots: already whole
