"""The ``risk`` suite (docs/design.md#benchmarks-and-targets).

Cases: historical, parametric and conditional VaR and Sharpe of one 252-day
series (empyrical / scipy timed on the same data; CVaR and Sharpe have empyrical as
the CPU's peer); correlation matrices of 5..50 assets x 252 days (``numpy.corrcoef``,
the peer at 50 assets, and pandas); the full ``risk_report`` of a 50-position book
(empyrical looped over the positions, one call per metric); batched cases that show
what a batch costs: historical VaR of 2000 series x 2520 days (peer
``np.quantile(axis=1)``), ``risk_report`` of 2000 portfolios x 2520 days (vs the obvious
NumPy, and against the copy bandwidth), ``rolling_corr`` (pandas, and the jax backend
as the CPU's peer, n/a without jax), ``ledoit_wolf`` (scikit-learn). The batched sizes
shrink with the run's size (``BATCH_SHAPES`` and siblings: standard keeps 500 of the
2000 series). The Monte Carlo VaR cases are defined in :mod:`.risk_montecarlo`, the streaming
risk cases (``RiskStream``) in :mod:`.risk_stream`.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import numpy as np

from ..harness import Reference, SkipCase, Workload
from . import risk_montecarlo, risk_stream

__all__ = ["workloads"]

DAYS = 252
CORR_ASSETS = (5, 10, 20, 50)
BOOK_POSITIONS = 50
CORR_PEER_ASSETS = 50  # the size whose target includes the np.corrcoef ratio
BATCH_SHAPES = {"quick": (200, 2520), "standard": (500, 2520), "full": (2000, 2520)}
ROLLING_SHAPES = {"quick": (10, 252), "standard": (20, 1260), "full": (20, 1260)}
ROLLING_WINDOW = 63
SHRINK_SHAPES = {"quick": (100, 250), "standard": (250, 1000), "full": (250, 1000)}
ITEMSIZE = 8


def _returns(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Fat-tailed daily returns (Student-t with 4 degrees of freedom, ~1 % scale)."""
    return np.random.default_rng(seed).standard_t(4, size=shape) * 0.01 + 0.0003


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def _ours(fn_name: str, shape: tuple[int, ...], **kwargs) -> Callable[[Any], Any]:
    """Setup of a gpu_trader.risk call on the backend's copy of the returns."""

    def setup(be):
        from gpu_trader import risk

        r = be.asarray(_returns(shape))
        return functools.partial(getattr(risk, fn_name), r, backend=be.name, **kwargs)

    return setup


def _reference(name: str, module: str, make: Callable[[Any, np.ndarray], Callable[[], Any]],
               shape: tuple[int, ...]) -> Reference:
    """Another library on the same returns: ``make(module, r)`` returns the zero-argument call."""

    def setup():
        return make(importlib.import_module(module), _returns(shape))

    return Reference(name, setup, _call, requires=module)


def _single(label: str, fn_name: str, target: str, refs: tuple[Reference, ...], **kwargs) -> Workload:
    shape = (DAYS,)
    return Workload(
        name=f"{label} {DAYS} days", sizes={"days": DAYS}, setup=_ours(fn_name, shape, **kwargs), run=_call,
        items=DAYS, unit="day", target=target, references=refs,
    )


def _singles() -> list[Workload]:
    shape = (DAYS,)
    return [
        _single("var_historical(0.99)", "var_historical", "risk.var_historical", (
            _reference("empyrical", "empyrical", lambda ep, r: functools.partial(ep.value_at_risk, r, 0.01), shape),
            _reference("numpy", "numpy", lambda np_, r: functools.partial(np_.percentile, r, 1.0), shape),
        )),
        _single("var_parametric(0.99)", "var_parametric", "risk.var_parametric", (
            _reference("scipy", "scipy.stats",
                       lambda st, r: lambda: st.norm.ppf(0.01, r.mean(), r.std(ddof=1)), shape),
        )),
        _single("cvar(0.99)", "cvar", "risk.cvar", (
            _reference("empyrical", "empyrical",
                       lambda ep, r: functools.partial(ep.conditional_value_at_risk, r, 0.01), shape),
        )),
        _single("sharpe", "sharpe", "risk.sharpe", (
            _reference("empyrical", "empyrical", lambda ep, r: functools.partial(ep.sharpe_ratio, r), shape),
        )),
    ]


def _corr(n_assets: int) -> Workload:
    shape = (n_assets, DAYS)

    def pandas_corr(pd, r):
        return pd.DataFrame(r.T).corr

    def setup(be):
        from gpu_trader import correlation

        return functools.partial(correlation.corr, be.asarray(_returns(shape)), backend=be.name)

    return Workload(
        name=f"corr {n_assets} assets x {DAYS} days", sizes={"assets": n_assets, "days": DAYS},
        setup=setup, run=_call, items=n_assets * n_assets, unit="pair",
        target="risk.corr_50" if n_assets == CORR_PEER_ASSETS else "risk.corr",
        references=(
            _reference("numpy", "numpy", lambda np_, r: functools.partial(np_.corrcoef, r), shape),
            _reference("pandas", "pandas", pandas_corr, shape),
        ),
    )


