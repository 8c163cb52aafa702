"""What a backend's module for each public area provides: one ``typing.Protocol`` per area.

A backend (:class:`gpu_trader.backend.Backend`) keeps one module per public *area* in its
``ops_package`` (``gpu_trader.cpu_fallback``, ``gpu_trader.kernels``,
``gpu_trader.jax_backend``); ``be.ops(area)`` imports and returns it. The protocols below
list every module-level name that the public modules and the drivers
(:func:`gpu_trader._internal.montecarlo_xp.run`, :class:`gpu_trader._internal.series_input.SeriesInput`)
read from such a module: functions (written as methods; a module function has the same
parameters less ``self``), constants and objects. :data:`AREA_PROTOCOLS` maps each area to
its protocol; which backend implements which area is ``Backend.areas``.

Conventions:

* ``Array`` is the backend's array type: ``numpy.ndarray`` on ``cpu``, ``cupy.ndarray`` on
  ``cuda``, ``jax.Array`` on ``jax``. "Host" means a NumPy array whatever the backend.
* Shapes are written ``(n_series, T)`` and so on, time last. The public modules validate
  every input before it gets here (shapes, dtypes, finiteness where required), so nothing
  here validates again.
* A module function takes the protocol's positional parameters, with the same names in
  the same order (keep the defaults the protocol has); it may add keyword-only parameters
  that have defaults (``kernels.indicators.compute``'s ``path=`` and ``chunk=``). A name may
  also be bound by an assignment (a ``functools.partial``, a compiled dispatcher) or
  served by a module ``__getattr__`` (``kernels.montecarlo.xp``, CuPy imported on first use).

``tests/test_backend_contracts.py`` checks every backend's modules against these
protocols by reading their source (so the CUDA modules are checked on machines without a
GPU) and, for the backends importable there, with ``isinstance`` (the protocols are
``runtime_checkable``: that checks the names, not the signatures).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from .montecarlo_xp import Plan

__all__ = [
    "Array",
    "AREA_PROTOCOLS",
    "IndicatorsOps",
    "RiskOps",
    "RiskMetricsOps",
    "CorrelationOps",
    "CorrelationEstimatorsOps",
    "MontecarloOps",
    "VectorsOps",
    "MarketdataOps",
    "PortfolioOps",
    "StrategiesOps",
    "StreamingOps",
    "RiskStreamOps",
    "SizingOps",
]

Array = Any
"""An array of the backend's type (NumPy, CuPy or JAX); see the module docstring."""


@runtime_checkable
class IndicatorsOps(Protocol):
    """``indicators``: batched technical indicators (cpu, cuda, jax)."""

    def compute(self, name: str, inputs: Sequence[Array], params: np.ndarray, n_out: int) -> Array:
        """Indicator ``name`` (a key of :data:`gpu_trader._internal.indicator_specs.SPECS`) over
        a batch. ``inputs``: 1-4 C-contiguous ``(n_series, T)`` arrays of one float dtype
        (float32 or float64), in the indicator's argument order
        (:data:`~gpu_trader._internal.indicator_specs.INPUT_FIELDS`); ``params``: host float64
        ``(P, k)``, one row per parameter set; ``n_out``: the indicator's number of outputs.
        Returns ``(n_out, P, n_series, T)`` in the inputs' dtype (accumulation in float64),
        NaN where the indicator has no value (before its lookback; NaN inputs as
        :mod:`gpu_trader.indicators` documents)."""
        ...

    def compute_many(self, names: Sequence[str], params_list: Sequence[np.ndarray],
                     fields: Mapping[str, Array]) -> list[Array]:
        """Several indicators over the same inputs: ``params_list`` holds one host float64
        ``(P_i, k_i)`` array per name; ``fields`` maps OHLCV field names (``"high"``,
        ``"low"``, ``"close"``, ``"volume"``) to C-contiguous ``(n_series, T)`` arrays of one
        float dtype, at least those the named indicators read. Returns one
        ``(n_out_i, P_i, n_series, T)`` array per name, as :meth:`compute` would."""
        ...


