"""Streaming indicators: one bar at a time, for every symbol at once.

:class:`FeatureStream` keeps O(1)-per-bar state (running sums, Wilder/EMA state,
ring buffers one window long; STOCH rescans its window when the extreme leaves
it, as TA-Lib does) for every indicator of a feature spec, and advances all
symbols by one bar per :meth:`FeatureStream.update` call.

Exactness contract
------------------
The outputs are the batch functions' last values, bit for bit: after the bars
``H[..., :t+1]`` have been fed (by :meth:`~FeatureStream.warmup` and/or
:meth:`~FeatureStream.update`, in any split), the values returned for bar ``t``
equal ``features(H[..., :t+1], spec)[key][..., -1]`` (``np.array_equal`` with
``equal_nan=True``), computed in float64. Each update kernel
(:mod:`gpu_trader.cpu_fallback.streaming`, the CPU backend's area ``streaming``) replays the
float64 operations of :mod:`gpu_trader._internal.indicator_loops` in the same order: it calls
the same one-step primitives as the batch row bodies (``indicator_loops.ema_step``,
``indicator_loops.rsi_step``, ``indicator_loops.bbands_step``, ...) and keeps only the per-bar state and ring
buffers itself (``tests/test_streaming.py`` compares every bar with the batch).

Consequences worth knowing:

* Leading NaNs are per symbol *and per indicator*, as in the batch: an indicator
  starts at the symbol's first bar where all of *its own* inputs are non-NaN
  (close for SMA/EMA/WMA/RSI/MACD/Bollinger; high, low, close for ATR/STOCH;
  close, volume for OBV; all four for VWAP). An interior NaN after that start
  propagates exactly as in the batch (it poisons running sums).
* Because the batch is causal once a series has started, this also means the
  value for bar ``t`` equals ``features(H)[key][..., t]`` for any longer history
  ``H``, with one documented exception inherited from TA-Lib's ``check_begidx``:
  on a bar before the indicator's first all-valid bar the stream returns what the
  batch returns for a history that has *no* valid bar yet, which is NaN except for
  OBV (the bar's volume, when only the close is missing) and STOCH(1, 1, 1)
  (0 when high == low and only the close is missing). With NaN in every field
  before a listing date (the usual case) both readings agree.
* dtype: state and outputs are float64 whatever the input dtype (float32,
  integers and bools are converted exactly on the way in). The outputs equal the
  batch run on the input cast to float64 exactly; against the batch's float32
  outputs they agree to float32 precision only (the batch rounds its results, and
  some of its intermediates, to float32).

Rows
----
``update`` takes one bar for all symbols, either

* a close-only array of shape ``(n_symbols,)`` (a scalar when ``n_symbols == 1``),
  allowed only when every indicator of the spec reads close alone, or
* an OHLCV row: a mapping with ``high``, ``low``, ``close``, ``volume`` (keys
  case-insensitive; the fields the spec does not read may be left out), each of
  shape ``(n_symbols,)``, or an array of shape ``(5, n_symbols)`` in OHLCV order
  (``(5,)`` when ``n_symbols == 1``). ``open`` is accepted and ignored.

It returns ``{key: float64 array (n_symbols,)}`` with the keys of
:func:`gpu_trader.indicators.feature_keys` (a fresh dict of fresh arrays each
call; the caller may keep or modify them). ``update(row, out=out)`` writes the same
values into ``out`` instead, a writeable native float64 ``numpy.ndarray`` of shape
``(len(keys), n_symbols)`` (row ``k`` holds ``keys[k]``; any strides), and returns
``out``: nothing is allocated per bar. The cheapest rows are float64 ``numpy.ndarray``
ones, read in place: a ``(5, n_symbols)`` array, or a mapping whose fields are
``(n_symbols,)`` arrays (one symbol's ``(5,)`` row is copied into a 4-value buffer);
others are converted first.

Inputs (rows and histories) may be read-only, of any real dtype or byte order, and
are never written; masked arrays and non-real dtypes are a ``TypeError`` (as
everywhere, see :mod:`gpu_trader.backend`). A mapping's keys match
case-insensitively (a vendor's ``Open/High/Low/Close/Volume`` DataFrame columns
work; ``Adj Close`` and other keys are ignored). ``n_symbols`` times the spec's
per-symbol state may hold at most :data:`gpu_trader._internal.validation.MAX_ELEMENTS` values.

numba is imported (and the kernels compiled, or loaded from the on-disk cache)
when the first stream is constructed, never at ``import gpu_trader``: the kernels are
reached through ``get_backend("cpu").ops("streaming")``, which imports their module on
first use.
"""
from __future__ import annotations

