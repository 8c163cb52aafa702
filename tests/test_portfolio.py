"""Portfolio accounting against an independent exact oracle.

Oracle: :func:`oracle_book` below tracks each position as (quantity, signed cost basis)
in exact rational arithmetic (``fractions.Fraction``) and closes a fraction of the
basis on each reduction -- a different formulation from the average-price update
of ``position_math.fill_step`` -- and total P&L is checked against the
method-independent cash-flow identity ``-sum(qty * price) + sum(final qty * mark)``.
Commissions are checked against brute-force bracket loops.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from conftest import assert_compiles_to_ptx
from gpu_trader.commissions import FixedCommission, PercentageCommission, TieredCommission
from gpu_trader import portfolio as portfolio_module
from gpu_trader.portfolio import Portfolio, batch_apply_fills, batch_pnl

AREA = "portfolio"  # the backends that implement it run these tests (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ("AAA", "BBB", "CCC")


# -- oracle ------------------------------------------------------------------------------
def oracle_book(fills):
    """Exact average-cost book: {symbol: (qty, basis, realized)} with Fractions."""
    book = {}
    for s, dq, px in fills:
        dq, px = Fraction(dq), Fraction(px)
        q, basis, realized = book.get(s, (Fraction(0), Fraction(0), Fraction(0)))
        if dq == 0:
            continue
        if q == 0 or (q > 0) == (dq > 0):
            q, basis = q + dq, basis + dq * px
        else:
            sgn = 1 if q > 0 else -1
            closing = min(abs(dq), abs(q))
            removed = basis * closing / abs(q)
            realized += sgn * closing * px - removed
            basis -= removed
            q -= sgn * closing
            rest = abs(dq) - closing
            if rest:
                q, basis = -sgn * rest, -sgn * rest * px
        book[s] = (q, basis, realized)
    return book


def close(a, b, scale=1.0):
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)), scale)


fill_st = st.tuples(
    st.sampled_from(SYMBOLS),
    st.integers(-60, 60).filter(bool).map(float) | st.floats(-50, 50).filter(lambda x: abs(x) > 1e-3),
    st.integers(100, 50_000).map(lambda c: c / 100.0),
)


@settings(max_examples=60, deadline=None)
@given(fills=st.lists(fill_st, min_size=1, max_size=40),
       marks=st.lists(st.integers(100, 50_000).map(lambda c: c / 100.0), min_size=3, max_size=3))
def test_positions_and_pnl_match_exact_oracle(fills, marks):
    pf = Portfolio(10_000.0)
    for s, q, p in fills:
        pf.apply_fill(s, q, p)
    pf.mark_many(dict(zip(SYMBOLS, marks)))
    book = oracle_book(fills)
    scale = sum(abs(q) * p for _, q, p in fills)
    realized_total = Fraction(0)
    unrealized_total = Fraction(0)
    for s, (q, basis, realized) in book.items():
        pos = pf.position(s)
        mark = Fraction(dict(zip(SYMBOLS, marks))[s])
        assert close(pos.quantity, q, scale)
        assert close(pos.realized_pnl, realized, scale)
        if q != 0 and abs(q) > 1e-6:
            assert close(pos.avg_cost, basis / q, scale / max(abs(float(q)), 1e-6))
        assert close(pos.unrealized_pnl, q * mark - basis, scale)
        realized_total += realized
        unrealized_total += q * mark - basis
    assert close(pf.realized_pnl(), realized_total, scale)
    assert close(pf.unrealized_pnl(), unrealized_total, scale)
    # method-independent: total P&L = cash flows + final market value
    flows = -sum(Fraction(q) * Fraction(p) for _, q, p in fills)
    value = sum(book[s][0] * Fraction(m) for s, m in zip(SYMBOLS, marks) if s in book)
    assert close(pf.total_pnl(), flows + value, scale)


commission_st = st.sampled_from([
    None, FixedCommission(1.0), PercentageCommission(5e-4, minimum=0.5),
    TieredCommission([(1e3, 1e-3), (1e4, 5e-4), (math.inf, 1e-4)], minimum=0.1),
])


@settings(max_examples=60, deadline=None)
@given(fills=st.lists(fill_st, min_size=1, max_size=40), model=commission_st, cash=st.floats(0, 1e6))
def test_cash_plus_positions_conserved_net_of_commissions(fills, model, cash):
    pf = Portfolio(cash, commission=model)
    scale = cash + sum(abs(q) * p for _, q, p in fills)
    for s, q, p in fills:
        pf.mark(s, p)  # the book is marked at the trade price just before the trade ...
        before = pf.equity()
        paid = pf.commissions
        pf.apply_fill(s, q, p)
        # ... so the trade moves value between cash and positions and only the commission leaves
        assert close(pf.equity(), before - (pf.commissions - paid), scale)
    assert close(pf.equity(), pf.initial_cash + pf.realized_pnl() + pf.unrealized_pnl() - pf.commissions, scale)
    assert close(pf.total_pnl(), pf.equity() - pf.initial_cash, scale)


@pytest.mark.parametrize("fills, expected", [
    # (fills, (qty, avg, realized)) worked by hand
    ([(10, 100.0), (10, 110.0)], (20, 105.0, 0.0)),
    ([(10, 100.0), (-4, 120.0)], (6, 100.0, 80.0)),
    ([(10, 100.0), (-10, 90.0)], (0, 0.0, -100.0)),
    ([(10, 100.0), (-15, 110.0)], (-5, 110.0, 100.0)),  # flip long -> short
    ([(-10, 50.0), (4, 40.0)], (-6, 50.0, 40.0)),       # short covered at a profit
    ([(-10, 50.0), (12, 60.0)], (2, 60.0, -100.0)),     # flip short -> long
])
def test_hand_worked_fills(fills, expected):
    pf = Portfolio()
    for q, p in fills:
        pf.apply_fill("X", q, p)
    pos = pf.position("X")
    assert (pos.quantity, pos.avg_cost, pos.realized_pnl) == pytest.approx(expected)


def test_batch_trades_equal_single_trades_and_are_atomic():
    rng = np.random.default_rng(3)
    syms = [SYMBOLS[i] for i in rng.integers(0, 3, 100)]
    qs = rng.integers(-20, 21, 100).astype(float)
    ps = rng.uniform(10, 20, 100)
    a, b = Portfolio(1e5, commission=FixedCommission(1.0)), Portfolio(1e5, commission=FixedCommission(1.0))
    for s, q, p in zip(syms, qs, ps):
        a.apply_fill(s, q, p)
    b.apply_fills(syms, qs, ps)
    sa, sb = a.snapshot(), b.snapshot()
    assert sa.symbols == sb.symbols and sa.cash == sb.cash
    np.testing.assert_array_equal(sa.quantities, sb.quantities)
    np.testing.assert_array_equal(sa.avg_costs, sb.avg_costs)
    before = b.snapshot()
    with pytest.raises(ValueError, match=r"prices\[2\]"):
        b.apply_fills(["AAA", "BBB", "CCC"], [1, 2, 3], [10.0, 11.0, float("nan")])
    after = b.snapshot()
    assert after.cash == before.cash and after.symbols == before.symbols
    np.testing.assert_array_equal(after.quantities, before.quantities)


@pytest.mark.parametrize("call, match", [
    (lambda p: p.apply_fill("", 1, 10.0), "symbol"),
    (lambda p: p.apply_fill(3, 1, 10.0), "symbol"),
    (lambda p: p.apply_fill("X", float("nan"), 10.0), "quantity"),
    (lambda p: p.apply_fill("X", 1, -1.0), "price"),
    (lambda p: p.apply_fill("X", 1, float("inf")), "price"),
    (lambda p: p.apply_fill("X", 1, "ten"), "price"),
    (lambda p: p.mark("X", 0.0), "price"),
    (lambda p: p.apply_fills(["X"], [1, 2], [1.0]), "same length"),
    (lambda p: p.set_position("X", 5, -3.0), "avg_cost"),
    (lambda p: p.apply_fill("X", 1, 10.0, commission=-5.0), "commission must be .*>= 0"),
    (lambda p: p.apply_fills(["X", "X"], [1, 1], [10.0, 10.0], commissions=[1.0, -1.0]), r"commissions\[1\]"),
])
def test_bad_input_names_the_argument_and_changes_nothing(call, match):
    pf = Portfolio(100.0)
    pf.apply_fill("X", 2, 10.0)
    before = pf.snapshot()
    with pytest.raises((TypeError, ValueError), match=match):
        call(pf)
    assert pf.snapshot().cash == before.cash and pf.position("X").quantity == 2


def test_snapshot_is_immutable_and_detached():
    pf = Portfolio(1000.0)
    pf.apply_fill("A", 5, 10.0)
    pf.apply_fill("B", -3, 20.0)
    snap = pf.snapshot()
    with pytest.raises(Exception):
        snap.cash = 0.0
    with pytest.raises(ValueError):
        snap.quantities[0] = 1.0
    pf.apply_fill("A", 5, 12.0)
    assert snap.position("A").quantity == 5 and pf.position("A").quantity == 10
    assert snap.position("Z") is None
    assert snap.equity == pytest.approx(1000.0 - 50 + 60 + 5 * 10 - 3 * 20)


def test_add_update_remove_positions_keep_the_book_dense():
    pf = Portfolio()
    for i, s in enumerate("ABCDE"):
        pf.set_position(s, i + 1, 10.0 + i)
    pf.apply_fill("B", -2, 15.0)  # realize (15 - 11) * 2 = 8 on B, then remove it
    removed = pf.remove_position("B")
    assert removed.realized_pnl == pytest.approx(8.0) and pf.realized_pnl() == pytest.approx(8.0)
    assert set(pf.symbols) == set("ACDE") and pf.remove_position("B") is None
    for i, s in enumerate("ABCDE"):
        if s != "B":
            assert pf.position(s).quantity == i + 1 and pf.position(s).avg_cost == 10.0 + i
    pf.set_position("C", -7, 30.0)
    assert pf.position("C").quantity == -7 and pf.quantity("nope") == 0.0


@settings(max_examples=40, deadline=None)
@given(qs=st.lists(st.integers(-300, 300), min_size=0, max_size=100),
       max_q=st.none() | st.integers(0, 300), max_n=st.none() | st.integers(0, 30_000))
def test_position_limit_check_matches_a_loop(qs, max_q, max_n):
    pf = Portfolio(capacity=4)
    for i, q in enumerate(qs):
        pf.set_position(f"S{i}", q, 50.0 + i)
    expected = tuple(
        f"S{i}" for i, q in enumerate(qs)
        if (max_q is not None and abs(q) > max_q) or (max_n is not None and abs(q) * (50.0 + i) > max_n)
    )
    assert pf.check_position_limits(max_q, max_n) == expected


def test_concurrent_updates_lose_nothing(monkeypatch):
    """Many threads hammer one book; integer quantities and prices keep the float sums
    exact, so any lost update shows up as an exact mismatch. A ``time.sleep(0)`` injected
    into the accounting step (between reading and writing a position) hands the GIL to
    another thread there, so an unguarded read-modify-write would lose updates every run."""
    real_step = portfolio_module.fill_step

    def yielding_step(*args):
        time.sleep(0)
        return real_step(*args)

    monkeypatch.setattr(portfolio_module, "fill_step", yielding_step)
    pf = Portfolio(1_000_000.0, commission=FixedCommission(1.0))
    n_threads, per_thread = 8, 400
    start = threading.Barrier(n_threads + 1)

    def worker(k):
        start.wait()
        for i in range(per_thread):
            s = SYMBOLS[(i + k) % 3]
            pf.apply_fill(s, 1.0 if (i + k) % 2 else 2.0, 10.0 + (i % 7))
            if i % 50 == 0:
                pf.snapshot()
                pf.check_position_limits(1e9)

    def churn():  # adds and removes other positions, moving slots while fills land
        start.wait()
        for j in range(300):
            pf.set_position(f"T{j % 7}", j + 1, 5.0)
            if j % 2:
                pf.remove_position(f"T{(j * 3) % 7}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    qty = {s: 0.0 for s in SYMBOLS}
    cash = 1_000_000.0
    for k in range(n_threads):
        for i in range(per_thread):
            q = 1.0 if (i + k) % 2 else 2.0
            qty[SYMBOLS[(i + k) % 3]] += q
            cash -= q * (10.0 + (i % 7)) + 1.0
    assert {s: pf.quantity(s) for s in SYMBOLS} == qty
    assert pf.cash == cash and pf.commissions == n_threads * per_thread


# -- commissions -------------------------------------------------------------------------
def tiered_oracle(tiers, notional):
    fee, lower = 0.0, 0.0
    for upper, rate in tiers:
        part = min(notional, upper) - lower
        if part <= 0:
            break
        fee += part * rate
        lower = upper
    return fee


@settings(max_examples=80, deadline=None)
@given(q=st.floats(-1e5, 1e5), p=st.floats(0.01, 1e4))
def test_commission_models(q, p):
    tiers = [(1e3, 1e-3), (1e4, 5e-4), (1e5, 2e-4), (math.inf, 1e-4)]
    t = TieredCommission(tiers, minimum=0.2)
    n = abs(q) * p
    assert t(q, p) == pytest.approx(max(tiered_oracle(tiers, n), 0.2) if q else 0.0, rel=1e-12, abs=1e-12)
    assert PercentageCommission(1e-3, 1.0)(q, p) == pytest.approx(max(1e-3 * n, 1.0) if q else 0.0)
    assert FixedCommission(2.5)(q, p) == (2.5 if q else 0.0)


@pytest.mark.parametrize("make, match", [
    (lambda: FixedCommission(-1), "per_order"),
    (lambda: PercentageCommission(float("nan")), "rate"),
    (lambda: TieredCommission([]), "empty"),
    (lambda: TieredCommission([(10, 0.1), (5, 0.1), (math.inf, 0.1)]), "increasing"),
    (lambda: TieredCommission([(10, 0.1)]), "inf"),
    (lambda: TieredCommission([(10, -0.1), (math.inf, 0.1)]), "rate"),
])
def test_commission_bad_parameters(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_commission_models_are_immutable():
    with pytest.raises(AttributeError):
        FixedCommission(1.0).per_order = 2.0


# -- many portfolios on a backend --------------------------------------------------------
def _random_books(seed, shape=(6, 5), k=8):
    rng = np.random.default_rng(seed)
    q = rng.integers(-20, 21, shape).astype(float)
    a = np.where(q != 0, rng.uniform(10, 50, shape), 0.0)
    fq = rng.integers(-15, 16, shape + (k,)).astype(float)
    fq[rng.random(fq.shape) < 0.3] = 0.0
    fp = rng.uniform(10, 50, shape + (k,))
    fp[fq == 0] = np.nan  # no fill: the price is ignored
    return q, a, fq, fp


def _oracle_rows(q, a, fq, fp):
    out_q, out_a, out_r = (np.empty(q.shape) for _ in range(3))
    for idx in np.ndindex(q.shape):
        fills = [("X", q[idx], a[idx] if q[idx] else 1.0)]
        fills += [("X", fq[idx + (k,)], fp[idx + (k,)]) for k in range(fq.shape[-1]) if fq[idx + (k,)]]
        qq, basis, realized = oracle_book(fills).get("X", (0, 0, 0))
        out_q[idx], out_r[idx] = float(qq), float(realized)
        out_a[idx] = float(basis / qq) if qq else 0.0
    return out_q, out_a, out_r


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_apply_fills_matches_oracle(backend, dtype):
    q, a, fq, fp = _random_books(1)
    oq, oa, orr = _oracle_rows(q, a, fq, fp)
    be = gt.get_backend(backend)
    fp_in = np.repeat(fp.astype(dtype), 2, axis=-1)[..., ::2]  # a non-contiguous view
    nq, na, nr = batch_apply_fills(be.asarray(q.astype(dtype)), be.asarray(a.astype(dtype)), be.asarray(fq),
                                   be.asarray(fp_in), backend=backend)
    tol = 1e-9 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(gt.to_numpy(nq), oq, rtol=tol, atol=tol)
    np.testing.assert_allclose(gt.to_numpy(na), oa, rtol=tol, atol=tol * 50)
    np.testing.assert_allclose(gt.to_numpy(nr), orr, rtol=tol, atol=tol * 1e3)


def test_batch_apply_fills_bad_input_and_no_mutation():
    q, a, fq, fp = _random_books(2, shape=(3, 2), k=3)
    copies = [x.copy() for x in (q, a, fq, fp)]
    batch_apply_fills(q, a, fq, fp, realized=np.ones(q.shape))
    for x, c in zip((q, a, fq, fp), copies):
        np.testing.assert_array_equal(x, c)
    bad = fq.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="fill_quantities"):
        batch_apply_fills(q, a, bad, fp)
    fq2 = fq.copy()
    fq2[0, 0, 0] = 1.0
    bad_p = fp.copy()
    bad_p[0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="fill_prices"):
        batch_apply_fills(q, a, fq2, bad_p)
    with pytest.raises(ValueError, match="shape"):
        batch_apply_fills(q, a, fq[:, :1], fp[:, :1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", [False, True])
def test_batch_pnl_matches_loops(backend, dtype, path):
    rng = np.random.default_rng(5)
    q = rng.integers(-50, 51, (7, 11)).astype(dtype)
    a = rng.uniform(5, 15, (7, 11)).astype(dtype)
    prices = rng.uniform(5, 15, (11, 13) if path else (11,)).astype(dtype)
    be = gt.get_backend(backend)
    mv, upnl = (gt.to_numpy(x) for x in batch_pnl(be.asarray(q), be.asarray(a), be.asarray(prices)))
    p2 = prices if path else prices[:, None]
    ref_mv = np.array([[sum(float(q[i, j]) * float(p2[j, t]) for j in range(11)) for t in range(p2.shape[1])]
                       for i in range(7)])
    ref_u = ref_mv - np.array([sum(float(q[i, j]) * float(a[i, j]) for j in range(11)) for i in range(7)])[:, None]
    if not path:
        ref_mv, ref_u = ref_mv[:, 0], ref_u[:, 0]
    assert mv.dtype == dtype and mv.shape == ref_mv.shape
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(mv, ref_mv, rtol=tol, atol=tol * 1e3)
    np.testing.assert_allclose(upnl, ref_u, rtol=tol, atol=tol * 1e3)


def test_batch_pnl_bad_shapes():
    with pytest.raises(ValueError, match="prices"):
        batch_pnl(np.ones((2, 3)), np.ones((2, 3)), np.ones(4))
    with pytest.raises(ValueError, match="quantities"):
        batch_pnl(np.ones(3), np.ones(3), np.ones(3))


@pytest.mark.slow
def test_cuda_kernel_under_simulator(tmp_path):
    """The GPU launcher and kernel (kernels.portfolio) run in numba's CUDA simulator, in a
    subprocess because NUMBA_ENABLE_CUDASIM must be set before numba is imported."""
    q, a, fq, fp = _random_books(4, shape=(4, 3), k=5)
    np.savez(tmp_path / "in.npz", q=q, a=a, fq=fq, fp=fp)
    script = (
        "import numpy as np, json, sys\n"
        "from gpu_trader.kernels import portfolio as kp\n"
        f"d = np.load({str(tmp_path / 'in.npz')!r})\n"
        "q, a = d['q'].reshape(-1), d['a'].reshape(-1)\n"
        "fq, fp = d['fq'].reshape(len(q), -1), d['fp'].reshape(len(q), -1)\n"
        "out = kp.apply_fills_xp(np, q, a, np.zeros_like(q), fq, fp)\n"
        "print(json.dumps([o.tolist() for o in out]))\n"
    )
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    got = [np.array(x).reshape(q.shape) for x in json.loads(res.stdout.strip().splitlines()[-1])]
    for g, o in zip(got, _oracle_rows(q, a, fq, fp)):
        np.testing.assert_allclose(g, o, rtol=1e-9, atol=1e-9)





@pytest.mark.slow
def test_cuda_kernel_compiles_to_ptx():
    """The real (non-simulated) kernel, with the argument types a launch uses, compiles for
    sm_90 (H100); needs NVVM, not a GPU."""
    assert_compiles_to_ptx("""
        import types
        from numba import cuda, float64, int64
        from numba.cuda import dispatcher
        from gpu_trader.kernels import portfolio as kp
        # device functions compile for the current device's capability: answer the query with sm_90
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
        v, m = float64[::1], float64[:, ::1]
        ptx, _ = cuda.compile_ptx(kp._kernel().py_func, (int64, v, v, v, m, m), cc=(9, 0))
        assert ".entry" in ptx and "sm_90" in ptx
    """)


def test_batch_functions_read_pandas_rows_as_portfolios():
    pd = pytest.importorskip("pandas")
    q = np.array([[1.0, 2.0], [3.0, -4.0]])
    a = np.array([[10.0, 20.0], [30.0, 40.0]])
    p = np.array([11.0, 19.0])
    mv, upnl = batch_pnl(pd.DataFrame(q), pd.DataFrame(a), pd.Series(p))
    np.testing.assert_allclose(mv, [1 * 11 + 2 * 19, 3 * 11 - 4 * 19])
    np.testing.assert_allclose(upnl, [1 * 1 + 2 * -1, 3 * -19 - 4 * -21])
    nq, _, _ = batch_apply_fills(pd.DataFrame(q), pd.DataFrame(a), np.ones((2, 2, 1)), np.full((2, 2, 1), 5.0))
    np.testing.assert_array_equal(nq, q + 1)


# -- issue 13: fills are validated in full (the model's commission included), then booked atomically --
class Fee:
    """A commission model answering ``answer`` (which may be garbage)."""

    def __init__(self, answer):
        self.answer = answer

    def __call__(self, quantity, price):
        return self.answer


BAD_FEES = [Decimal("1"), None, math.nan, math.inf, -0.5, "2", True, np.bool_(False), [1.0]]


def _state(pf):
    snap = pf.snapshot()
    return (snap.cash, snap.commissions, snap.symbols, snap.quantities.tolist(), snap.avg_costs.tolist(),
            snap.last_prices.tolist(), snap.realized_pnl)


@pytest.mark.parametrize("fee", BAD_FEES, ids=repr)
def test_a_bad_commission_answer_books_nothing(fee):
    pf = Portfolio(1000.0, commission=Fee(fee))
    pf.set_position("A", 3.0, 10.0)
    before = _state(pf)
    with pytest.raises((TypeError, ValueError), match="commission"):
        pf.apply_fill("A", -2.0, 12.0)
    with pytest.raises((TypeError, ValueError), match="commission"):
        pf.apply_fill("NEW", 1.0, 12.0)  # not even a new empty slot
    with pytest.raises((TypeError, ValueError), match="commission"):
        pf.apply_fills(["A", "A"], [1.0, -1.0], [11.0, 12.0])
    assert _state(pf) == before


@settings(max_examples=40, deadline=None)
@given(fills=st.lists(st.tuples(fill_st, st.sampled_from([1.0, 0.0, None, math.nan, -1.0, Decimal("1")])),
                      min_size=1, max_size=25))
def test_each_fill_is_booked_all_or_nothing(fills):
    """Fills interleaved with garbage commission answers: the book equals the exact oracle of
    exactly the fills that were accepted, cash and commissions included."""
    fee = Fee(0.0)
    pf = Portfolio(10_000.0, commission=fee)
    accepted, paid = [], Fraction(0)
    for (s, q, p), answer in fills:
        fee.answer = answer
        try:
            pf.apply_fill(s, q, p)
        except (TypeError, ValueError):
            continue
        accepted.append((s, q, p))
        paid += Fraction(answer)
    book = oracle_book(accepted)
    for s in SYMBOLS:
        q, _, realized = book.get(s, (0, 0, 0))
        assert close(pf.quantity(s), q) and close(pf.realized_pnl(s), realized, 1e4)
    want_cash = Fraction(10_000) - sum(Fraction(q) * Fraction(p) for _, q, p in accepted) - paid
    assert close(pf.cash, want_cash, 1e6) and close(pf.commissions, paid)


# -- issue 13: real numbers are Python or NumPy scalars, never bool ------------------------------
def test_numpy_scalars_are_accepted_and_bools_refused():
    pf = Portfolio(np.float64(1000.0), commission=PercentageCommission(np.float32(0.5), minimum=np.int64(1)))
    pf.apply_fill("A", np.int32(4), np.float64(10.0))
    pf.apply_fill("A", np.float32(-1.0), np.int16(12), commission=np.float64(0.25))
    pf.mark("A", np.float32(11.0))
    pf.set_position("B", np.int8(2), np.float64(5.0))
    assert pf.quantity("A") == 3.0 and pf.cash == pytest.approx(1000.0 - 40.0 - 20.0 + 12.0 - 0.25)
    assert type(pf.cash) is float and pf.check_position_limits(max_quantity=np.int64(2)) == ("A",)
    for bad in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="quantity"):
            pf.apply_fill("A", bad, 10.0)
        with pytest.raises(TypeError, match="price"):
            pf.apply_fill("A", 1.0, bad)
        with pytest.raises(TypeError, match="cash"):
            Portfolio(bad)
        with pytest.raises(TypeError, match="per_order"):
            FixedCommission(bad)
    with pytest.raises(TypeError, match="quantities\\[1\\]"):
        pf.apply_fills(["A", "A"], [1.0, "2"], [10.0, 10.0])
    with pytest.raises(ValueError, match="max_quantity"):
        pf.check_position_limits(max_quantity=math.nan)
    with pytest.raises(TypeError, match="rate"):
        PercentageCommission("0.1")
    with pytest.raises(TypeError, match="tiers"):
        TieredCommission([(True, 0.1), (math.inf, 0.0)])
    with pytest.raises(TypeError, match="prices"):
        pf.mark_many(None)
    with pytest.raises(TypeError, match="symbols"):
        pf.apply_fills("AB", [1.0, 2.0], [10.0, 10.0])  # a str is not a list of symbols
    with pytest.raises(ValueError, match="capacity"):
        Portfolio(capacity=10**12)  # refused before anything is allocated
    with pytest.raises(TypeError, match="capacity"):
        Portfolio(capacity=64.0)


# -- read-only inputs (pandas copy-on-write hands them out) ---------------------------------------
def _read_only(*arrays):
    out = []
    for a in arrays:
        a = np.array(a)
        a.flags.writeable = False
        out.append(a)
    return out


@pytest.mark.parametrize("pattern", ["all", "mixed", "fills", "pandas"])
@pytest.mark.parametrize("shape, k", [((3, 4), 5), ((60, 100), 10)])  # the second runs the CPU's parallel driver
def test_batch_apply_fills_accepts_read_only_inputs_and_never_writes(backend, pattern, shape, k):
    q, a, fq, fp = _random_books(11, shape=shape, k=k)
    z = np.linspace(-1.0, 1.0, q.size).reshape(q.shape)
    want = batch_apply_fills(q.copy(), a.copy(), fq.copy(), fp.copy(), realized=z.copy(), backend=backend)
    inputs = [q, a, fq, fp, z]
    if pattern == "pandas":
        pd = pytest.importorskip("pandas")
        frames = [pd.DataFrame(x) for x in (q, a, z)]
        ins = [frames[0], frames[1], *_read_only(fq, fp), frames[2]]
    else:
        ro = _read_only(*inputs)
        pick = {"all": range(5), "mixed": (0, 3, 4), "fills": (2, 3)}[pattern]
        ins = [ro[i] if i in pick else inputs[i].copy() for i in range(5)]
    copies = [np.array(x) for x in ins]
    got = batch_apply_fills(*ins[:4], realized=ins[4], backend=backend)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(gt.to_numpy(g), gt.to_numpy(w))
    for x, c in zip(ins, copies):
        np.testing.assert_array_equal(np.asarray(x), c)


def test_batch_pnl_accepts_read_only_and_mixed_inputs(backend):
    rng = np.random.default_rng(12)
    q = rng.integers(-9, 10, (5, 6)).astype(np.float64)
    a = rng.uniform(5, 15, (5, 6))
    for prices in (rng.uniform(5, 15, 6), rng.uniform(5, 15, (6, 7))):
        want = batch_pnl(q.copy(), a.copy(), prices.copy(), backend=backend)
        ro_q, ro_p = _read_only(q, prices)
        for args in ((ro_q, a, ro_p), (q, *_read_only(a), prices), tuple(_read_only(q, a, prices))):
            got = batch_pnl(*args, backend=backend)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(gt.to_numpy(g), gt.to_numpy(w))
    pd = pytest.importorskip("pandas")
    frames = pd.DataFrame(q), pd.DataFrame(a), pd.Series(prices[:, 0])
    got = batch_pnl(*frames, backend=backend)  # pandas 3 (copy-on-write) hands out read-only arrays
    want = batch_pnl(q, a, prices[:, 0].copy(), backend=backend)
    for g, w in zip(got, want):  # a column-major frame may sum in another order: rounding only
        np.testing.assert_allclose(gt.to_numpy(g), gt.to_numpy(w), rtol=1e-12, atol=1e-12)


def test_batch_apply_fills_refuses_non_finite_positions():
    q, a, fq, fp = _random_books(2, shape=(3, 2), k=3)
    for name, i in (("quantities", 0), ("avg_costs", 1)):
        bad = [q.copy(), a.copy()]
        bad[i][1, 1] = np.inf
        with pytest.raises(ValueError, match=name):
            batch_apply_fills(bad[0], bad[1], fq, fp)
    with pytest.raises(ValueError, match="realized"):
        batch_apply_fills(q, a, fq, fp, realized=np.full(q.shape, np.nan))


# -- a fill too large for float64 accounting is refused, the book untouched ----------------------
class FeeOnCall:
    """A commission model that answers garbage on its ``bad``-th call only (the answer
    depends on how often it was asked), a NumPy scalar otherwise."""

    def __init__(self, bad):
        self.bad, self.calls = bad, 0

    def __call__(self, quantity, price):
        self.calls += 1
        return math.nan if self.calls == self.bad else np.float32(0.5)


HUGE = [(1e300, 1e300), (-1e300, 1e300), (1e200, 1e200)]


@pytest.mark.parametrize("qty, price", HUGE)
def test_a_fill_that_overflows_the_book_is_refused_and_books_nothing(qty, price):
    pf = Portfolio(1000.0)
    pf.set_position("A", 3.0, 10.0)
    before = _state(pf)
    with pytest.raises(ValueError, match="overflow"):
        pf.apply_fill("A", qty, price)
    with pytest.raises(ValueError, match=r"fill \[1\].*overflow"):
        pf.apply_fills(["B", "A", "B"], [1.0, qty, 1.0], [10.0, price, 10.0])
    assert _state(pf) == before and all(math.isfinite(v) for v in (pf.cash, pf.equity(), pf.total_pnl()))
    pf.apply_fill("A", 1e150, 1e150)  # large but representable: booked
    with pytest.raises(ValueError, match="overflow"):
        pf.apply_fill("A", -3e150, 1e158)  # the flip's proceeds would overflow the cash
    assert pf.quantity("A") == 3.0 + 1e150


@settings(max_examples=30, deadline=None)
@given(fills=st.lists(fill_st, min_size=1, max_size=12), bad=st.integers(0, 13), kind=st.sampled_from(
    ["fee", "overflow", "price", "symbol"]))
def test_a_batch_with_one_bad_row_books_none_of_it(fills, bad, kind):
    """One bad row anywhere in a batch (a garbage commission answer on that call, a fill
    overflowing the book, a bad price or symbol): nothing is booked; without it, the batch
    books exactly the exact-fraction oracle's book (NumPy scalar commissions included)."""
    pf = Portfolio(10_000.0, commission=FeeOnCall(bad + 1 if kind == "fee" else 0))
    pf.set_position("AAA", 5.0, 10.0)
    before = _state(pf)
    symbols, qs, ps = (list(x) for x in zip(*fills))
    k = bad % len(fills)
    if kind == "overflow":
        qs[k], ps[k] = 1e300, 1e300
    elif kind == "price":
        ps[k] = -ps[k]
    elif kind == "symbol":
        symbols[k] = ""
    if kind != "fee" or bad < len(fills):
        with pytest.raises((TypeError, ValueError)):
            pf.apply_fills(symbols, qs, ps)
        assert _state(pf) == before
    batch = Portfolio(10_000.0, commission=lambda q, p: np.float32(0.5))
    batch.set_position("AAA", 5.0, 10.0)
    batch.apply_fills(*zip(*fills))
    book = oracle_book([("AAA", 5.0, 10.0), *fills])  # set_position moves no cash, so it books as a fill
    scale = sum(abs(q) * p for _, q, p in fills) + 50.0
    for s in SYMBOLS:
        q, basis, realized = book.get(s, (0, 0, 0))
        assert close(batch.quantity(s), q, scale) and close(batch.realized_pnl(s), realized, scale)
        if abs(q) > 1e-6:
            assert close(batch.position(s).avg_cost, basis / q, scale / abs(float(q)))
    paid = Fraction(1, 2) * len(fills)
    assert close(batch.commissions, paid)
    assert close(batch.cash, Fraction(10_000) - sum(Fraction(q) * Fraction(p) for _, q, p in fills) - paid, scale)