@runtime_checkable
class RiskMetricsOps(Protocol):
    """The object ``be.ops("risk").metrics``: risk metrics reducing the time axis.

    ``r``: float64 ``(..., T)``; NaNs are skipped per series, and a series with too few
    valid values for a metric gives NaN. ``q``: a tuple of tail probabilities
    (``1 - level``), which adds a leading ``(len(q),)`` axis. Results are float64 on the
    backend; signs as :mod:`gpu_trader.risk` documents (losses positive)."""

    @property
    def xp(self) -> Any:
        """The array module the metrics compute with (numpy, cupy, jax.numpy)."""
        ...

    def has_nan(self, r: Array) -> bool:
        """Whether ``r`` holds a NaN, read on the host (True inside a ``jax.jit`` trace): the
        screen before the public layer counts valid observations."""
        ...

    def var_historical(self, r: Array, q: tuple[float, ...]) -> Array:
        """Minus the ``q`` quantiles (linear interpolation): ``(len(q), ...)``."""
        ...

    def cvar(self, r: Array, q: tuple[float, ...]) -> Array:
        """Minus the mean of the ``floor((n - 1) q) + 1`` smallest values: ``(len(q), ...)``."""
        ...

    def var_parametric(self, r: Array, q: tuple[float, ...], cornish_fisher: bool) -> Array:
        """``-(mean + z std)`` with normal (or Cornish-Fisher) ``z``: ``(len(q), ...)``."""
        ...

    def max_drawdown(self, r: Array) -> Array:
        """Largest fall of the compounded wealth from its running peak, in ``[0, 1]``: ``(...)``."""
        ...

    def sharpe(self, r: Array, periods_per_year: float, risk_free: float) -> Array:
        """Annualized mean excess return over its standard deviation: ``(...)``."""
        ...

    def sortino(self, r: Array, periods_per_year: float, required_return: float) -> Array:
        """Annualized mean excess return over the downside deviation: ``(...)``."""
        ...

    def calmar(self, r: Array, periods_per_year: float) -> Array:
        """Compound annual growth over the maximum drawdown (NaN without a drawdown): ``(...)``."""
        ...

    def kelly_fraction(self, r: Array) -> Array:
        """``p - (1 - p) / b`` from the win rate and the win/loss ratio: ``(...)``."""
        ...

    def risk_report(self, r: Array, q: float, periods_per_year: float, risk_free: float) -> dict[str, Array]:
        """Every metric at one tail probability ``q``: ``n`` (int64), ``mean``, ``volatility``,
        ``var_historical``, ``var_parametric``, ``var_cornish_fisher``, ``cvar``,
        ``max_drawdown``, ``sharpe``, ``sortino``, ``calmar``, ``kelly_fraction``, each ``(...)``."""
        ...


@runtime_checkable
class RiskOps(Protocol):
    """``risk`` (cpu, cuda, jax)."""

    @property
    def metrics(self) -> RiskMetricsOps:
        """The metrics object (an instance of :class:`gpu_trader._internal.risk_xp.RiskMetrics`
        over the backend's array module, or the CPU backend's compiled twin)."""
        ...


@runtime_checkable
class CorrelationEstimatorsOps(Protocol):
    """The object ``be.ops("correlation").estimators``: covariance and correlation matrices.

    ``x``: float64 ``(..., n, T)``, n series, time last; NaNs are handled pairwise-complete
    (a pair uses the periods where both are valid); entries with fewer than ``min_periods``
    common periods are NaN. Matrices are float64 ``(..., n, n)`` on the backend."""

    @property
    def xp(self) -> Any:
        """The array module the estimators compute with (numpy, cupy, jax.numpy)."""
        ...

    def has_nan(self, x: Array) -> bool:
        """Whether ``x`` holds a NaN, read on the host (True inside a ``jax.jit`` trace)."""
        ...

    def cov(self, x: Array, min_periods: int, ddof: int, has_nan: bool | None = None) -> Array:
        """Sample covariance with ``ddof``: ``(..., n, n)``. ``has_nan``: :meth:`has_nan` of ``x``
        when the caller has it (None: looked up)."""
        ...

    def corr(self, x: Array, min_periods: int, has_nan: bool | None = None) -> Array:
        """Pearson correlation (NaN for a series constant over the common periods): ``(..., n, n)``;
        ``has_nan`` as for :meth:`cov`."""
        ...

    def rolling_corr(self, x: Array, window: int, min_periods: int) -> Array:
        """Correlation over a trailing ``window`` at every period: ``(..., n, n, T)``."""
        ...

    def ewma_cov(self, x: Array, decay: float) -> Array:
        """Zero-mean exponentially weighted covariance at the last period, weights
        ``decay ** (T - 1 - t)``: ``(..., n, n)``."""
        ...

    def ledoit_wolf(self, x: Array) -> tuple[Array, Array]:
        """Ledoit-Wolf shrunk covariance ``(..., n, n)`` and the shrinkage ``(...)``."""
        ...