def _empyrical_book(ep, r: np.ndarray) -> Callable[[], Any]:
    """The report's metrics per position with empyrical (and the Gaussian VaR with NumPy)."""

    def run():
        for row in r:
            ep.value_at_risk(row, 0.01)
            ep.conditional_value_at_risk(row, 0.01)
            ep.max_drawdown(row)
            ep.sharpe_ratio(row)
            ep.sortino_ratio(row)
            ep.calmar_ratio(row)
            ep.annual_volatility(row)
            row.mean() + 2.326 * row.std(ddof=1)

    return run


def _full_report() -> Workload:
    shape = (BOOK_POSITIONS, DAYS)
    return Workload(
        name=f"risk_report {BOOK_POSITIONS} positions x {DAYS} days",
        sizes={"positions": BOOK_POSITIONS, "days": DAYS}, setup=_ours("risk_report", shape), run=_call,
        items=BOOK_POSITIONS, unit="position", target="risk.full",
        references=(_reference("empyrical", "empyrical", _empyrical_book, shape),),
    )


def _numpy_report(np_, r: np.ndarray) -> Callable[[], Any]:
    """The obvious vectorized NumPy for the report's core metrics on complete data."""

    def run():
        s = np_.sort(r, axis=-1)
        var = -np_.percentile(r, 1.0, axis=-1)
        k = int((r.shape[-1] - 1) * 0.01)
        cvar = -s[:, :k + 1].mean(axis=-1)
        mean, std = r.mean(axis=-1), r.std(axis=-1, ddof=1)
        wealth = np_.cumprod(1 + r, axis=-1)
        mdd = (1 - wealth / np_.maximum.accumulate(np_.maximum(wealth, 1), axis=-1)).max(axis=-1)
        return var, cvar, mean / std * np_.sqrt(252), mdd

    return run


def _batched_var(shape: tuple[int, int]) -> Workload:
    n, days = shape
    return Workload(
        name=f"var_historical(0.99) {n} series x {days} days", sizes={"series": n, "days": days},
        setup=_ours("var_historical", shape), run=_call, items=n * days, unit="day",
        target="risk.var_historical_batch",
        references=(_reference("numpy", "numpy", lambda np_, r: lambda: -np_.quantile(r, 0.01, axis=1), shape),),
    )


def _batched_report(shape: tuple[int, int]) -> Workload:
    n, days = shape
    return Workload(
        name=f"risk_report {n} portfolios x {days} days", sizes={"portfolios": n, "days": days},
        setup=_ours("risk_report", shape), run=_call, items=n * days, unit="day",
        references=(_reference("numpy", "numpy", _numpy_report, shape),),
        copy_inputs=lambda state: state.args, bytes_moved=n * days * ITEMSIZE,
    )


def _rolling(shape: tuple[int, int]) -> Workload:
    n, days = shape

    def setup(be):
        from gpu_trader import correlation

        return functools.partial(correlation.rolling_corr, be.asarray(_returns(shape)), ROLLING_WINDOW,
                                 backend=be.name)

    def jax_setup():
        from gpu_trader import correlation
        from gpu_trader.backend import get_backend

        try:
            jax_be = get_backend("jax")
        except ValueError as exc:  # jax imports but the backend cannot run here
            raise SkipCase(str(exc)) from None
        jax_be.configure_process()
        call = functools.partial(correlation.rolling_corr, jax_be.asarray(_returns(shape)), ROLLING_WINDOW,
                                 backend="jax")
        return lambda: jax_be.ready(call())

    return Workload(
        name=f"rolling_corr({ROLLING_WINDOW}) {n} assets x {days} days", sizes={"assets": n, "days": days},
        setup=setup, run=_call, items=n * n * days, unit="pair-day", target="risk.rolling_corr",
        references=(_reference("pandas", "pandas",
                               lambda pd, r: pd.DataFrame(r.T).rolling(ROLLING_WINDOW).corr, shape),
                    Reference("jax", jax_setup, _call, requires="jax")),
    )


def _ledoit_wolf(shape: tuple[int, int]) -> Workload:
    n, days = shape

    def setup(be):
        from gpu_trader import correlation

        return functools.partial(correlation.ledoit_wolf, be.asarray(_returns(shape)), backend=be.name)

    def sklearn_fit(cov, r):
        return functools.partial(cov.LedoitWolf().fit, np.ascontiguousarray(r.T))

    return Workload(
        name=f"ledoit_wolf {n} assets x {days} days", sizes={"assets": n, "days": days},
        setup=setup, run=_call, items=n * n, unit="pair",
        references=(_reference("sklearn", "sklearn.covariance", sklearn_fit, shape),),
    )


def workloads(size: str) -> list[Workload]:
    """All cases; ``size`` shrinks the batched ones (never the one-series sizes the targets name)."""
    out = _singles()
    out.extend(_corr(n) for n in CORR_ASSETS)
    out.append(_full_report())
    out.append(_batched_var(BATCH_SHAPES[size]))
    out.append(_batched_report(BATCH_SHAPES[size]))
    out.append(_rolling(ROLLING_SHAPES[size]))
    out.append(_ledoit_wolf(SHRINK_SHAPES[size]))
    out.extend(risk_montecarlo.workloads(size))
    out.extend(risk_stream.workloads(size))
    return out
