"""polars in/out (gpu_trader.backend) and OHLCV panels from Parquet/Arrow (gpu_trader.data_io).

Oracles: the same call on the NumPy values and on the pandas frame (polars results must hold
the same numbers under the same names); for read_ohlcv, pandas ``pivot`` of the long table
(reindexed to every symbol x time, so missing bars are NaN), and round trips through
write_results.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import gpu_trader as gt
from gpu_trader import correlation, data_io, risk

pl = pytest.importorskip("polars")
pa = pytest.importorskip("pyarrow")
import pyarrow.feather as feather  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SYMBOLS = ["AAPL", "MSFT", "NVDA"]


def _frame(rng, T=60, dtype=np.float64, with_time=True, nan=True):
    """A polars frame: a Date column and one price column per symbol (NaNs sprinkled)."""
    values = (100 + rng.normal(0, 1, (T, len(SYMBOLS))).cumsum(0)).astype(dtype)
    if nan:
        values[rng.random(values.shape) < 0.05] = np.nan
    cols = {"date": [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(T)]} if with_time else {}
    cols.update({s: values[:, i] for i, s in enumerate(SYMBOLS)})
    return pl.DataFrame(cols), values


def _assert_frame(res, expected_tn, time_col="date", names=SYMBOLS):
    assert res.columns == ([time_col] if time_col else []) + list(names)
    np.testing.assert_allclose(res.select(list(names)).to_numpy(), expected_tn, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("fn, kwargs", [(gt.sma, {"window": 10}), (gt.ema, {"window": 7}), (gt.rsi, {"window": 5}),
                                        (gt.wma, {"window": 4})])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_indicator_polars_in_polars_out(fn, kwargs, dtype):
    df, values = _frame(np.random.default_rng(1), dtype=dtype)
    res = fn(df, **kwargs)
    assert isinstance(res, pl.DataFrame)
    assert res["date"].equals(df["date"])  # the time column is kept as it is
    _assert_frame(res, fn(np.ascontiguousarray(values.T), **kwargs).T)
    pdf = pd.DataFrame(values, columns=SYMBOLS)
    np.testing.assert_array_equal(res.select(SYMBOLS).to_numpy(), fn(pdf, **kwargs).to_numpy())
    one = fn(df["MSFT"], **kwargs)
    assert isinstance(one, pl.Series) and one.name == "MSFT"
    np.testing.assert_array_equal(one.to_numpy(), fn(values[:, 1].copy(), **kwargs))


def test_grid_multi_output_and_nulls():
    df, values = _frame(np.random.default_rng(2), with_time=False)
    grid = gt.sma(df, [3, 8])
    assert grid.columns == [f"{s}[{i}]" for i in range(2) for s in SYMBOLS]
    expected = gt.sma(np.ascontiguousarray(values.T), [3, 8])  # (2, n, T)
    np.testing.assert_array_equal(grid.to_numpy(), expected.reshape(-1, values.shape[0]).T)
    macd = gt.macd(df)
    for got, want in zip(macd, gt.macd(np.ascontiguousarray(values.T))):
        _assert_frame(got, want.T, time_col=None)
    ints = pl.DataFrame({"A": [1, None, 3, 4, 5], "B": [2, 2, None, 2, 2]})  # nulls -> NaN
    res = gt.sma(ints, 2)
    np.testing.assert_array_equal(res.to_numpy(), gt.sma(np.array([[1, np.nan, 3, 4, 5], [2, 2, np.nan, 2, 2]]), 2).T)


def test_features_from_a_dict_of_polars_frames():
    rng = np.random.default_rng(3)
    frames = {k: _frame(rng)[0] for k in ("high", "low", "close", "volume")}
    res = gt.features(frames)
    arrays = {k: np.ascontiguousarray(f.select(SYMBOLS).to_numpy().T) for k, f in frames.items()}
    want = gt.features(arrays)
    assert list(res) == list(want)
    for key in want:
        assert res[key]["date"].equals(frames["high"]["date"])
        _assert_frame(res[key], want[key].T)


def test_risk_and_correlation_polars():
    df, values = _frame(np.random.default_rng(4), T=80)
    rets = df.with_columns([pl.col(s).pct_change() for s in SYMBOLS])
    r = np.ascontiguousarray(rets.select(SYMBOLS).to_numpy().T)
    pdf = pd.DataFrame(r.T, columns=SYMBOLS)
    sharpe = risk.sharpe(rets)
    assert sharpe.columns == SYMBOLS and sharpe.height == 1
    np.testing.assert_array_equal(sharpe.row(0), risk.sharpe(r))
    np.testing.assert_array_equal(sharpe.row(0), risk.sharpe(pdf).to_numpy())
    assert risk.sharpe(rets["AAPL"]) == risk.sharpe(r[0])
    levels = risk.var_historical(rets, [0.95, 0.99])
    assert levels.columns == ["level", *SYMBOLS] and levels["level"].to_list() == [0.95, 0.99]
    np.testing.assert_array_equal(levels.select(SYMBOLS).to_numpy(), risk.var_historical(r, [0.95, 0.99]))
    c = correlation.corr(rets)
    assert c.columns == ["symbol", *SYMBOLS] and c["symbol"].to_list() == SYMBOLS
    np.testing.assert_allclose(c.select(SYMBOLS).to_numpy(), pdf.corr().to_numpy(), rtol=1e-12)
    path = correlation.rolling_corr(rets, 20)
    assert path.columns == ["date", "symbol", *SYMBOLS] and path.height == 80 * len(SYMBOLS)
    want = pdf.rolling(20).corr()
    np.testing.assert_allclose(path.select(SYMBOLS).to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12,
                               equal_nan=True)
    assert path["date"].to_list()[:4] == [df["date"][0]] * 3 + [df["date"][1]]


def test_polars_errors():
    df, _ = _frame(np.random.default_rng(5))
    with pytest.raises(TypeError, match="column 'name' has dtype String"):
        gt.sma(df.with_columns(pl.lit("x").alias("name")), 5)
    with pytest.raises(ValueError, match="low and high have different columns"):
        gt.atr(df, df.select(["date", *SYMBOLS[::-1]]), df, 5)


def test_importing_gpu_trader_imports_neither_polars_nor_pyarrow():
    code = "import sys, gpu_trader, gpu_trader.data_io; print(sorted({'polars', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- read_ohlcv / write_results ---------------------------------------------------------------
def _long_table(rng, n_sym=7, T=30, drop=0.2):
    """A shuffled long table with missing bars, NaN fields and an integer volume."""
    times = np.datetime64("2021-03-01T09:30", "ns") + np.arange(T) * np.timedelta64(60, "s")
    sym = np.repeat([f"S{i}" for i in rng.permutation(n_sym)], T)
    t = np.tile(times, n_sym)
    keep = rng.random(len(sym)) >= drop
    n = int(keep.sum())
    fields = {k: rng.normal(100, 5, n) for k in ("open", "high", "low", "close")}
    fields["close"][rng.random(n) < 0.1] = np.nan
    fields["volume"] = rng.integers(0, 1000, n)
    order = rng.permutation(n)
    cols = {"time": t[keep][order], "symbol": sym[keep][order], **{k: v[order] for k, v in fields.items()}}
    return pa.table(cols)


def _pivot_oracle(table):
    df = table.to_pandas()
    sym, times = sorted(df["symbol"].unique()), np.sort(df["time"].unique())
    wide = df.pivot(index="symbol", columns="time", values=list(data_io.OHLCV_COLUMNS))
    out = np.stack([wide[c].reindex(index=sym, columns=times).to_numpy(dtype=float) for c in data_io.OHLCV_COLUMNS])
    return out, np.array(sym, dtype=object), times


def test_read_ohlcv_from_parquet_ipc_table_and_polars(tmp_path):
    table = _long_table(np.random.default_rng(6))
    want, sym, times = _pivot_oracle(table)
    pq.write_table(table, tmp_path / "bars.parquet")
    feather.write_feather(table, tmp_path / "bars.arrow")
    with pa.OSFile(str(tmp_path / "bars.stream"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    sources = [tmp_path / "bars.parquet", str(tmp_path / "bars.arrow"), tmp_path / "bars.stream", table,
               pl.from_arrow(table)]
    for src in sources:
        got = data_io.read_ohlcv(src)
        assert got.values.dtype == np.float64 and got.values.shape == (5, len(sym), len(times))
        np.testing.assert_array_equal(got.values, want)
        assert got.symbols.tolist() == sym.tolist()
        np.testing.assert_array_equal(got.times, times)
    assert np.isnan(want).any()


def test_read_ohlcv_custom_names_and_integer_time():
    t = pa.table({"ts": [3, 1, 2, 1], "sym": [2, 2, 2, 5], "o": [1, 2, 3, 4], "h": [1.0] * 4, "l": [0.5] * 4,
                  "c": [9.0, 8.0, 7.0, 6.0], "v": [1, 1, 1, None]})
    got = data_io.read_ohlcv(t, symbol_col="sym", time_col="ts", columns=("o", "h", "l", "c", "v"))
    assert got.symbols.tolist() == [2, 5] and got.times.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(got.values[3], [[8.0, 7.0, 9.0], [6.0, np.nan, np.nan]])
    assert np.isnan(got.values[4, 1, 0])  # a null volume


def test_read_ohlcv_errors(tmp_path):
    table = _long_table(np.random.default_rng(7), n_sym=3, T=5, drop=0)
    with pytest.raises(ValueError, match="duplicate rows for symbol"):
        data_io.read_ohlcv(pa.concat_tables([table, table.slice(0, 1)]))
    with pytest.raises(ValueError, match=r"no column\(s\) \['close'\]"):
        data_io.read_ohlcv(table.drop_columns(["close"]))
    with pytest.raises(ValueError, match="symbol .* null"):
        data_io.read_ohlcv(table.set_column(1, "symbol", pa.array([None] + ["a"] * (table.num_rows - 1))))
    with pytest.raises(ValueError, match="'close' has type string"):
        data_io.read_ohlcv(table.set_column(5, "close", pa.array(["x"] * table.num_rows)))
    with pytest.raises(ValueError, match="over max_bytes"):
        data_io.read_ohlcv(table, max_bytes=5 * 8 * table.num_rows - 1)
    pq.write_table(table, tmp_path / "big.parquet")
    with pytest.raises(ValueError, match=r"big.parquet \(15 rows\).*over max_bytes"):
        data_io.read_ohlcv(tmp_path / "big.parquet", max_bytes=100)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "junk.txt").write_text("time,symbol\n")
    for bad in ("junk.parquet", "junk.txt"):
        with pytest.raises(ValueError, match="not a readable Parquet or Arrow IPC file"):
            data_io.read_ohlcv(tmp_path / bad)
    with pytest.raises(ValueError, match="not a regular file"):
        data_io.read_ohlcv(tmp_path)
    with pytest.raises(FileNotFoundError):
        data_io.read_ohlcv(tmp_path / "missing.parquet")
    with pytest.raises(TypeError, match="source must be"):
        data_io.read_ohlcv(42)
    with pytest.raises(ValueError, match="max_bytes"):
        data_io.read_ohlcv(table, max_bytes=0)


def test_write_results_long_round_trip(tmp_path):
    want, sym, times = _pivot_oracle(_long_table(np.random.default_rng(8)))
    frozen = want.copy()
    frozen.flags.writeable = False
    path = tmp_path / "out.parquet"
    data_io.write_results(path, frozen, sym.tolist(), times, data_io.OHLCV_COLUMNS)
    back = data_io.read_ohlcv(path)
    np.testing.assert_array_equal(back.values, want)
    assert back.symbols.tolist() == sym.tolist()
    np.testing.assert_array_equal(back.times, times)
    assert os.listdir(tmp_path) == ["out.parquet"]  # no temporary file left behind


def test_write_results_wide_and_float32(tmp_path):
    rng = np.random.default_rng(9)
    vals = rng.normal(size=(2, 3, 4)).astype(np.float32)[:, ::-1]  # non-contiguous
    times = np.arange(4, dtype=np.int64)
    data_io.write_results(tmp_path / "w.parquet", vals, ["a", "b", "c"], times, ["sma", "rsi"], layout="wide",
                          time_col="t")
    t = pq.read_table(tmp_path / "w.parquet")
    assert t.column_names == ["t"] + [f"{n}.{s}" for n in ("sma", "rsi") for s in "abc"]
    assert t.schema.field("sma.a").type == pa.float32()
    np.testing.assert_array_equal(np.stack([t[c].to_numpy() for c in t.column_names[1:]]), vals.reshape(6, 4))
    data_io.write_results(tmp_path / "one.parquet", vals[0], ["a", "b", "c"], times, "sma")
    long = pq.read_table(tmp_path / "one.parquet").to_pandas()
    assert list(long.columns) == ["time", "symbol", "sma"] and long["symbol"].tolist()[:5] == list("aaaab")
    np.testing.assert_array_equal(long["sma"].to_numpy(), vals[0].reshape(-1))


def test_write_results_errors(tmp_path):
    v = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="values has shape"):
        data_io.write_results(tmp_path / "x.parquet", v, ["a"], [1, 2, 3], ["n"])
    with pytest.raises(ValueError, match="distinct"):
        data_io.write_results(tmp_path / "x.parquet", v, ["a", "a"], [1, 2, 3], ["n"])
    with pytest.raises(ValueError, match="layout"):
        data_io.write_results(tmp_path / "x.parquet", v, ["a", "b"], [1, 2, 3], ["n"], layout="tall")
    with pytest.raises(TypeError, match="real numeric"):
        data_io.write_results(tmp_path / "x.parquet", v.astype(complex), ["a", "b"], [1, 2, 3], ["n"])
    with pytest.raises(ValueError, match="not a regular file"):
        data_io.write_results(tmp_path, v, ["a", "b"], [1, 2, 3], ["n"])
    assert os.listdir(tmp_path) == []