@runtime_checkable
class CorrelationOps(Protocol):
    """``correlation`` (cpu, cuda, jax)."""

    @property
    def estimators(self) -> CorrelationEstimatorsOps:
        """The estimators object (an instance of
        :class:`gpu_trader._internal.correlation_xp.CorrelationEstimators` over the backend's
        array module)."""
        ...


@runtime_checkable
class MontecarloOps(Protocol):
    """``montecarlo``: the primitives :func:`gpu_trader._internal.montecarlo_xp.run` drives
    (cpu, cuda, jax); its module docstring states the algorithm they serve."""

    @property
    def xp(self) -> Any:
        """The array module the driver computes with (numpy, cupy, jax.numpy)."""
        ...

    BLOCK: int
    """Scenarios per random-number block; block ``b`` is drawn from its own stream keyed by
    ``(seed, b)``, so the numbers do not depend on the chunking. Chunks are multiples of it."""
    CHUNKS_IN_FLIGHT: int
    """How many chunks' arrays can be alive at once (sizes the working-memory estimate)."""
    MERGE_SCRATCH: bool
    """Whether :meth:`tail_update` builds ``(P, m + rows)`` scratch arrays (a partition merge)
    rather than updating the tail in place (sizes the working-memory estimate)."""
    FUSED_MAX_ROWS: int
    """Up to this many GEMM rows ``P + U`` :meth:`project` draws the normals inside its kernel, so a
    chunk holds no ``(rows, n)`` normals (sizes the chunk and the working-memory estimate); 0 where
    the backend always draws the normals and multiplies (cpu, jax)."""
    CHUNK_BYTES: int | None
    """The memory budget of one chunk's arrays from which the default chunk is sized; None: about
    ``montecarlo_xp.CHUNK_ELEMENTS`` normals a chunk (cpu, jax)."""
    normals_at: Callable[..., tuple[Array, Array | None]] | None
    """``normals_at(seed, scenarios, n, dtype, dof) -> (z, g)``: the normals ``(len(scenarios), n)``
    and t factors of the given int64 scenario numbers (on the device), for the re-draw of the
    contribution band scenario by scenario (cuda: exactly the ``P (2 b + 1)`` band rows); None where
    the streams are per block (cpu, jax): the driver then re-draws the blocks that hold them."""

    def run(self, plan: Plan) -> dict[str, Any]:
        """Execute a validated plan: ``var``, ``cvar``, ``se``, ``ci_low``, ``ci_high`` as float64
        ``(P,)`` arrays, and ``contributions`` ``(P, n)`` and ``option_contributions``
        ``(P, n_options)`` (None when not asked for, or without options)."""
        ...

    def map_chunks(self, fn: Callable[[Any], Any], firsts: Iterable[Any]) -> Iterator[Any]:
        """``fn(first)`` for every item of ``firsts`` (chunk starts, runs of blocks), yielded in
        order (the CPU computes several at once on worker threads)."""
        ...

    def normals(self, seed: int, first: int, rows: int, n: int, dtype: Any,
                dof: float | None) -> tuple[Array, Array | None]:
        """Standard normals ``(rows, n)`` of ``dtype`` for scenarios ``first .. first + rows - 1``
        (``first`` a multiple of :attr:`BLOCK`) and, for Student-t (``dof`` not None), the
        mixing factors ``sqrt((dof - 2) / chi2_dof)`` ``(rows,)`` (else None)."""
        ...

    def project(self, seed: int, first: int, rows: int, bt: Array, dtype: Any, dof: float | None) -> Array:
        """``bt @ z.T`` ``(len(bt), rows)`` times the Student-t factors ``g`` (``dof`` not None) for the
        normals ``z`` of scenarios ``first ..`` (as :meth:`normals` draws them): by one kernel that
        draws them in registers where ``len(bt) <= FUSED_MAX_ROWS``, else
        :func:`gpu_trader._internal.montecarlo_xp.gemm_projection` (normals, then one GEMM)."""
        ...

    def option_pnl(self, returns: Array, o: dict[str, Any], dtype: Any) -> Array:
        """Black-Scholes value changes ``(n_options, rows)`` of ``dtype`` for the underlyings'
        returns ``(U, rows)`` (the drift is added inside); ``o``: the plan's options on the
        device (``under``, ``spot``, ``strike``, ``tau``, ``rate``, ``vol``, ``is_call``,
        ``value0``, ``drift`` arrays and ``n``)."""
        ...

    def tail_update(self, vals: Array, idx: Array, loss: Array, first: int) -> tuple[Array, Array]:
        """Keep, per portfolio, the ``m`` largest of ``vals`` ``(P, m)`` and ``loss`` ``(P, rows)``
        (scenarios ``first ..``) with their int64 scenario numbers ``idx`` ``(P, m)``; returns
        the new ``(vals, idx)`` (updated in place where the backend can)."""
        ...

    def scatter_add(self, acc: Array, rows: Array, values: Array) -> Array:
        """``acc[rows[i]] += values[i]``, repeats accumulating; returns ``acc`` (a new array on
        JAX, whose arrays are immutable)."""
        ...