def test_batch_inputs_may_be_arrays_of_str_read_only_arrays_or_iterators():
    pf, ref = Portfolio(1000.0), Portfolio(1000.0)
    symbols = np.array(["AAA", "BBB", "AAA"])  # elements are np.str_
    qs, ps = np.array([2.0, -1.0, 1.0]), np.array([10.0, 20.0, 11.0])
    qs.flags.writeable = ps.flags.writeable = False
    pf.apply_fills(symbols, qs, ps)
    for s, q, p in zip(["AAA", "BBB", "AAA"], qs, ps):
        ref.apply_fill(s, q, p)
    assert _state(pf) == _state(ref) and all(type(s) is str for s in pf.symbols)
    pf.apply_fill(np.str_("CCC"), 1.0, 5.0)
    assert pf.symbols[-1] == "CCC" and type(pf.symbols[-1]) is str
    after = _state(pf)
    with pytest.raises(ValueError, match="same length"):
        pf.apply_fills(["AAA", "BBB"], itertools.count(1), [1.0, 2.0])  # an endless iterator: read 3, refused
    with pytest.raises(TypeError, match="symbols"):
        pf.apply_fills((s for s in ["AAA"]), [1.0], [1.0])
    assert _state(pf) == after


# -- exposure metrics -----------------------------------------------------------------------
def _pandas_exposure(q, p, cash, max_leverage):
    """The oracle, in pandas: position values as a DataFrame (books x assets)."""
    import pandas as pd

    values = pd.DataFrame(q).mul(pd.DataFrame(np.broadcast_to(p, q.shape)), fill_value=None)
    gross = values.abs().sum(axis=1, skipna=False)
    net = values.sum(axis=1, skipna=False)
    equity = pd.Series(cash) + net
    live = equity.where(equity > 0)
    return {"gross": gross, "net": net, "equity": equity, "leverage": gross / live,
            "buying_power": (max_leverage * equity - gross).clip(lower=0.0).where(equity.notna()),
            "weights": values.div(live, axis=0), "positions": (pd.DataFrame(q) != 0).sum(axis=1)}


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 5), st.integers(1, 8), st.sampled_from([1.0, 2.0, 4.0]),
       st.sampled_from(["float64", "float32"]), st.booleans())
