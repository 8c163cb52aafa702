"""OHLCV panels from Parquet / Arrow files, and results back to Parquet (pyarrow, extra ``data``).

* :func:`read_ohlcv`: a long-format table, one row per (time, symbol) bar with columns
  ``time, symbol, open, high, low, close, volume`` (names configurable), from a Parquet file,
  an Arrow IPC file (Feather v2) or stream, a ``pyarrow.Table`` or any object exporting an
  Arrow stream (``__arrow_c_stream__``: a polars DataFrame), into the ``(5, n_symbols, T)``
  float64 panel the indicators read, with the sorted symbols and times;
* :func:`write_results`: ``(n_names, n_symbols, T)`` results (indicators, signals) back to
  Parquet, long (one row per (symbol, time)) or wide (one row per time).

pyarrow is imported on the first call, never by ``import gpu_trader``.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from ._internal.file_io import file_name, open_regular, regular_target, replace_atomically
from .profiling import annotate

__all__ = ["OHLCVPanel", "read_ohlcv", "write_results", "OHLCV_COLUMNS", "DEFAULT_MAX_BYTES"]

OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")
DEFAULT_MAX_BYTES = 4 * 2**30  # the largest float64 panel read_ohlcv allocates by default (4 GiB)
LAYOUTS = ("long", "wide")


class OHLCVPanel(NamedTuple):
    """What :func:`read_ohlcv` returns.

    values: float64 ``(5, n_symbols, T)`` in OHLCV order, NaN for a missing bar (or null field);
    symbols: ``(n_symbols,)`` NumPy array of the symbol column's values, sorted (``object``
    dtype of ``str`` for a string column); times: ``(T,)`` NumPy array of the distinct times,
    sorted (``datetime64`` for timestamp/date columns, else the column's numeric dtype)."""

    values: np.ndarray
    symbols: np.ndarray
    times: np.ndarray


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ImportError("gpu_trader.data_io needs pyarrow (pip install 'gpu-trader[data]')") from None
    return pyarrow


def _check_max_bytes(max_bytes: Any) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    return int(max_bytes)


def _check_panel_bytes(n_cells: int, max_bytes: int, what: str) -> None:
    need = 5 * 8 * n_cells
    if need > max_bytes:
        raise ValueError(f"{what} needs a {need / 2**20:.1f} MiB float64 panel, over max_bytes="
                         f"{max_bytes} ({max_bytes / 2**20:.1f} MiB); read fewer symbols or raise max_bytes")


def _read_file(pa: Any, path: Any, columns: list[str], max_bytes: int) -> Any:
    """The ``columns`` of a Parquet file or Arrow IPC file/stream as a Table. A Parquet file's
    row count is checked against ``max_bytes`` from its footer, before any column is read."""
    name = file_name(path)
    with open_regular(name, ValueError) as fh:
        head = fh.read(6)
        fh.seek(0)
        try:
            if head[:4] == b"PAR1":
                pf = pa.parquet.ParquetFile(fh)
                _check_columns(pf.schema_arrow.names, columns, name)
                _check_panel_bytes(pf.metadata.num_rows, max_bytes, f"{name} ({pf.metadata.num_rows} rows)")
                return pf.read(columns=columns)
            if head == b"ARROW1":
                table = pa.ipc.open_file(fh).read_all()
            else:
                table = pa.ipc.open_stream(fh).read_all()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise ValueError(f"{name}: not a readable Parquet or Arrow IPC file ({exc})") from None
    _check_columns(table.column_names, columns, name)
    return table.select(columns)


def _check_columns(present: Sequence[str], wanted: Sequence[str], where: str) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValueError(f"{where} has no column(s) {missing}; its columns are {list(present)}")


def _sorted_codes(pa: Any, column: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values as NumPy, each row's index into them) by hashing (Arrow
    dictionary encoding) and sorting only the distinct values. ``ValueError`` for nulls."""
    if column.null_count:
        raise ValueError(f"the {what} column has {column.null_count} null value(s)")
    column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string_view(column.type) or pa.types.is_binary_view(column.type):  # polars' strings
        column = column.cast(pa.large_string() if pa.types.is_string_view(column.type) else pa.large_binary())
    encoded = pa.compute.dictionary_encode(column)
    order = pa.compute.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    labels = encoded.dictionary.take(order).to_numpy(zero_copy_only=False)
    return labels, rank[encoded.indices.to_numpy()]


@annotate
def read_ohlcv(source: Any, *, symbol_col: str = "symbol", time_col: str = "time",
               columns: Sequence[str] = OHLCV_COLUMNS, max_bytes: int = DEFAULT_MAX_BYTES) -> OHLCVPanel:
    """A long-format OHLCV table as a ``(5, n_symbols, T)`` float64 panel (:class:`OHLCVPanel`).

    source: a path (``str``/``bytes``/``os.PathLike``) of a Parquet file or an Arrow IPC file
    (Feather v2) or stream, recognized by its first bytes; a ``pyarrow.Table``; or an object
    with ``__arrow_c_stream__`` (a polars DataFrame). One row per bar: ``time_col`` (timestamp,
    date or integer), ``symbol_col`` (string or integer) and the five ``columns`` in OHLCV order
    (any numeric type; nulls become NaN). Rows may come in any order: symbols and times are
    sorted; a (symbol, time) pair without a row is a missing bar, NaN in all five fields.

    Errors: ``ValueError`` for an unreadable or non-regular file, a missing column (listing
    those present), a null symbol or time, a non-numeric OHLCV column, a duplicate (symbol,
    time) row (naming the first), or a panel over ``max_bytes`` bytes (refused before it is
    allocated; a Parquet file's row count is checked before its columns are read);
    ``TypeError`` for a source of another type; ``ImportError`` without pyarrow.
    """
    pa = _pyarrow()
    max_bytes = _check_max_bytes(max_bytes)
    columns = list(columns)
    if len(columns) != 5:
        raise ValueError(f"columns must name the 5 OHLCV columns, got {columns!r}")
    wanted = [time_col, symbol_col, *columns]
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"time_col, symbol_col and columns must be 7 distinct names, got {wanted!r}")
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        table = _read_file(pa, source, wanted, max_bytes)
    elif isinstance(source, pa.Table) or hasattr(source, "__arrow_c_stream__"):
        table = source if isinstance(source, pa.Table) else pa.table(source)
        _check_columns(table.column_names, wanted, "source")
    else:
        raise TypeError(f"source must be a file path, a pyarrow.Table or an Arrow stream, got {type(source).__name__}")
    _check_panel_bytes(table.num_rows, max_bytes, f"source ({table.num_rows} rows)")
    times, t_idx = _sorted_codes(pa, table.column(time_col), f"time ({time_col!r})")
    symbols, s_idx = _sorted_codes(pa, table.column(symbol_col), f"symbol ({symbol_col!r})")
    n_sym, T = len(symbols), len(times)
    _check_panel_bytes(n_sym * T, max_bytes, f"source ({n_sym} symbols x {T} times)")
    flat = s_idx * T + t_idx
    counts = np.bincount(flat, minlength=n_sym * T)
    if table.num_rows and counts.max() > 1:
        first = int(np.argmax(counts[flat] > 1))
        raise ValueError(f"source has duplicate rows for symbol {symbols[s_idx[first]]!r} at time "
                         f"{times[t_idx[first]]!r}; keep one row per (symbol, time)")
    panel = np.full((5, n_sym * T), np.nan)
    for k, name in enumerate(columns):
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)):
            raise ValueError(f"column {name!r} has type {col.type}; OHLCV columns must be numeric")
        panel[k, flat] = pa.compute.cast(col, pa.float64()).to_numpy()
    return OHLCVPanel(panel.reshape(5, n_sym, T), symbols, times)


@annotate
def write_results(path: Any, values: Any, symbols: Sequence[Any], times: Sequence[Any], names: Any, *,
                  layout: str = "long", symbol_col: str = "symbol", time_col: str = "time") -> None:
    """Write results to a Parquet file (atomically: a crash never leaves half a file).

    values: ``(n_names, n_symbols, T)`` real array (or ``(n_symbols, T)`` with ``names`` one
    string), any float/integer dtype (kept), NaN kept as NaN; symbols: ``n_symbols`` distinct
    labels; times: ``T`` labels (``datetime64``, integers, ...: an Arrow-convertible array);
    names: one column name per leading row of ``values``.

    layout ``"long"``: one row per (symbol, time), sorted by symbol then time, columns
    ``time_col``, ``symbol_col``, then one per name; :func:`read_ohlcv` reads it back when the
    names are the OHLCV columns. ``"wide"``: one row per time, columns ``time_col`` then
    ``"{name}.{symbol}"`` for each name, each symbol (name-major).

    Errors: ``ValueError`` naming the argument for a shape/length mismatch, duplicate symbols
    or names, an unknown layout, or a path that exists and is not a regular file; ``TypeError``
    for non-real values; ``OSError`` when the file cannot be written.
    """
    pa = _pyarrow()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"values must be a real numeric array, got dtype {arr.dtype}")
    if isinstance(names, str):
        names, arr = [names], arr[None] if arr.ndim == 2 else arr
    names = [str(n) for n in names]
    symbols, times = np.asarray(symbols), np.asarray(times)
    if arr.ndim != 3 or arr.shape != (len(names), len(symbols), len(times)):
        raise ValueError(f"values has shape {arr.shape}; expected (len(names), len(symbols), len(times)) = "
                         f"({len(names)}, {len(symbols)}, {len(times)})")
    if symbols.ndim != 1 or len(set(symbols.tolist())) != len(symbols):
        raise ValueError("symbols must be a 1-D sequence of distinct labels")
    if times.ndim != 1:
        raise ValueError(f"times must be 1-D, got shape {times.shape}")
    if len(set(names)) != len(names) or {time_col, symbol_col} & set(names) or time_col == symbol_col:
        raise ValueError(f"names {names!r}, time_col and symbol_col must be distinct column names")
    n_sym, T = len(symbols), len(times)
    if layout == "long":
        cols = {time_col: np.tile(times, n_sym), symbol_col: np.repeat(symbols, T)}
        cols.update({n: arr[k].reshape(-1) for k, n in enumerate(names)})
    else:
        cols = {time_col: times}
        cols.update({f"{n}.{s}": arr[k, i] for k, n in enumerate(names) for i, s in enumerate(symbols.tolist())})
    table = pa.table(cols)
    replace_atomically(regular_target(path), lambda fh: pa.parquet.write_table(table, fh))