@runtime_checkable
class VectorsOps(Protocol):
    """``vectors``: exact k-NN, normalization and k-means (cpu, cuda).

    Stored vectors ``db`` are float32 ``(n, dim)``, or int8 codes with float32 ``scales``
    ``(n,)`` (row ``i`` stands for ``scales[i] * db[i]``); ``norms`` ``(n,)`` float32 are the
    squared norms of the stored rows; queries are float32 ``(nq, dim)``. No NaN reaches here."""

    def search(self, db: Array, scales: Array | None, norms: Array, queries: Array, k: int, l2: bool,
               rows: Array | None = None, l1: bool = False, codebooks: Array | None = None) -> tuple[Array, Array]:
        """The best ``k`` stored rows per query (``rows``: an int64 subset to search): internal
        scores float32 ``(nq, k)`` best first (``q . x``, ``2 q . x - |x|^2`` for ``l2``, minus
        the L1 distance for ``l1``) and row indices int64 ``(nq, k)``. ``db`` may also be binary or
        PQ codes (``codebooks``), see :mod:`gpu_trader._internal.vector_xp`."""
        ...

    def pairwise(self, a: Array, b: Array, metric: str) -> Array:
        """Distances ``(m, n)`` (``ip``: inner products) between the rows of ``a`` ``(m, dim)`` and
        ``b`` ``(n, dim)`` of one float dtype, in that dtype; ``metric`` one of
        :data:`gpu_trader._internal.vector_xp.PAIRWISE_METRICS`."""
        ...

    def normalize_vector(self, x: Array) -> Array:
        """``x`` ``(dim,)`` scaled to unit L2 norm (a zero vector stays zero), same dtype."""
        ...

    def normalize_rows(self, x: Array) -> tuple[Array, Array]:
        """Rows of ``x`` ``(n, dim)`` scaled to unit L2 norm (zero rows stay zero) and the norms ``(n,)``."""
        ...

    def cosine_pair(self, a: Array, b: Array) -> float:
        """Cosine similarity of two ``(dim,)`` vectors of one dtype; NaN if one is zero."""
        ...

    def cosine_rows(self, a: Array, b: Array) -> Array:
        """Cosine similarity of each row pair of ``a`` and ``b`` ``(n, dim)``: ``(n,)``; NaN for a zero row."""
        ...

    def quantize_int8(self, x: Array) -> tuple[Array, Array]:
        """Per-row symmetric int8 codes ``(n, dim)`` and float32 scales ``(n,)`` of ``x`` ``(n, dim)``."""
        ...

    def row_sq_norms(self, db: Array, scales: Array | None = None, codebooks: Array | None = None,
                     dim: int | None = None) -> Array:
        """Squared norms ``(n,)`` float32 of the stored (decoded) rows."""
        ...

    def encode_binary(self, x: Array) -> tuple[Array, Array]:
        """Packed sign bits uint8 ``(n, ceil(dim / 8))`` and float32 scales ``mean |x_i|`` ``(n,)``."""
        ...

    def pq_train(self, x: Array, n_sub: int, seed: int) -> Array:
        """PQ codebooks ``(n_sub, 256, dim / n_sub)`` float32 trained on ``x`` ``(n >= 256, dim)``."""
        ...

    def pq_encode(self, x: Array, codebooks: Array) -> Array:
        """PQ codes uint8 ``(n, n_sub)``: each sub-vector's nearest codebook entry."""
        ...

    def kmeans(self, x: Array, n_clusters: int, n_iter: int, seed: int, tol: float) -> tuple[Array, Array, float]:
        """Lloyd's k-means with k-means++ seeding on ``x`` ``(n, dim)``: centroids
        ``(n_clusters, dim)``, labels int64 ``(n,)`` and the inertia."""
        ...