import operator
from typing import Any, Mapping

import numpy as np

from .backend import check_same_labels, get_backend, host_input
from ._internal.indicator_params import check_params_by_name
from ._internal.stream_input import host_rows
from ._internal.indicator_specs import BBANDS, INPUT_FIELDS, MACD, SPECS
from .indicators import feature_keys, field_keys, is_mapping, normalize_spec
from .profiling import annotate_methods
from ._internal.validation import check_allocation, check_count, check_out_array

__all__ = ["FeatureStream"]

_FIELDS = ("high", "low", "close", "volume")  # rows of the (4, n_symbols) input buffer
_F8 = np.dtype(np.float64)
_NDARRAY = np.ndarray
# warmup converts the history to float64 in chunks of at most this many values
_WARMUP_CHUNK_ELEMENTS = 1 << 20


@annotate_methods
class FeatureStream:
    """Incremental feature pipeline: the :func:`gpu_trader.features` spec, one bar at a time.

    ``FeatureStream(n_symbols, spec=None)``: ``spec`` has the format of
    :func:`gpu_trader.features` (default :data:`gpu_trader.indicators.DEFAULT_FEATURES`)
    with one value per parameter (parameter grids are batch-only).

    * :meth:`update` ``(row) -> {key: (n_symbols,) float64}`` advances every symbol by
      one bar (see the module docstring for the row formats); ``update(row, out=out)``
      writes the values into a ``(len(keys), n_symbols)`` float64 array instead;
    * :meth:`warmup` ``(history)`` feeds many bars at once, leaving the state exactly
      as if each had been passed to :meth:`update`;
    * :meth:`reset` forgets every bar seen.

    Values equal the batch functions' last values exactly (see the module docstring).
    Each update costs O(number of indicators) per symbol (a window rescan for STOCH's
    extremes and periodic re-anchoring for WMA/Bollinger, amortized O(1)).
    """

    def __init__(self, n_symbols: int, spec: Mapping[str, Any] | None = None) -> None:
        n = check_count(n_symbols, "n_symbols", 1)
        spec = normalize_spec(spec)
        self.n_symbols = n
        self.spec = spec
        self.keys: tuple[str, ...] = tuple(feature_keys(spec))
        ops = get_backend("cpu").ops("streaming")  # fetched once: update runs per bar

        rows, fparams = [], []
        needed: set[str] = set()
        f_size, i_size, out_row = 0, ops.N_GROUPS, 0
        for key, (fn_name, params) in spec.items():
            values = check_params_by_name(fn_name, params)
            for pname, (vals, is_grid) in zip(SPECS[fn_name][3], values):
                if is_grid:
                    raise ValueError(
                        f"spec[{key!r}]: parameter {pname!r} of {fn_name} is a sequence {list(vals)}; "
                        "FeatureStream takes one value per parameter (parameter grids are batch-only)"
                    )
            scalars = [v[0][0] for v in values]
            code, _, n_out, pnames = SPECS[fn_name]
            ints = [int(v) for v, pn in zip(scalars, pnames) if pn != "nstd"] + [0, 0, 0]
            a, b, c = ints[:3]
            if code == MACD and b < a:  # macd_row swaps them
                a, b = b, a
            nf, ni = ops.state_size(code, a, b, c)
            inputs = INPUT_FIELDS[fn_name]
            needed.update(inputs)
            rows.append([code, ops.INPUT_GROUPS[inputs], a, b, c, f_size, i_size, out_row, n_out])
            fparams.append(float(scalars[1]) if code == BBANDS else 0.0)
            f_size += nf
            i_size += ni
            out_row += n_out
        check_allocation(n * (f_size + i_size + out_row), f"FeatureStream(n_symbols={n})'s state")
        self._prog = np.array(rows, dtype=np.int64).reshape(-1, ops.PROGRAM_WIDTH)
        self._fprog = np.array(fparams, dtype=np.float64)
        self._f_size, self._i_size = f_size, i_size
        self._needed = tuple(i for i, name in enumerate(_FIELDS) if name in needed)
        self._needed_fields = tuple((i, _FIELDS[i]) for i in self._needed)
        self._get_ohlcv = operator.itemgetter(*_FIELDS) if len(self._needed) == 4 else None
        self._close_only = needed == {"close"}
        self._out = np.empty((out_row, n), dtype=np.float64)
        self._out_shape = self._out.shape
        self._row = np.empty((4, n), dtype=np.float64)
        self._rows = tuple(self._row)  # its rows, as update_kernel reads them
        self._shape1 = (n,)
        self._shape5 = (5, n)
        self._shape_bar = (5,) if n == 1 else None  # one symbol's OHLCV row
        self._bar = self._row[:, 0] if n == 1 else None  # the row buffer as one symbol's (4,) bar
        self._n_groups = ops.N_GROUPS
        self._update_kernel, self._warmup_kernel = ops.update_kernel, ops.warmup_kernel
        self.reset()

    # -- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every bar seen: the next bar is the first of every symbol's history."""
        self._fs = np.zeros((self.n_symbols, max(self._f_size, 1)), dtype=np.float64)
        self._is = np.zeros((self.n_symbols, self._i_size), dtype=np.int64)
        self._is[:, : self._n_groups] = -1
        self._out.fill(np.nan)
        self._row.fill(np.nan)
        self.n_bars = 0

    def values(self) -> dict[str, np.ndarray]:
        """The values of the latest bar (all NaN before the first), as fresh arrays."""
        return dict(zip(self.keys, self._out.copy()))

    @property
    def needs_ohlcv(self) -> bool:
        """True when some indicator reads more than the close (so rows must be OHLCV)."""
        return not self._close_only

    def __repr__(self) -> str:
        return f"FeatureStream(n_symbols={self.n_symbols}, keys={list(self.keys)}, n_bars={self.n_bars})"

    # -- one bar ----------------------------------------------------------------------
    def update(self, row, out=None):
        """Advance every symbol by one bar; returns ``{key: float64 array (n_symbols,)}``, or
        ``out`` when given: a writeable float64 ``numpy.ndarray`` of shape
        ``(len(keys), n_symbols)`` into which the values are written instead (row ``k`` holds
        ``keys[k]``), so that nothing is allocated per bar. A refused ``row`` or ``out``
        (``TypeError``/``ValueError`` naming it) leaves the stream unchanged."""
        if type(row) is _NDARRAY and row.dtype is _F8:  # the plain cases first
            shape = row.shape
            if shape == self._shape5:
                rows = row[1], row[2], row[3], row[4]  # read in place, whatever the strides
            elif shape == self._shape_bar:
                self._bar[...] = row[1:]
                rows = self._rows
            else:
                rows = self._array_rows(row)
        elif type(row) is dict or (type(row) is not _NDARRAY and is_mapping(row)):
            rows = self._mapping_rows(row)
        else:
            rows = self._array_rows(row)
        if out is not None and (type(out) is not _NDARRAY or out.dtype is not _F8 or out.shape != self._out_shape
                                or not out.flags.writeable):
            self._check_out(out)
        self._update_kernel(rows[0], rows[1], rows[2], rows[3], self._prog, self._fprog, self._fs, self._is,
                            self._out)
        self.n_bars += 1
        if out is None:
            return dict(zip(self.keys, self._out.copy()))
        out[...] = self._out
        return out

    def _array_rows(self, row) -> tuple[np.ndarray, ...]:
        """The bar's high, low, close and volume rows from an array row of any real dtype (see
        the module docstring for the shapes), converted into the row buffer: its rows."""
        if type(row) is not _NDARRAY or row.dtype.kind not in "fiub":
            row = host_input(row, "row")
        buf = self._row
        shape = row.shape
        if shape == self._shape5:
            buf[...] = row[1:]
        elif shape == self._shape1 or (self.n_symbols == 1 and shape == ()):
            if not self._close_only:
                raise ValueError(self._close_only_error("row", "(5, n_symbols)"))
            buf[2] = row
        elif self.n_symbols == 1 and shape == (5,):
            buf[:, 0] = row[1:]
        else:
            raise ValueError(
                f"row must have shape ({self.n_symbols},) (close only) or (5, {self.n_symbols}) "
                f"(OHLCV), or be a mapping of ({self.n_symbols},) arrays; got shape {shape}"
            )
        return self._rows

    def _check_out(self, out) -> None:
        """``TypeError``/``ValueError`` naming ``out`` unless it can receive an update's values."""
        check_out_array(out, self._out_shape, "(len(keys), n_symbols)")

    def _close_only_error(self, arg: str, shape: str) -> str:
        others = sorted({fn for fn, _ in self.spec.values() if INPUT_FIELDS[fn] != ("close",)})
        return (
            f"{arg}: a close-only {arg} needs a spec of close-only indicators; {others} also read "
            f"high/low/volume, so pass an OHLCV {arg} (a mapping or a {shape} array)"
        )

    def _mapping_rows(self, row) -> tuple[np.ndarray, ...] | list[np.ndarray]:
        """The bar's high, low, close and volume rows from a mapping: a field that is already a
        ``(n_symbols,)`` float64 ``numpy.ndarray`` as it is (the kernel only reads it, whatever
        its strides), any other converted into the row buffer; the fields the spec does not
        read keep whatever the buffer holds (NaN until an array row fills them; the kernel does
        not read them)."""
        if self._get_ohlcv is not None:  # a spec reading all four fields: one look-up, one check
            try:
                h, lo, c, v = self._get_ohlcv(row)
            except (KeyError, IndexError, TypeError):
                pass
            else:
                if (type(h) is type(lo) is type(c) is type(v) is _NDARRAY
                        and h.dtype is lo.dtype is c.dtype is v.dtype is _F8
                        and h.shape == lo.shape == c.shape == v.shape == self._shape1):
                    return h, lo, c, v
        rows = list(self._rows)
        shape1 = self._shape1
        for i, name in self._needed_fields:
            try:
                value = row[name]
            except (KeyError, IndexError, TypeError):
                value = self._lookup_ci(row, name)
            if type(value) is _NDARRAY and value.dtype is _F8 and value.shape == shape1:
                rows[i] = value
            else:
                self._row[i] = self._field_row(value, name)
        return rows

    def _field_row(self, value, name: str) -> np.ndarray:
        """A mapping row's field ``name`` as a real array of shape ``(n_symbols,)`` (or ``()`` for
        one symbol); ``TypeError``/``ValueError`` naming ``row[name]`` otherwise."""
        arr = value if type(value) is _NDARRAY and value.dtype.kind in "fiub" else host_input(value, f"row[{name!r}]")
        if arr.shape != self._shape1 and not (self.n_symbols == 1 and arr.shape == ()):
            raise ValueError(f"row[{name!r}] must have shape ({self.n_symbols},), got {arr.shape}")
        return arr

    def _lookup_ci(self, row, name: str):
        """``row``'s field ``name`` under any case (``Close``); ``ValueError`` listing the fields needed."""
        needed = tuple(_FIELDS[i] for i in self._needed)
        return row[field_keys(row, needed, "row")[name]]

    # -- many bars ---------------------------------------------------------------------
    def warmup(self, history) -> dict[str, np.ndarray]:
        """Feed a history of bars, as if each had been passed to :meth:`update` in order.

        history: the format of :func:`gpu_trader.features`: a mapping with ``high``,
        ``low``, ``close``, ``volume`` arrays of shape ``(n_symbols, T)`` (``(T,)`` when
        ``n_symbols == 1``; pandas DataFrames with time along the index and one column
        per symbol are accepted), or an array of shape ``(5, n_symbols, T)`` in OHLCV
        order; or, for a close-only spec, a close array of shape ``(n_symbols, T)``.
        ``T`` may be 0. The stream continues from its current state (call :meth:`reset`
        first to start over). Returns the values of the last bar (as :meth:`values`).
        """
        fields, T = self._history_fields(history)
        n = self.n_symbols
        chunk = max(1, min(T, _WARMUP_CHUNK_ELEMENTS // (4 * n)))
        hist = np.full((chunk, 4, n), np.nan, dtype=np.float64)  # fields not read stay NaN
        for a in range(0, T, chunk):
            b = min(T, a + chunk)
            part = hist[: b - a]
            for i, arr in fields.items():
                part[:, i, :] = arr[:, a:b].T
            self._warmup_kernel(part, self._prog, self._fprog, self._fs, self._is, self._out)
            self.n_bars += b - a
        return self.values()

    def _history_fields(self, history) -> tuple[dict[int, np.ndarray], int]:
        """-> ({row of the input buffer: (n_symbols, T) array}, T), validated."""
        n = self.n_symbols
        fields: dict[int, np.ndarray] = {}
        if is_mapping(history):
            keys = field_keys(history, tuple(_FIELDS[i] for i in self._needed), "history")
            check_same_labels(tuple(history[keys[_FIELDS[i]]] for i in self._needed),
                              tuple(f"history[{_FIELDS[i]!r}]" for i in self._needed))
            for i in self._needed:
                name = _FIELDS[i]
                fields[i] = self._history_field(history[keys[name]], f"history[{name!r}]")
        else:
            arr = host_rows(history, "history")
            if arr.ndim == 3 and arr.shape[:2] == (5, n):
                fields = {i: arr[i + 1] for i in range(4)}
            elif n == 1 and arr.ndim == 2 and arr.shape[0] == 5:
                fields = {i: arr[i + 1][None] for i in range(4)}
            elif (arr.ndim == 2 and arr.shape[0] == n) or (n == 1 and arr.ndim == 1):
                if not self._close_only:
                    raise ValueError(self._close_only_error("history", "(5, n_symbols, T)"))
                fields = {2: arr.reshape(n, -1)}
            else:
                raise ValueError(
                    f"history must be a mapping of (n_symbols={n}, T) arrays or an array of shape "
                    f"(5, {n}, T) in OHLCV order (or ({n}, T) close only); got shape {arr.shape}"
                )
        lengths = {a.shape[-1] for a in fields.values()}
        if len(lengths) != 1:
            found = {f"history[{_FIELDS[i]!r}]": a.shape[-1] for i, a in fields.items()}
            raise ValueError(f"history fields differ in length (T): {found}")
        return fields, lengths.pop()

    def _history_field(self, value, name: str) -> np.ndarray:
        n = self.n_symbols
        arr = host_rows(value, name)
        if arr.ndim == 1 and n == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"{name} must have shape (n_symbols={n}, T), got {arr.shape}")
        return arr