def test_batch_exposure_matches_pandas(seed, books, n, lev, dtype, per_book_prices):
    rng = np.random.default_rng(seed)
    q = rng.integers(-50, 50, (books, n)).astype(dtype)
    q[rng.random((books, n)) < 0.3] = 0
    p = rng.uniform(1, 100, (books, n) if per_book_prices else (n,))
    p[rng.random(p.shape) < 0.1] = np.nan
    cash = rng.uniform(-5e3, 1e4, books)
    qv = q.T.copy().T  # non-contiguous view of the same values
    qv.flags.writeable = False
    got = gt.portfolio.batch_exposure(qv, p, cash, max_leverage=lev)
    ref = _pandas_exposure(q.astype(np.float64), p, cash, lev)
    for key in ("gross", "net", "equity", "leverage", "buying_power"):
        np.testing.assert_allclose(got[key], ref[key].to_numpy(), rtol=1e-12, equal_nan=True, err_msg=key)
    np.testing.assert_allclose(got["weights"], ref["weights"].to_numpy(), rtol=1e-12, equal_nan=True)
    assert got["positions"].dtype == np.int64 and got["positions"].tolist() == ref["positions"].tolist()


def test_portfolio_exposure_metrics_equal_the_batch_form():
    pf = Portfolio(50_000.0)
    pf.apply_fill("A", 100, 50.0)
    pf.apply_fill("B", -200, 20.0)
    pf.apply_fill("C", 10, 5.0)
    pf.apply_fill("C", -10, 6.0)
    pf.mark_many({"A": 55.0, "B": 18.0})
    m = pf.exposure_metrics(max_leverage=2.0)
    snap = pf.snapshot()
    b = gt.portfolio.batch_exposure(snap.quantities[None], snap.last_prices, snap.cash, max_leverage=2.0)
    assert (m.gross, m.net, m.equity) == (100 * 55.0 + 200 * 18.0, 100 * 55.0 - 200 * 18.0, pf.equity())
    assert m.leverage == pytest.approx(m.gross / m.equity) and m.positions == 2 == pf.position_count()
    assert m.buying_power == pytest.approx(2.0 * m.equity - m.gross)
    assert m.weights == {"A": pytest.approx(5500 / m.equity), "B": pytest.approx(-3600 / m.equity)}
    for key in ("gross", "net", "equity", "leverage", "buying_power", "positions"):
        assert float(b[key][0]) == pytest.approx(getattr(m, key), rel=1e-15)
    with pytest.raises(ValueError, match="max_leverage"):
        pf.exposure_metrics(0)
    broke = Portfolio(-10.0)
    assert math.isnan(broke.exposure_metrics().leverage) and broke.exposure_metrics().buying_power == 0.0


def test_batch_exposure_shape_errors():
    with pytest.raises(ValueError, match="quantities"):
        gt.portfolio.batch_exposure(np.ones(3), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="prices"):
        gt.portfolio.batch_exposure(np.ones((2, 3)), np.ones(2), 1.0)
    with pytest.raises(ValueError, match="cash"):
        gt.portfolio.batch_exposure(np.ones((2, 3)), np.ones(3), np.ones(3))