@runtime_checkable
class MarketdataOps(Protocol):
    """``marketdata``: quote metrics and tick-to-bar aggregation (cpu, cuda)."""

    def quote_metrics(self, bid: Array, ask: Array, bid_size: Array | None, ask_size: Array | None,
                      ts: Array | None, now: int | None, max_age: int | None) -> tuple[Array, Array, Array, Array]:
        """Elementwise over quotes of one shape (sizes and int64 ns ``ts`` optional; staleness
        needs ``ts``, ``now`` and ``max_age``): ``(mid, spread, spread_bps, status)``, float64
        (NaN where ``status != 0``) and int8 codes
        (:data:`gpu_trader._internal.market_xp.QUOTE_OK` ...)."""
        ...

    def aggregate_bars(self, ts: Array, price: Array, size: Array, symbol: Array, timeframe: int, first_bar: int,
                       n_bars: int, n_symbols: int) -> tuple[Array, ...]:
        """OHLCV bars of ``n >= 1`` ticks (``ts`` int64 ns, ``price``/``size`` float64, ``symbol``
        integer ids in ``[0, n_symbols)``, all ``(n,)``, in any order): ``(open, high, low,
        close, volume, vwap, count)``, each ``(n_symbols, n_bars)`` for the bars
        ``[(first_bar + k) * timeframe, (first_bar + k + 1) * timeframe)``; float64 (NaN prices
        where ``count == 0``, NaN VWAP where ``volume == 0``) and int64 counts."""
        ...


@runtime_checkable
class PortfolioOps(Protocol):
    """``portfolio``: batch position accounting (cpu, cuda)."""

    def apply_fills(self, qty: Array, avg: Array, realized: Array, fill_qty: Array,
                    fill_price: Array) -> tuple[Array, Array, Array]:
        """Average-cost accounting of ``K`` fills per row applied in order: ``qty``, ``avg``,
        ``realized`` ``(R,)``, ``fill_qty``, ``fill_price`` ``(R, K)`` (a zero quantity is no
        fill). Returns new float64 ``(qty, avg, realized)``; the inputs are not modified."""
        ...

    def mark_to_market(self, qty: Array, avg: Array, prices: Array) -> tuple[Array, Array]:
        """``(market_value, unrealized)`` of ``qty``, ``avg`` ``(P, A)`` at ``prices`` ``(A,)`` or
        ``(A, T)``: each ``(P,)`` or ``(P, T)`` in the inputs' float dtype; NaN prices propagate."""
        ...


