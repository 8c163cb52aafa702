"""The Monte Carlo VaR driver, written once against an array module and a backend's primitives.

:mod:`gpu_trader.montecarlo` validates the inputs into a :class:`Plan`; each backend's
``montecarlo`` module (:mod:`gpu_trader.cpu_fallback.montecarlo`,
:mod:`gpu_trader.kernels.montecarlo`) calls :func:`run` with itself as ``ops``, which
must provide:

* ``xp`` -- the array module (NumPy, CuPy);
* ``map_chunks(fn, items)`` -- ``fn(item)`` for each chunk start (or run of blocks),
  results in order (the CPU computes several at once on worker threads; the GPU maps);
* ``BLOCK`` -- scenarios per random-number block; block ``b`` (scenarios
  ``b*BLOCK .. (b+1)*BLOCK - 1``) is drawn from its own counter-based stream keyed by
  ``(seed, b)``, so a chunk (a whole number of blocks) draws the same numbers however
  the scenarios are chunked;
* ``normals(seed, first, rows, n, dtype, dof) -> (z, g)`` -- the standard normals of
  scenarios ``first .. first+rows-1`` as ``(rows, n)`` and, for Student-t (``dof`` not
  None), the per-scenario mixing factor ``g = sqrt((dof - 2) / chi2_dof)`` as
  ``(rows,)`` (else None); ``first`` is a multiple of ``BLOCK``;
* ``project(seed, first, rows, bt, dtype, dof) -> (P + U, rows)`` -- ``Bt @ z.T`` (times ``g``)
  for the chunk's normals ``z``: :func:`gemm_projection` (``normals``, then one GEMM), or, for up
  to ``FUSED_MAX_ROWS`` GEMM rows ``P + U``, one kernel whose normals never leave registers, so the
  chunk holds no ``(rows, n)`` normals (the GPU; ``FUSED_MAX_ROWS = 0`` elsewhere);
* ``option_pnl(returns, plan_options, dtype) -> (n_options, rows)`` -- the fused
  Black-Scholes revaluation (:func:`gpu_trader._internal.option_loops.option_pnl_item`);
* ``tail_update(vals, idx, loss, first) -> (vals, idx)`` -- keep, per portfolio (row),
  the ``m`` largest losses seen so far and their scenario numbers;
* ``scatter_add(acc, rows, values) -> acc`` -- ``acc[rows[i]] += values[i]`` with repeats
  (in place where the arrays are mutable; JAX returns the updated copy);
* ``normals_at(seed, scenarios, n, dtype, dof) -> (z, g)`` or None -- the normals (and t factors)
  of the given scenario numbers (a device int64 array), for the re-draw of the contribution
  band: exactly its ``P (2 b + 1)`` scenarios instead of every block that holds one (at one
  portfolio, 1M scenarios, level 0.99 and ``BLOCK = 1024``: 391 rows instead of ~400,000);
  None where the streams are per block (the driver then re-draws those blocks);
* ``CHUNKS_IN_FLIGHT`` -- how many chunks' arrays can be alive at once (computed, queued
  or being merged), ``MERGE_SCRATCH`` -- whether ``tail_update`` builds ``(P, m + c)``
  scratch arrays (:func:`merge_tail`, or ``(P, m + c)`` for ``c <= rows`` candidates,
  :func:`merge_tail_candidates`) rather than updating the tail in place, ``FUSED_MAX_ROWS``
  (above) and ``CHUNK_BYTES`` -- the device-memory budget of one chunk's arrays from which
  :func:`default_chunk` sizes the chunk (None: ``CHUNK_ELEMENTS`` normals a chunk); they size
  the chunk and the working-memory estimate :func:`work_bytes`.

:class:`gpu_trader._internal.areas.MontecarloOps` states the same as a protocol.

The driver itself never assigns into an array, so it runs on immutable arrays (JAX)
as well as on NumPy and CuPy.

**Algorithm.** With ``cov = L L^T``, a scenario's simple returns over ``h`` days are
``r = h*mu + sqrt(h) * g * L z`` (``g = 1`` for the normal). The linear part of every
portfolio's loss and the returns of the option underlyings come from one GEMM per
chunk, ``Y = Bt @ z.T`` with ``Bt = sqrt(h) * [W L ; L[U]]`` (``(P + U, n)``), so the
correlated ``(rows, n)`` scenario matrix is never formed. The options are revalued
from ``Y[P:]`` by one fused kernel and their P&L enters the losses by a second GEMM
with the quantities. Each portfolio keeps only its ``m`` worst losses (``m = k + b``,
``k = ceil(N (1 - level))`` the tail count, ``b`` the half-width below), so memory is
``O(chunk * (n + P + U + n_options) + P * m)``: the scenarios are never stored, but the
tail grows with ``N * (1 - level) * P``. :func:`work_bytes` gives the peak in bytes,
which the public layer checks against a limit before anything is allocated.

**Estimators.** ``var`` is the ``k``-th largest loss, ``cvar`` the mean of the ``k``
largest. The standard error comes from the distribution-free order-statistic band:
the rank of the true quantile among the sorted losses has standard deviation
``sqrt(N p (1 - p))`` (``p = 1 - level``), so with ``b = ceil(1.96 sqrt(N p (1-p)))``
the losses ranked ``k - b`` and ``k + b`` bound a 95 % confidence interval and
``se = (L[k-b] - L[k+b]) / (2 b / sqrt(N p (1-p)))``.
The Euler contribution of position ``i`` is ``E[loss_i | loss = VaR]``, estimated as
the mean of ``loss_i`` over the ``2b + 1`` scenarios ranked ``k-b .. k+b`` (the same
band), then scaled by ``var / sum_i(...)`` so the contributions add up to ``var``
exactly (the factor is 1 up to sampling noise of the band's mean). Those scenarios are
re-drawn after the pass from their blocks (counter-based streams make that exact), so
no scenario matrix is stored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Plan", "OptionArrays", "run", "tail", "merge_tail", "merge_tail_candidates", "merge_tails", "finish",
           "band_for", "work_bytes", "project", "gemm_projection", "fused", "default_chunk", "chunk_row_bytes", "Z_95", "CHUNK_ELEMENTS"]

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
CHUNK_ELEMENTS = 1 << 22  # default chunk without a CHUNK_BYTES budget: about this many normals


@dataclass(frozen=True)
class OptionArrays:
    """Host arrays of an option book, one entry per option; see :class:`gpu_trader.montecarlo.EuropeanOptions`.

    ``under`` indexes the underlyings ``assets`` (``(U,)``, the distinct assets with
    options); ``tau`` is the time to expiry after the horizon, ``value0`` today's price.
    """

    assets: np.ndarray
    under: np.ndarray
    spot: np.ndarray
    strike: np.ndarray
    tau: np.ndarray
    rate: np.ndarray
    vol: np.ndarray
    is_call: np.ndarray
    value0: np.ndarray


@dataclass(frozen=True)
class Plan:
    """A validated Monte Carlo VaR request (host float64 arrays, shapes as documented)."""

    n_scenarios: int
    level: float
    n_tail: int                  # k
    band: int                    # b
    keep: int                    # m = min(N, k + b)
    horizon: float               # days
    dof: float | None
    seed: int
    chunk: int                   # scenarios per chunk (a multiple of the backend's BLOCK)
    dtype: np.dtype
    factor: np.ndarray           # (n, n), L with L L^T = cov
    mu: np.ndarray               # (n,)
    weights: np.ndarray          # (P, n)
    options: OptionArrays | None
    quantity: np.ndarray | None  # (P, n_options)
    contributions: bool


def band_for(n_scenarios: int, level: float) -> int:
    """``b = ceil(1.96 sqrt(N p (1 - p)))``, ``p = 1 - level``."""
    p = 1.0 - level
    return max(1, math.ceil(Z_95 * math.sqrt(n_scenarios * p * (1.0 - p))))


def work_bytes(plan: Plan, ops: Any) -> int:
    """Upper estimate of the peak working memory of :func:`run` on a backend ``ops``, in bytes.

    With ``s`` the scenario dtype's itemsize, ``P`` portfolios, ``n`` assets, ``U``
    underlyings, ``K`` options, ``m`` the kept tail, ``w = 2 b + 1`` the band and
    ``rows = min(chunk, N)``:

    * the tail, alive throughout: ``P m (s + 8)`` (losses and scenario numbers);
    * during the pass, ``ops.CHUNKS_IN_FLIGHT`` chunks of :func:`chunk_row_bytes` per scenario
      (``rows (n + 1 + 3 P + 2 U + K) s``: normals, GEMM output, losses, option values; no
      ``n`` term where :func:`fused`) and, where ``ops.MERGE_SCRATCH``, the merge's
      ``P (m + rows) (s + 16) + P m (s + 8)``;
    * after it, the sort of the tail ``P m (2 s + 24)`` and the contributions'
      ``32 P w + 48 P n``.

    The peak is the tail plus the larger of the last two. Inputs (weights, covariance,
    its factor) are not counted: they are the caller's size already.
    """
    s = plan.dtype.itemsize
    P, n = plan.weights.shape
    m, rows = plan.keep, min(plan.chunk, plan.n_scenarios)
    U = 0 if plan.options is None else plan.options.assets.shape[0]
    K = 0 if plan.options is None else plan.options.strike.shape[0]
    tail = P * m * (s + 8)
    chunks = ops.CHUNKS_IN_FLIGHT * rows * chunk_row_bytes(ops, P, n, U, K, s)
    merge = P * (m + rows) * (s + 16) + P * m * (s + 8) if ops.MERGE_SCRATCH else 0
    w = 2 * plan.band + 1
    finish = P * m * (2 * s + 24) + 32 * P * w + 48 * P * n
    return tail + max(chunks + merge, finish)


def fused(ops: Any, gemm_rows: int) -> bool:
    """Whether ``ops`` computes a chunk's ``(gemm_rows, rows)`` GEMM output with its normals generated
    in the kernel (``gemm_rows = P + U <= ops.FUSED_MAX_ROWS``)."""
    return gemm_rows <= ops.FUSED_MAX_ROWS


def chunk_row_bytes(ops: Any, P: int, n: int, U: int, K: int, itemsize: int) -> int:
    """Bytes of one scenario's share of a chunk's arrays: ``(n + 1 + 3 P + 2 U + K) itemsize``, without
    the ``n`` normals where :func:`fused` (see :func:`work_bytes`)."""
    normals = 0 if fused(ops, P + U) else n
    return (normals + 1 + 3 * P + 2 * U + K) * itemsize


def default_chunk(ops: Any, P: int, n: int, U: int, K: int, keep: int, itemsize: int) -> int:
    """Scenarios per chunk when the caller gives none: ``CHUNK_ELEMENTS // n`` or, where ``ops`` has a
    ``CHUNK_BYTES`` budget, as many as fit it -- the chunk's arrays (:func:`chunk_row_bytes`) plus,
    where ``ops.MERGE_SCRATCH``, the merge's ``P (s + 16)`` bytes per scenario -- after the merge's
    fixed ``P keep (2 s + 24)``; at least one."""
    budget = ops.CHUNK_BYTES
    if budget is None:
        return max(1, CHUNK_ELEMENTS // n)
    per_row = ops.CHUNKS_IN_FLIGHT * chunk_row_bytes(ops, P, n, U, K, itemsize)
    fixed = 0
    if ops.MERGE_SCRATCH:
        per_row += P * (itemsize + 16)
        fixed = P * keep * (2 * itemsize + 24)
    return max(1, (budget - fixed) // per_row)


def project(plan: Plan, ops: Any, bt, first: int, rows: int):
    """``Bt @ z.T`` ``(len(bt), rows)`` for scenarios ``first ..``, times the Student-t factors ``g``:
    ``ops.project`` (normals generated in its kernel where :func:`fused`, else :func:`gemm_projection`)."""
    return ops.project(plan.seed, first, rows, bt, plan.dtype, plan.dof)


def gemm_projection(normals, seed: int, first: int, rows: int, bt, dtype, dof):
    """``bt @ z.T`` ``(len(bt), rows)`` times the t factors ``g``, with ``(z, g) = normals(seed, first, rows,
    n, dtype, dof)`` (a backend's ``normals``) and one GEMM: the projection of every backend without
    (or beyond) a fused kernel."""
    z, g = normals(seed, first, rows, bt.shape[1], dtype, dof)
    y = bt @ z.T                                                # the one big GEMM: (P + U, rows)
    if g is not None:
        y *= g[None, :]
    return y


def run(plan: Plan, ops: Any) -> dict[str, Any]:
    """Run ``plan`` on a backend; returns ``var, cvar, se, ci_low, ci_high`` as ``(P,)``
    arrays and, with ``plan.contributions``, ``contributions (P, n)`` and
    ``option_contributions (P, n_options)`` (None without options), all float64 on the device."""
    vals, idx = tail(plan, ops, 0, plan.n_scenarios)
    return finish(plan, ops, vals, idx)


def tail(plan: Plan, ops: Any, start: int, stop: int):
    """Each portfolio's ``plan.keep`` largest losses among scenarios ``start .. stop - 1``
    and their scenario numbers: ``(vals, idx)``, ``(P, keep)`` each, unsorted (``-inf`` /
    ``-1`` where fewer scenarios). ``start`` must be a multiple of ``plan.chunk``: the
    chunks are then the same as in a single pass, so the losses are bit for bit the same
    however the range is split (what :mod:`gpu_trader.distributed` relies on)."""
    if start % plan.chunk:
        raise ValueError(f"start={start} must be a multiple of the chunk size {plan.chunk}")
    xp = ops.xp
    sim = _Simulation(plan, ops)
    vals = xp.full((sim.P, plan.keep), -xp.inf, dtype=plan.dtype)
    idx = xp.full((sim.P, plan.keep), -1, dtype=xp.int64)
    firsts = range(start, min(stop, plan.n_scenarios), plan.chunk)
    for first, loss in zip(firsts, ops.map_chunks(sim.losses, firsts)):
        vals, idx = ops.tail_update(vals, idx, loss, first)
    return vals, idx


def merge_tail(xp, vals, idx, loss, first: int):
    """Keep, per row, the ``m`` largest of ``vals`` ``(P, m)`` and ``loss`` ``(P, rows)`` with their
    scenario numbers (``idx``; the chunk's are ``first + column``). Returns new ``(vals, idx)``."""
    P, m = vals.shape
    rows = loss.shape[1]
    allv = xp.concatenate([vals, loss.astype(vals.dtype)], axis=1)
    alli = xp.concatenate([idx, xp.broadcast_to(xp.arange(first, first + rows, dtype=idx.dtype), (P, rows))], axis=1)
    keep = xp.argpartition(allv, rows, axis=1)[:, rows:]
    return xp.take_along_axis(allv, keep, axis=1), xp.take_along_axis(alli, keep, axis=1)


def merge_tail_candidates(xp, vals, idx, loss, first: int):
    """:func:`merge_tail` for array modules whose partition is a sort (CuPy): keep, per row, the ``m``
    largest of ``vals`` ``(P, m)`` and ``loss`` ``(P, rows)`` with their scenario numbers. (The
    ``cuda`` backend merges with one kernel, :func:`gpu_trader.kernels.montecarlo.tail_update`, whose
    result this array formulation gives too: the simulator tests compare them.)

    ``vals`` must be sorted in descending order along each row (``-inf`` padding last), as
    this function, :func:`merge_tails` and a fresh ``-inf`` tail are; the result is too.
    Only the chunk's *candidates* are touched: losses above the row's current ``m``-th
    largest ``vals[:, -1]`` (ties keep the earlier scenario, like the CPU heap; NaN never
    enters). With ``c`` the largest candidate count of a row (the one host transfer of a
    call), the candidates are compacted into ``(P, c)``, sorted, given their merged
    positions by a binary search over the sorted tail (``ceil(log2(m + 1))`` gathers of
    ``(P, c)``), and the tail is rebuilt from one ``(P, m)`` gather. So a chunk costs one
    pass over its losses, a sort of ``P c`` elements (not ``P (m + rows)``: CuPy partitions by
    sorting) and ``O(P (m + c))`` element moves; nothing when ``c = 0``. After the first
    ``m`` scenarios a random chunk has ``c ~ rows m / seen`` candidates, so a whole run sorts
    about ``P m (1 + ln(N / m))`` elements instead of ``P (m + rows) N / rows``. On NumPy, whose
    ``argpartition`` is a linear-time selection, :func:`merge_tail` is faster (the scatters and
    the binary search cost more there than the selection they replace).
    """
    P, m = vals.shape
    rows = loss.shape[1]
    loss = loss.astype(vals.dtype, copy=False)
    hit = loss > vals[:, m - 1:]                                    # (P, rows): beyond the m-th largest
    pos = xp.cumsum(hit, axis=1, dtype=xp.int64)                    # 1-based place among the row's candidates
    c = int(pos[:, -1].max()) if rows else 0                        # the call's one device -> host transfer
    if c == 0:
        return vals, idx
    row = xp.arange(P)[:, None]
    dest = xp.where(hit, pos - 1, c)                                # column c collects the non-candidates
    cand = xp.full((P, c + 1), -xp.inf, dtype=vals.dtype)
    cand[row, dest] = loss
    cidx = xp.full((P, c + 1), -1, dtype=idx.dtype)
    cidx[row, dest] = xp.arange(first, first + rows, dtype=idx.dtype)[None, :]
    order = xp.argsort(-cand[:, :c], axis=1, kind="stable")         # candidates, largest first (ties: earlier)
    cand = xp.take_along_axis(cand, order, axis=1)
    cidx = xp.take_along_axis(cidx, order, axis=1)
    # below[p, i]: how many kept values are >= cand[p, i] (binary search over the descending tail)
    lo = xp.zeros((P, c), dtype=xp.int64)
    hi = xp.full((P, c), m, dtype=xp.int64)
    for _ in range(max(1, m.bit_length())):
        mid = (lo + hi) // 2
        right = (mid < hi) & (xp.take_along_axis(vals, xp.minimum(mid, m - 1), axis=1) >= cand)
        lo = xp.where(right, mid + 1, lo)
        hi = xp.where(right, hi, mid)
    slot = xp.arange(c)[None, :] + lo                               # merged positions, strictly increasing
    slot = xp.where(slot < m, slot, m)                              # beyond the tail: column m, dropped
    taken = xp.zeros((P, m + 1), dtype=bool)
    taken[row, slot] = True
    new_v = xp.full((P, m + 1), -xp.inf, dtype=vals.dtype)
    new_v[row, slot] = cand
    new_i = xp.full((P, m + 1), -1, dtype=idx.dtype)
    new_i[row, slot] = cidx
    taken, new_v, new_i = taken[:, :m], new_v[:, :m], new_i[:, :m]
    old = xp.cumsum(~taken, axis=1) - 1                             # the kept values fill the free slots in order
    old = xp.clip(old, 0, m - 1)
    vals = xp.where(taken, new_v, xp.take_along_axis(vals, old, axis=1))
    idx = xp.where(taken, new_i, xp.take_along_axis(idx, old, axis=1))
    return vals, idx


def merge_tails(plan: Plan, ops: Any, tails) -> tuple[Any, Any]:
    """Merge partial ``(vals, idx)`` tails (e.g. from several workers) into one."""
    xp = ops.xp
    vals = xp.concatenate([xp.asarray(v) for v, _ in tails], axis=1)
    idx = xp.concatenate([xp.asarray(i) for _, i in tails], axis=1)
    keep = xp.argsort(-vals, axis=1)[:, : plan.keep]
    return xp.take_along_axis(vals, keep, axis=1), xp.take_along_axis(idx, keep, axis=1)


def finish(plan: Plan, ops: Any, vals, idx) -> dict[str, Any]:
    """The estimators (and the re-drawn Euler contributions) from a complete tail."""
    xp = ops.xp
    order = xp.argsort(-vals, axis=1)
    vals = xp.take_along_axis(vals, order, axis=1).astype(xp.float64)
    idx = xp.take_along_axis(idx, order, axis=1)
    k = plan.n_tail
    half = min(plan.band, k - 1, plan.keep - k)
    var = vals[:, k - 1]
    out = {
        "var": var,
        "cvar": vals[:, :k].mean(axis=1),
        "ci_low": vals[:, k - 1 + half],
        "ci_high": vals[:, k - 1 - half],
    }
    p = 1.0 - plan.level
    out["se"] = (out["ci_high"] - out["ci_low"]) * (math.sqrt(plan.n_scenarios * p * (1 - p)) / (2.0 * half))
    out["contributions"] = out["option_contributions"] = None
    if plan.contributions:
        sim = _Simulation(plan, ops)
        out["contributions"], out["option_contributions"] = sim.contributions(idx[:, k - 1 - half: k + half], var)
    return out


class _Simulation:
    """Device-side constants of one plan and the per-chunk loss computation."""

    def __init__(self, plan: Plan, ops: Any) -> None:
        xp = ops.xp
        self.plan, self.ops, self.xp = plan, ops, xp
        h = plan.horizon
        W, L, mu = plan.weights, plan.factor, plan.mu
        self.P, self.n = W.shape
        opts = plan.options
        under_rows = L[opts.assets] if opts is not None else np.empty((0, self.n))
        bt = math.sqrt(h) * np.vstack([W @ L, under_rows])      # (P + U, n)
        self.bt = xp.asarray(bt.astype(plan.dtype))
        self.bt_under = xp.asarray(bt[self.P:])                 # float64, for the re-drawn band
        self.neg_drift = xp.asarray((-h * (W @ mu))[:, None].astype(plan.dtype))  # (P, 1) minus the portfolio drift
        self.L_t = xp.asarray(L.T)
        self.h_mu = xp.asarray(h * mu)
        self.W = xp.asarray(W)
        if opts is not None:
            self.opts = _device_options(xp, opts, h * mu[opts.assets])
            self.quantity = xp.asarray(plan.quantity.astype(plan.dtype))
            self.quantity64 = xp.asarray(plan.quantity)
        else:
            self.opts = None

    def losses(self, first: int):
        """``(P, rows)`` losses of the chunk of scenarios starting at ``first``, in the plan's dtype."""
        plan = self.plan
        rows = min(plan.chunk, plan.n_scenarios - first)
        y = project(plan, self.ops, self.bt, first, rows)     # (P + U, rows)
        loss = self.neg_drift - y[: self.P]                     # = -(y + drift), bit for bit
        if self.opts is not None:
            dv = self.ops.option_pnl(y[self.P:], self.opts, plan.dtype)
            loss -= self.quantity @ dv
        return loss

    def contributions(self, band_idx, var):
        """Euler contributions from the band scenarios ``band_idx`` ``(P, w)`` (scenario numbers)."""
        plan, xp, ops = self.plan, self.xp, self.ops
        P, w = band_idx.shape
        scen = np.asarray(_to_host(band_idx)).ravel()
        port = np.repeat(np.arange(P), w)
        order = np.argsort(scen, kind="stable")
        scen, port = scen[order], port[order]
        acc_z = xp.zeros((P, self.n), dtype=xp.float64)
        acc_v = xp.zeros((P, self.opts["n"]), dtype=xp.float64) if self.opts is not None else None
        gather = ops.normals_at

        def draw(run):  # the band rows of one run of blocks, or of scenarios (in a worker on the CPU)
            lo, hi = run[-2:]
            if gather is not None:  # exactly the band's scenarios
                z, g = gather(plan.seed, xp.asarray(scen[lo:hi]), self.n, plan.dtype, plan.dof)
                local = slice(None)
            else:
                first, rows = run[:2]
                z, g = ops.normals(plan.seed, first, rows, self.n, plan.dtype, plan.dof)
                local = xp.asarray(scen[lo:hi] - first)
            zs = z[local].astype(xp.float64)
            if g is not None:
                zs *= g[local].astype(xp.float64)[:, None]
            dv = None
            if acc_v is not None:
                dv = ops.option_pnl(self.bt_under @ zs.T, self.opts, np.dtype(np.float64)).T
            return xp.asarray(port[lo:hi]), zs, dv

        if gather is not None:
            runs = [(lo, min(lo + plan.chunk, len(scen))) for lo in range(0, len(scen), plan.chunk)]
        else:
            runs = list(_runs(scen, ops.BLOCK, plan.chunk, plan.n_scenarios))
        for who, zs, dv in ops.map_chunks(draw, runs):
            acc_z = ops.scatter_add(acc_z, who, zs)
            if dv is not None:
                acc_v = ops.scatter_add(acc_v, who, dv)
        mean_r = self.h_mu[None, :] + math.sqrt(plan.horizon) * ((acc_z / w) @ self.L_t)
        lin = -self.W * mean_r
        total = lin.sum(axis=1)
        opt = None
        if acc_v is not None:
            opt = -self.quantity64 * (acc_v / w)
            total = total + opt.sum(axis=1)
        scale = xp.where(total != 0, var / xp.where(total != 0, total, 1.0), 1.0)[:, None]
        return lin * scale, (opt * scale if opt is not None else None)


def _device_options(xp, opts: OptionArrays, drift_u: np.ndarray) -> dict[str, Any]:
    d = {f: xp.asarray(getattr(opts, f)) for f in ("under", "spot", "strike", "tau", "rate", "vol", "is_call", "value0")}
    d["drift"] = xp.asarray(drift_u)
    d["n"] = int(opts.strike.shape[0])
    return d


def _runs(scen: np.ndarray, block: int, chunk: int, n_scenarios: int):
    """Group sorted scenario numbers into runs of consecutive needed blocks (at most
    ``chunk`` scenarios each); yields ``(first, rows, lo, hi)`` with ``scen[lo:hi]`` inside."""
    blocks = scen // block
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    ub = blocks[starts]
    per_run = max(1, chunk // block)
    i = 0
    while i < len(ub):
        j = i
        while j + 1 < len(ub) and ub[j + 1] == ub[j] + 1 and ub[j + 1] - ub[i] < per_run:
            j += 1
        first = int(ub[i]) * block
        rows = min(int(ub[j] + 1) * block, n_scenarios) - first
        lo = int(starts[i])
        hi = int(starts[j + 1]) if j + 1 < len(ub) else len(scen)
        yield first, rows, lo, hi
        i = j + 1


def _to_host(a):
    get = getattr(a, "get", None)
    return get() if get is not None and not isinstance(a, np.ndarray) else a
