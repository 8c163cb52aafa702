"""Monte Carlo Value-at-Risk for many portfolios at once, with European options revalued in full.

Model and conventions (every backend):

* **Returns.** A scenario draws the assets' *simple* returns over ``horizon`` days as
  ``r = horizon * mu + sqrt(horizon) * g * L z`` with ``z`` standard normal,
  ``cov = L L^T`` (Cholesky; a matrix that is not positive definite is repaired by
  clipping its negative eigenvalues to 0, with a ``RuntimeWarning``) and ``mu``,
  ``cov`` daily. ``dist="normal"``: ``g = 1``. ``dist="t"``: multivariate Student-t
  with ``dof > 2`` degrees of freedom, ``g = sqrt((dof - 2) / chi2_dof)``, scaled so
  that ``cov`` *is* the one-day covariance of the scenarios (the t scale matrix is
  ``cov * (dof - 2) / dof``). The horizon uses the square-root-of-time rule for the
  random part and ``mu * horizon`` for the drift (for t: a one-day t scaled by
  ``sqrt(horizon)``, not a sum of daily draws).
* **Positions and units.** ``weights[..., i]`` is the value held in asset ``i``; the
  linear P&L of a scenario is ``weights @ r``. Losses, VaR, CVaR and contributions are
  in the units of ``weights``: currency amounts give currency, portfolio weights that
  sum to 1 give fractions of the portfolio's value. An :class:`EuropeanOptions` book adds
  ``quantity * (price after - price now)`` per option (so ``quantity * spot`` must be in
  the units of ``weights``): the underlying moves to ``spot * (1 + r)`` (the same simple
  return as the linear position; at or below -100 % the option takes its
  zero-spot limit), time to expiry shrinks by ``horizon / 252`` years, volatility and
  rate stay as given, and the option is repriced with Black-Scholes.
* **Estimators** (details in :mod:`gpu_trader._internal.montecarlo_xp`): ``var`` is the
  ``k``-th largest of the ``N`` simulated losses, ``k = ceil(N (1 - level))``; ``cvar``
  the mean of the ``k`` largest (both positive numbers for losses). ``var_se`` is the
  standard error of ``var`` from the distribution-free order-statistic band (ranks
  ``k -+ b``, ``b = ceil(1.96 sqrt(N p (1-p)))``) whose ends are ``var_ci``, a 95 %
  confidence interval. ``contributions`` (Euler / component VaR) estimate
  ``E[loss_i | loss = VaR]`` for each linear holding and ``option_contributions`` for each
  option, as the mean over the ``2b + 1`` scenarios of that band, rescaled so that
  ``contributions.sum(-1) + option_contributions.sum(-1) == var``.
* **Randomness.** Scenarios are drawn from counter-based streams keyed by the seed and the
  scenario's block (NumPy Philox on ``cpu``) or the scenario itself (Philox4x32-10 inside
  the kernels on ``cuda``, :mod:`gpu_trader._internal.philox_loops`), so a ``seed``
  reproduces a run exactly on a backend and ``chunk_size`` never changes the result (up
  to BLAS rounding); the backends draw different numbers (their agreement is statistical).
* **Memory.** Scenarios are processed ``chunk_size`` at a time and only each portfolio's
  worst ``m = k + b`` losses are kept, so the scenarios themselves are never stored, but
  that tail grows with ``n_scenarios * (1 - level) * n_portfolios``: the working memory
  is :func:`gpu_trader._internal.montecarlo_xp.work_bytes` (about ``P * m * (3 * itemsize + 32)`` bytes
  for the tail and its final sort, plus the chunks in flight and, on the GPU, the merge
  of each chunk into the tail). A call whose estimate exceeds
  :data:`gpu_trader._internal.validation.WORK_MEMORY_LIMIT` is refused before anything is
  allocated (``ValueError``): split the portfolios into batches, or draw fewer scenarios.
* **Limits.** ``0.5 <= level < 1`` (a confidence such as 0.99; a tail probability such as
  0.01 is refused with a hint), ``n_scenarios`` and ``chunk_size`` at most
  :data:`MAX_SCENARIOS`, ``horizon`` at most :data:`MAX_HORIZON` days, ``seed`` in
  ``[0, 2**64 - 1]``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import select_backend, to_numpy
from .profiling import annotate
from ._internal.risk_xp import check_levels
from ._internal.validation import check_count, check_flag, check_float, check_work_memory, finite_real_array, real_array

__all__ = ["var_monte_carlo", "EuropeanOptions", "MonteCarloVaR", "TRADING_DAYS_PER_YEAR", "MAX_SCENARIOS",
           "MAX_HORIZON", "MAX_SEED"]

TRADING_DAYS_PER_YEAR = 252
MIN_TAIL = 10  # scenarios required beyond the VaR quantile on each side
# Scenario numbers index counter-based streams: JAX folds a block number into its key as
# 32 bits (4096-scenario blocks: 2**44 scenarios), so the limit keeps every stream distinct.
MAX_SCENARIOS = 1 << 40
MAX_HORIZON = 100 * TRADING_DAYS_PER_YEAR  # days
MAX_SEED = (1 << 64) - 1


# The keyword defaults of var_monte_carlo, for callers that forward keywords (gpu_trader.distributed);
# a test checks they equal the signature's.
MONTE_CARLO_DEFAULTS = dict(level=0.99, n_scenarios=100_000, horizon=1, dist="normal", dof=None, seed=None,
                            options=None, contributions=True, chunk_size=None, dtype=np.float64, backend=None)

@dataclass(frozen=True)
class EuropeanOptions:
    """A book of European options on the assets of a Monte Carlo VaR call; one entry per option.

    Every field is a scalar or a ``(n_options,)`` sequence (broadcast together):
    ``asset`` (integer index of the underlying among the assets), ``spot`` (its price
    today, > 0), ``strike`` (> 0), ``expiry`` (years to expiry today, > 0), ``vol``
    (annualised Black-Scholes volatility, >= 0), ``rate`` (continuously compounded
    risk-free rate, default 0), ``call`` (True for a call, False for a put; default
    True). ``quantity`` is ``(n_options,)`` for every portfolio alike or
    ``(n_portfolios, n_options)``; negative for short positions.
    """

    asset: Any
    spot: Any
    strike: Any
    expiry: Any
    vol: Any
    quantity: Any
    rate: Any = 0.0
    call: Any = True


@dataclass(frozen=True)
class MonteCarloVaR:
    """Result of :func:`var_monte_carlo` (arrays on the backend's device, float64).

    With ``weights`` of shape ``(n_assets,)`` ``var``, ``cvar``, ``var_se`` and the
    ``var_ci`` bounds are 0-d, ``contributions`` is ``(n_assets,)`` and
    ``option_contributions`` ``(n_options,)``; with ``(n_portfolios, n_assets)`` each gains
    a leading ``n_portfolios`` axis. ``contributions``/``option_contributions`` are None
    when not requested (or without options). ``seed`` is the seed used (drawn from the OS
    when none was given), so any run can be repeated.
    """

    var: Any
    cvar: Any
    var_se: Any
    var_ci: tuple[Any, Any]
    contributions: Any
    option_contributions: Any
    level: float
    horizon: float
    n_scenarios: int
    dist: str
    seed: int


@annotate
def var_monte_carlo(
    weights,
    mu,
    cov,
    *,
    level: float = 0.99,
    n_scenarios: int = 100_000,
    horizon: float = 1,
    dist: str = "normal",
    dof: float | None = None,
    seed: int | None = None,
    options: EuropeanOptions | None = None,
    contributions: bool = True,
    chunk_size: int | None = None,
    dtype=np.float64,
    backend=None,
) -> MonteCarloVaR:
    """Monte Carlo VaR, CVaR and Euler contributions of one or many portfolios.

    ``weights``: ``(n_assets,)`` or ``(n_portfolios, n_assets)`` values held (see the
    module docstring for units); ``mu``: scalar or ``(n_assets,)`` daily mean simple
    returns; ``cov``: ``(n_assets, n_assets)`` daily covariance, symmetric. ``level``: a
    confidence with ``0.5 <= level < 1`` (0.99, not a tail probability such as 0.01);
    ``n_scenarios`` in ``[1, MAX_SCENARIOS]`` (and enough for ``MIN_TAIL`` losses on each
    side of the quantile); ``horizon`` in days, ``0 < horizon <= MAX_HORIZON``; ``dist``
    ``"normal"`` or ``"t"`` (then ``dof > 2`` is required); ``seed`` an integer in
    ``[0, 2**64 - 1]``; ``options`` an :class:`EuropeanOptions` book;
    ``contributions=False`` skips the Euler contributions (one pass instead of a pass
    plus the re-draw of the band's scenarios); ``chunk_size`` scenarios per chunk, in
    ``[1, MAX_SCENARIOS]`` (rounded up to the backend's block); ``dtype`` float64 or
    float32 for the scenarios and GEMMs (estimators are float64). Python and NumPy
    scalars are accepted alike, bools are not (``contributions`` is a bool; boolean arrays
    are refused for amounts such as ``weights``, ``mu`` and option quantities); arrays may be
    read-only (they are never written). NaN or inf anywhere in the inputs is a
    ``ValueError``; so is a call whose working memory (module docstring) would exceed the
    limit, before it allocates, and one whose inputs are so large that an option's value
    today or the simulated losses overflow float64 (a non-finite VaR or CVaR is never
    returned).
    Returns a :class:`MonteCarloVaR`.
    """
    be, plan, single = plan_monte_carlo(
        weights, mu, cov, level=level, n_scenarios=n_scenarios, horizon=horizon, dist=dist, dof=dof, seed=seed,
        options=options, contributions=contributions, chunk_size=chunk_size, dtype=dtype, backend=backend)
    return result(plan, be.ops("montecarlo").run(plan), single, dist)


def plan_monte_carlo(weights, mu, cov, *, level, n_scenarios, horizon, dist, dof, seed, options, contributions,
                     chunk_size, dtype, backend):
    """Validate the arguments of :func:`var_monte_carlo` into ``(backend, montecarlo_xp.Plan, single)``
    (``single``: the weights were one portfolio). Shared with :mod:`gpu_trader.distributed`."""
    be = select_backend(weights, backend)
    w = finite_real_array(weights, "weights")
    if w.ndim not in (1, 2) or w.shape[-1] == 0 or w.size == 0:
        raise ValueError(f"weights must have shape (n_assets,) or (n_portfolios, n_assets), got {w.shape}")
    single = w.ndim == 1
    w2 = np.atleast_2d(w)
    n = w2.shape[1]
    c = finite_real_array(cov, "cov")
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cov must be a square (n_assets, n_assets) matrix, got shape {c.shape}")
    if c.shape[0] != n:
        raise ValueError(f"cov is {c.shape} but weights have {n} assets; they must match")
    if not np.allclose(c, c.T, rtol=1e-10, atol=1e-14 * max(1.0, float(np.abs(c).max()))):
        raise ValueError("cov must be symmetric")
    if np.any(np.diag(c) < 0):
        raise ValueError("cov has negative variances on its diagonal")
    m = finite_real_array(mu, "mu")
    if m.ndim == 0:
        m = np.full(n, float(m))
    if m.shape != (n,):
        raise ValueError(f"mu must be a scalar or have shape ({n},) like the assets, got {m.shape}")
    levels, grid = check_levels(level)
    if grid:
        raise TypeError("level must be one number for var_monte_carlo, got a sequence")
    level = levels[0]
    horizon = check_float(horizon, "horizon", positive=True)
    if horizon > MAX_HORIZON:
        raise ValueError(f"horizon must be <= {MAX_HORIZON} days, got {horizon}")
    n_scenarios = check_count(n_scenarios, "n_scenarios", 1, MAX_SCENARIOS)
    k = math.ceil(n_scenarios * (1.0 - level) - 1e-9)  # the tolerance absorbs 1 - level's binary rounding
    if k < MIN_TAIL or n_scenarios - k < MIN_TAIL:
        raise ValueError(
            f"n_scenarios={n_scenarios} is too small for level={level}: need at least {MIN_TAIL} scenarios "
            f"on each side of the VaR quantile (n_scenarios * (1 - level) >= {MIN_TAIL})"
        )
    dof = _dist(dist, dof)
    seed = _seed(seed)
    dt = _scenario_dtype(dtype)
    contributions = check_flag(contributions, "contributions")
    opts, qty = _options(options, n, w2.shape[0], horizon)
    ops = be.ops("montecarlo")
    from ._internal import montecarlo_xp

    band = montecarlo_xp.band_for(n_scenarios, level)
    if chunk_size is None:  # the backend's default: a number of normals, or a device-memory budget
        n_under = 0 if opts is None else opts.assets.shape[0]
        n_opts = 0 if opts is None else opts.strike.shape[0]
        chunk_size = montecarlo_xp.default_chunk(ops, w2.shape[0], n, n_under, n_opts, min(n_scenarios, k + band),
                                                 dt.itemsize)
    chunk = -(-check_count(chunk_size, "chunk_size", 1, MAX_SCENARIOS) // ops.BLOCK) * ops.BLOCK
    plan = montecarlo_xp.Plan(
        n_scenarios=n_scenarios, level=level, n_tail=k, band=band, keep=min(n_scenarios, k + band),
        horizon=horizon, dof=dof, seed=seed, chunk=chunk, dtype=dt, factor=_factor(c), mu=m,
        weights=w2, options=opts, quantity=qty, contributions=bool(contributions),
    )
    check_work_memory(montecarlo_xp.work_bytes(plan, ops), f"var_monte_carlo of {w2.shape[0]} portfolios x "
                      f"{n_scenarios} scenarios at level={level} (a tail of {plan.keep} losses each)")
    return be, plan, single


def result(plan, res: dict, single: bool, dist: str) -> MonteCarloVaR:
    """Wrap the engine's estimates (:func:`gpu_trader._internal.montecarlo_xp.finish`) as a :class:`MonteCarloVaR`."""
    _check_finite_losses(res)
    pick = (lambda a: a[0]) if single else (lambda a: a)
    opt_c = res["option_contributions"]
    return MonteCarloVaR(
        var=pick(res["var"]), cvar=pick(res["cvar"]), var_se=pick(res["se"]),
        var_ci=(pick(res["ci_low"]), pick(res["ci_high"])),
        contributions=None if res["contributions"] is None else pick(res["contributions"]),
        option_contributions=None if opt_c is None else pick(opt_c),
        level=plan.level, horizon=plan.horizon, n_scenarios=plan.n_scenarios, dist=dist, seed=plan.seed,
    )


def _check_finite_losses(res: dict) -> None:
    """``ValueError`` when a VaR or CVaR estimate is not finite: the inputs' magnitudes made the
    simulated losses overflow float64 (finite inputs of ordinary size never do)."""
    finite = np.isfinite(to_numpy(res["var"])).all() and np.isfinite(to_numpy(res["cvar"])).all()
    if not finite:
        raise ValueError("the simulated losses overflow float64 (VaR or CVaR is not finite): the magnitudes of "
                         "weights, mu, cov, horizon or the options' spot, strike and quantity are too large")


def _scenario_dtype(dtype) -> np.dtype:
    """``dtype`` (float32 or float64, as a NumPy dtype, type or name) as a NumPy dtype;
    ``TypeError`` naming ``dtype`` for anything else (``None`` included)."""
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _dist(dist, dof):
    if dist == "normal":
        if dof is not None:
            raise ValueError("dof is only used with dist='t'")
        return None
    if dist == "t":
        if dof is None:
            raise ValueError("dist='t' needs dof (degrees of freedom, > 2)")
        dof = check_float(dof, "dof")
        if dof <= 2:
            raise ValueError(f"dof must be > 2 (the t covariance is infinite otherwise), got {dof}")
        return dof
    raise ValueError(f"dist must be 'normal' or 't', got {dist!r}")


def _seed(seed) -> int:
    """The seed given (an integer in ``[0, MAX_SEED]``), or one drawn from the OS for None."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (1 << 63))
    return check_count(seed, "seed", 0, MAX_SEED)


def _factor(cov: np.ndarray) -> np.ndarray:
    """``L`` with ``L L^T = cov``: Cholesky, or the eigenvalue-clipped square root with a warning."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(cov)
        warnings.warn(
            f"cov is not positive definite (smallest eigenvalue {vals[0]:.3g}); using it with negative "
            "eigenvalues clipped to 0",
            RuntimeWarning, stacklevel=3,
        )
        return vecs * np.sqrt(np.clip(vals, 0.0, None))[None, :]


def _options(options, n_assets: int, n_portfolios: int, horizon: float):
    """The engine's arrays of a validated option book and its ``(P, n_options)`` quantities."""
    if options is None:
        return None, None
    if not isinstance(options, EuropeanOptions):
        raise TypeError(f"options must be an EuropeanOptions book, got {type(options).__name__}")
    asset = real_array(options.asset, "options.asset")
    if asset.dtype.kind not in "iu":
        raise TypeError(f"options.asset must hold integer asset indices, got dtype {asset.dtype}")
    fields = {f: finite_real_array(getattr(options, f), f"options.{f}")
              for f in ("spot", "strike", "expiry", "vol", "rate")}
    call = real_array(options.call, "options.call")
    if call.dtype.kind != "b":
        raise TypeError(f"options.call must be boolean, got dtype {call.dtype}")
    try:
        arrays = np.broadcast_arrays(asset, call, *fields.values())
    except ValueError:
        raise ValueError("options fields must be scalars or (n_options,) arrays of one length") from None
    if arrays[0].ndim > 1:
        raise ValueError("options fields must be scalars or (n_options,) arrays")
    asset, call, spot, strike, expiry, vol, rate = (np.atleast_1d(a).copy() for a in arrays)
    if np.any((asset < 0) | (asset >= n_assets)):
        raise ValueError(f"options.asset must index the {n_assets} assets (0 .. {n_assets - 1})")
    for name, arr, low in (("spot", spot, 0.0), ("strike", strike, 0.0), ("expiry", expiry, 0.0)):
        if np.any(arr <= low):
            raise ValueError(f"options.{name} must be > 0")
    if np.any(vol < 0):
        raise ValueError("options.vol must be >= 0 (negative volatility)")
    qty = finite_real_array(options.quantity, "options.quantity")
    n_opt = asset.shape[0]
    if qty.shape == (n_opt,) or qty.ndim == 0:
        qty = np.broadcast_to(qty, (n_portfolios, n_opt)).copy()
    if qty.shape != (n_portfolios, n_opt):
        raise ValueError(
            f"options.quantity must have shape ({n_opt},) or ({n_portfolios}, {n_opt}), got {qty.shape}"
        )
    return _option_arrays(asset, (spot, strike, expiry, vol, rate, call), horizon), qty


def _option_arrays(asset, fields, horizon: float):
    """Engine arrays for an option book: underlyings, shortened expiry, today's prices."""
    from ._internal.montecarlo_xp import OptionArrays
    from ._internal.option_loops import bs_price

    spot, strike, expiry, vol, rate, call = fields
    assets, under = np.unique(asset, return_inverse=True)
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            value0 = np.array([bs_price(*args) for args in zip(spot, strike, expiry, rate, vol, call)])
        except OverflowError:  # math.exp of -rate * expiry past the float64 range
            value0 = np.array([np.inf])
    if not np.all(np.isfinite(value0)):
        raise ValueError("options: today's Black-Scholes value of an option is not a finite number; "
                         "check the magnitudes of spot, strike, expiry, vol and rate")
    return OptionArrays(
        assets=assets, under=under.astype(np.int64), spot=spot, strike=strike,
        tau=expiry - horizon / TRADING_DAYS_PER_YEAR, rate=rate, vol=vol, is_call=call.astype(np.bool_),
        value0=value0,
    )