@runtime_checkable
class StrategiesOps(Protocol):
    """``strategies``: vectorized rule backtests (cpu, cuda)."""

    def backtest(self, close: Array, feats: Array, kinds: np.ndarray, a_idx: np.ndarray, b_idx: np.ndarray,
                 ks: np.ndarray, cost: float) -> tuple[Array, Array]:
        """Signals and P&L of ``P`` rules over ``n`` series: ``close`` C-contiguous ``(n, T)``
        float, ``feats`` C-contiguous ``(R, n, T)`` float (the rules' inputs); ``kinds``,
        ``a_idx``, ``b_idx`` int64 ``(P,)`` (rule code, rows of ``feats`` read as ``a`` and
        ``b``), ``ks`` float64 ``(P,)``, ``cost`` a fraction per unit of position change.
        Returns ``(signals int8 (P, n, T), pnl float64 (P, n))``."""
        ...

    SWEEP_FEATURE_COPIES: int
    """How many copies of ``feats`` are alive while :meth:`sweep` runs (1: read in place; 2: the
    kernel reads a transposed copy); sizes the sweep's memory plan
    (:mod:`gpu_trader._internal.sweep_plan`)."""

    def sweep(self, close: Array, feats: Array, kinds: np.ndarray, a_idx: np.ndarray, b_idx: np.ndarray,
              ks: np.ndarray, cost: float, sharpe_scale: float) -> Array:
        """:meth:`backtest` without the signals: arguments as there, ``sharpe_scale`` the Sharpe
        ratio's annualization factor. Returns float64 ``(N_STATS, P, n)``: per rule and series
        the P&L (equal to :meth:`backtest`'s), Sharpe ratio, maximum drawdown, turnover and hit
        rate of :func:`gpu_trader._internal.strategy_loops.sweep_row`, in that order."""
        ...


@runtime_checkable
class StreamingOps(Protocol):
    """``streaming``: the compiled kernels of :class:`gpu_trader.streaming.FeatureStream`
    (cpu only: a stream updates host state one bar at a time). All arguments are
    C-contiguous host arrays; nothing is allocated and nothing returned. ``prog``
    ``(n_indicators, PROGRAM_WIDTH)`` int64 and ``fprog`` ``(n_indicators,)`` float64 are the
    spec's compiled program; ``fs`` float64 and ``ist`` int64 ``(n_symbols, slots)`` the
    per-symbol state, updated in place; ``out`` ``(n_outputs, n_symbols)`` float64 receives
    the latest bar's values (NaN during each indicator's lookback). The layout is
    documented in :mod:`gpu_trader.cpu_fallback.streaming`."""

    PROGRAM_WIDTH: int
    """Columns of one ``prog`` row (code, input group, three parameters, state offsets, output row)."""
    N_GROUPS: int
    """Input groups (bars counted per group), the first ``N_GROUPS`` int slots of ``ist``."""
    INPUT_GROUPS: Mapping[tuple[str, ...], int]
    """An indicator's input fields -> its input group."""

    def state_size(self, code: int, a: int, b: int, c: int) -> tuple[int, int]:
        """Float and int state slots one symbol needs for indicator ``code`` with parameters ``a, b, c``."""
        ...

    def update_kernel(self, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
                      prog: np.ndarray, fprog: np.ndarray, fs: np.ndarray, ist: np.ndarray, out: np.ndarray) -> None:
        """Advance every symbol by one bar: ``high``, ``low``, ``close``, ``volume`` float64
        ``(n_symbols,)`` each, of any strides (the one exception to C-contiguous; NaN marks a
        missing value). The arguments are not checked."""
        ...

    def warmup_kernel(self, hist: np.ndarray, prog: np.ndarray, fprog: np.ndarray, fs: np.ndarray,
                      ist: np.ndarray, out: np.ndarray) -> None:
        """Advance every symbol by ``T`` bars: ``hist`` float64 ``(T, 4, n_symbols)``; ``out``
        then holds the last bar's values."""
        ...


