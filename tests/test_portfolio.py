"""Portfolio accounting against an independent exact oracle.

Oracle: :func:`oracle_book` below tracks each position as (quantity, signed cost basis)
in exact rational arithmetic (``fractions.Fraction``) and closes a fraction of the
basis on each reduction -- a different formulation from the average-price update
of ``position_math.fill_step`` -- and total P&L is checked against the
method-independent cash-flow identity ``-sum(qty * price) + sum(final qty * mark)``.
Commissions are checked against brute-force bracket loops.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
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
    (lambda p: p.apply_fill("X", 1, 10.0, commission=-5.0), "commission must be >= 0"),
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





def test_cuda_kernel_compiles_to_ptx():
    """The real (non-simulated) kernel, with the argument types a launch uses, compiles for
    sm_90 (H100); needs NVVM, not a GPU."""
    assert_compiles_to_ptx("""
        import types
        from numba import cuda, float64
        from numba.cuda import dispatcher
        from gpu_trader.kernels import portfolio as kp
        # device functions compile for the current device's capability: answer the query with sm_90
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
        v, m = float64[::1], float64[:, ::1]
        ptx, _ = cuda.compile_ptx(kp._kernel().py_func, (v, v, v, m, m), cc=(9, 0))
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