@runtime_checkable
class SizingOps(Protocol):
    """``sizing``: position sizing, stop levels and book exposure (cpu, cuda). The sizing and
    exposure formulas are :mod:`gpu_trader._internal.sizing_xp` run on :attr:`xp`; the time
    recurrences are the row bodies of :mod:`gpu_trader._internal.stop_loops`. Arrays are
    C-contiguous float64 ``(R, T)`` (``R`` series, time last)."""

    @property
    def xp(self) -> Any:
        """The array module the sizing and exposure formulas compute with (numpy, cupy)."""
        ...

    def trailing_stop(self, price: Array, atr: Array | None, start: Array, fraction: float, multiple: float,
                      short: bool) -> Array:
        """Trailing stop levels ``(R, T)`` float64 of
        :func:`gpu_trader._internal.stop_loops.trailing_row`: the tightest of ``price * (1 -+
        fraction) -+ multiple * atr`` since the entry bar ``start`` ``(R,)`` int64 (NaN before
        it); ``atr`` None: no ATR term."""
        ...

    def rolling_extreme(self, x: Array, window: int, lowest: bool) -> Array:
        """Rolling maximum (minimum when ``lowest``) of ``x`` ``(R, T)`` over ``window`` bars,
        NaN for the first ``window - 1`` bars and for any window holding a NaN: ``(R, T)``."""
        ...


@runtime_checkable
class RiskStreamOps(Protocol):
    """``risk_stream``: the compiled kernels of :class:`gpu_trader.risk_stream.RiskStream` (cpu
    only: host state, one bar at a time). The state (``num``, ``den`` ``(n_assets, n_assets)``,
    ``g`` ``(G_SIZE,)``, ``book`` ``(n_books, BOOK_SIZE)``, ``ring``, ``srt`` ``(n_books, window)``),
    the weights in compressed rows (``wptr``, ``widx`` int64, ``wval``) and transposed (``wt``
    ``(n_assets, n_books)``), the levels ``lv``
    ``(2, n_levels)`` and ``out`` ``(5 + 4 n_levels, n_books)`` are C-contiguous host float64
    arrays (but the int64 ``wptr``, ``widx``) laid out as
    :mod:`gpu_trader._internal.risk_stream_loops` and :mod:`gpu_trader.cpu_fallback.risk_stream`
    document; the kernels update them in place, allocate nothing and check nothing."""

    G_SIZE: int
    """Length of ``g``; its slots ``G_DECAY``, ``G_COMMON``, ``G_RF``, ``G_SQRT_PPY`` are set by the caller."""
    G_DECAY: int
    G_COMMON: int
    G_RF: int
    G_SQRT_PPY: int
    BOOK_SIZE: int
    """Columns of ``book``; a fresh book has ``B_WEALTH`` and ``B_PEAK`` 1, ``B_RETURN`` NaN, the rest 0."""
    B_WEALTH: int
    B_PEAK: int
    B_RETURN: int

    def advance_kernel(self, hist: np.ndarray, num: np.ndarray, den: np.ndarray, g: np.ndarray, wptr: np.ndarray,
                       widx: np.ndarray, wval: np.ndarray, wt: np.ndarray, book: np.ndarray, ring: np.ndarray,
                       srt: np.ndarray, lv: np.ndarray, out: np.ndarray) -> None:
        """Feed the bars of ``hist`` (any ``(T, n_assets)`` float64 array, NaN: missing; ``x[None]``
        for one bar ``x``) to every book in order and write the last bar's metrics into ``out``."""
        ...

    def reweight_kernel(self, wptr: np.ndarray, widx: np.ndarray, wval: np.ndarray, num: np.ndarray,
                        den: np.ndarray, g: np.ndarray, book: np.ndarray, srt: np.ndarray, lv: np.ndarray,
                        out: np.ndarray) -> None:
        """Restart every book's EWMA variance for new weights and rewrite ``out``."""
        ...

    def cov_kernel(self, num: np.ndarray, den: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
        """The EWMA covariance matrix into ``out`` ``(n_assets, n_assets)``."""
        ...


AREA_PROTOCOLS: dict[str, type] = {
    "indicators": IndicatorsOps,
    "risk": RiskOps,
    "correlation": CorrelationOps,
    "montecarlo": MontecarloOps,
    "vectors": VectorsOps,
    "marketdata": MarketdataOps,
    "portfolio": PortfolioOps,
    "strategies": StrategiesOps,
    "streaming": StreamingOps,
    "risk_stream": RiskStreamOps,
    "sizing": SizingOps,
}
"""Area name -> the protocol its module satisfies (the keys are
:data:`gpu_trader.backend.AREAS`)."""
