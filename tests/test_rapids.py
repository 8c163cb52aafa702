"""RAPIDS: cuDF in and out, cuML's KMeans for distill, cuML as the bench's GPU k-NN reference.

There is no GPU, cuDF or cuML in CI: what runs here is the conversion and dispatch logic, with
small STAND-IN modules registered as ``cudf`` and ``cuml.cluster`` in ``sys.modules`` for the
duration of a test. The stand-ins wrap pandas and scikit-learn and mimic the parts of the real
APIs the package uses (``to_cupy(dtype=, na_value=)`` refusing nulls without ``na_value``, an
index that cannot be iterated, pandas ``columns``, ``KMeans(...).fit`` with ``cluster_centers_``,
``labels_``, ``inertia_``); "device" data is host NumPy here. What only a real install can show
(cuDF's constructors on CuPy data, MultiIndex columns, cuML's results) is left to the GPU run.
"""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

import gpu_trader as gt
from gpu_trader import correlation as corrmod
from gpu_trader import risk
from gpu_trader._internal import rapids
from gpu_trader.backend import is_cudf, to_numpy


# -- a stand-in cudf module ------------------------------------------------------------------------
class _Index:
    """cuDF's Index: device labels that refuse iteration (``to_pandas`` gives the host labels)."""

    def __init__(self, labels):
        self._pd = labels.to_pandas() if isinstance(labels, _Index) else pd.Index(labels)

    def __iter__(self):
        raise TypeError("cuDF does not support iteration of Index")

    def __len__(self):
        return len(self._pd)

    def to_pandas(self):
        return self._pd


def _host(labels):
    return labels.to_pandas() if isinstance(labels, _Index) else labels


class _Frame:
    """The shared part of the stand-in Series and DataFrame: a pandas object inside."""

    def __init__(self, pandas_object):
        self._pd = pandas_object

    @property
    def index(self):
        return _Index(self._pd.index)

    @property
    def ndim(self):
        return self._pd.ndim

    def to_pandas(self):
        return self._pd

    def to_numpy(self):
        return self._pd.to_numpy()

    def to_cupy(self, dtype=None, na_value=None):
        """Device values (NumPy here); nulls need ``na_value``, as in cuDF."""
        if na_value is None and self._pd.isna().to_numpy().any():
            raise ValueError("Column must have no nulls.")
        return self._pd.to_numpy(dtype=dtype, na_value=na_value)


class Series(_Frame):
    def __init__(self, data, index=None, name=None):
        series = data if isinstance(data, pd.Series) else pd.Series(np.asarray(data), index=_host(index), name=name)
        super().__init__(series)

    @property
    def name(self):
        return self._pd.name

    @property
    def dtype(self):
        return self._pd.dtype


class DataFrame(_Frame):
    def __init__(self, data, index=None, columns=None):
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(np.asarray(data), index=_host(index),
                                                                           columns=columns)
        super().__init__(frame)

    @property
    def columns(self):
        return self._pd.columns  # cuDF returns pandas column labels

    @property
    def dtypes(self):
        return self._pd.dtypes


class MultiIndex:
    @staticmethod
    def from_product(iterables, names=None):
        return pd.MultiIndex.from_product(list(iterables), names=names)


def _stand_in_cudf():
    module = types.ModuleType("cudf")
    for cls in (Series, DataFrame):
        cls.__module__ = "cudf.core.stand_in"
        setattr(module, cls.__name__, cls)
    module.Index, module.MultiIndex = pd.Index, MultiIndex
    return module


@pytest.fixture
def cudf(monkeypatch):
    module = _stand_in_cudf()
    monkeypatch.setitem(sys.modules, "cudf", module)
    return module


def frames(cudf):
    """A pandas DataFrame (time x 4 symbols, NaN holes, a nullable column) and its cuDF twin."""
    rng = np.random.default_rng(0)
    values = 0.01 * rng.standard_normal((120, 4))
    values[rng.random(values.shape) < 0.05] = np.nan
    df = pd.DataFrame(values, index=pd.date_range("2024-01-01", periods=120), columns=list("abcd"))
    df["d"] = pd.array(np.round(values[:, 3] * 1000), dtype="Int64")  # nulls as pd.NA
    return df, cudf.DataFrame(df)


def assert_same_frame(got, want):
    assert is_cudf(got), type(got)
    pd.testing.assert_frame_equal(got.to_pandas(), want, check_freq=False)


# -- cuDF in, cuDF out -----------------------------------------------------------------------------
def test_cudf_is_recognized_without_importing_it():
    code = ("import sys, numpy as np, pandas as pd, gpu_trader as gt\n"
            "gt.risk.corr(pd.DataFrame(np.random.default_rng(0).standard_normal((30, 3))))\n"
            "gt.sma(pd.Series(np.arange(30.0)), 5)\n"
            "assert not {'cudf', 'cuml'} & set(sys.modules), sorted({'cudf', 'cuml'} & set(sys.modules))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert not is_cudf(pd.DataFrame({"a": [1.0]})) and not is_cudf(np.zeros(3))


def test_correlation_frames_come_back_as_cudf(cudf):
    df, gdf = frames(cudf)
    for fn in (corrmod.corr, corrmod.cov, lambda r: corrmod.ewma_cov(r, 10.0)):
        assert_same_frame(fn(gdf), fn(df))
    assert_same_frame(corrmod.rolling_corr(gdf, 10), corrmod.rolling_corr(df, 10))
    # the oracle of the pandas path itself: pandas' own pairwise rolling correlation
    pd.testing.assert_frame_equal(corrmod.rolling_corr(gdf, 10).to_pandas(),
                                  df.astype(float).rolling(10).corr(), rtol=1e-7, atol=1e-8, check_freq=False)


def test_risk_reductions_of_cudf(cudf):
    df, gdf = frames(cudf)
    got = risk.sharpe(gdf)
    assert is_cudf(got)
    pd.testing.assert_series_equal(got.to_pandas(), risk.sharpe(df))
    one = cudf.Series(df["a"])
    # a Series in gives a plain number out, as pandas
    assert risk.sharpe(one) == risk.sharpe(df["a"]) and isinstance(risk.sharpe(one), (float, np.floating))
    grid = risk.var_historical(gdf, level=[0.95, 0.99])
    pd.testing.assert_frame_equal(grid.to_pandas(), risk.var_historical(df, level=[0.95, 0.99]))


def test_indicators_of_cudf(cudf):
    df, gdf = frames(cudf)
    s = df["a"].ffill().bfill()
    got = gt.sma(cudf.Series(s), 5)
    assert is_cudf(got)
    pd.testing.assert_series_equal(got.to_pandas(), gt.sma(s, 5), check_freq=False)
    pd.testing.assert_series_equal(got.to_pandas(), s.rolling(5).mean(), check_freq=False, rtol=1e-12)
    assert_same_frame(gt.ema(gdf, 7), gt.ema(df, 7))
    grid = gt.sma(gdf, [3, 5])  # a parameter grid: MultiIndex columns
    assert_same_frame(grid, gt.sma(df, [3, 5]))


def test_cudf_values_nulls_dtypes_and_host_copies(cudf):
    df, gdf = frames(cudf)
    np.testing.assert_array_equal(to_numpy(gdf), df.to_numpy(dtype=np.float64, na_value=np.nan))
    f32 = cudf.DataFrame(df[["a", "b"]].astype(np.float32))
    assert corrmod.corr(f32).to_pandas().dtypes.eq(np.float32).all()
    with pytest.raises(TypeError, match="r must be a real numeric array"):
        corrmod.corr(cudf.DataFrame(pd.DataFrame({"a": ["x", "y"], "b": ["z", "w"]})))
    before = gdf.to_pandas().copy()
    corrmod.rolling_corr(gdf, 5)
    pd.testing.assert_frame_equal(gdf.to_pandas(), before)  # never written


# -- cuML KMeans for distill -----------------------------------------------------------------------
class DeviceArray(np.ndarray):
    """A NumPy array that says it lives on a CUDA device (the test's stand-in for CuPy)."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ctypes.data, False), "version": 3}


@pytest.fixture(autouse=True)
def fresh_cuml_lookup():
    """cuML's import is tried once per process: each test starts (and leaves) with it untried."""
    rapids._cuml_kmeans_class.cache_clear()
    yield
    rapids._cuml_kmeans_class.cache_clear()


@pytest.fixture
def cuml(monkeypatch):
    """A stand-in ``cuml.cluster`` whose KMeans is scikit-learn's, recording its arguments."""
    from sklearn.cluster import KMeans as SkKMeans

    calls = []

    class KMeans:
        def __init__(self, *, n_clusters, max_iter, tol, random_state, init, n_init, output_type):
            calls.append(dict(n_clusters=n_clusters, max_iter=max_iter, tol=tol, random_state=random_state,
                              init=init, n_init=n_init, output_type=output_type))
            self._model = SkKMeans(n_clusters, max_iter=max_iter, tol=tol, random_state=random_state, n_init=n_init)

        def fit(self, x):
            self._model.fit(np.asarray(x))
            self.cluster_centers_ = self._model.cluster_centers_
            self.labels_ = self._model.labels_.astype(np.int32)  # cuML's labels are int32
            self.inertia_ = np.float32(self._model.inertia_)
            return self

    package, cluster = types.ModuleType("cuml"), types.ModuleType("cuml.cluster")
    cluster.KMeans, package.cluster = KMeans, cluster
    monkeypatch.setitem(sys.modules, "cuml", package)
    monkeypatch.setitem(sys.modules, "cuml.cluster", cluster)
    return calls


def test_cuml_kmeans_on_device_data(cuml):
    x = np.random.default_rng(1).standard_normal((200, 4)).astype(np.float32)
    assert rapids.cuml_kmeans(x, 3, 20, 7, 1e-4) is None  # host data never goes to cuML
    assert not cuml
    centroids, labels, inertia = rapids.cuml_kmeans(x.view(DeviceArray), 3, 20, 7, 1e-4)
    assert cuml == [dict(n_clusters=3, max_iter=20, tol=1e-4, random_state=7, init="k-means++", n_init=1,
                         output_type="cupy")]
    assert centroids.shape == (3, 4) and labels.dtype == np.int64 and type(inertia) is float
    d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))
    assert inertia == pytest.approx(d.min(1).sum(), rel=1e-5)


def test_cuml_absent_falls_back_and_the_import_is_not_retried(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuml.cluster", None)  # import fails
    tries = []
    real = rapids.importlib.import_module
    monkeypatch.setattr(rapids.importlib, "import_module", lambda name: tries.append(name) or real(name))
    x = np.random.default_rng(2).standard_normal((50, 3)).view(DeviceArray)
    assert rapids.cuml_kmeans(x, 2, 10, 0, 0.0) is None
    assert rapids.cuml_kmeans(x, 2, 10, 0, 0.0) is None
    assert tries == ["cuml.cluster"]  # one failed import per process, not one per distill


def test_distill_uses_cuml_where_it_answers(monkeypatch):
    from gpu_trader import patterns

    pm = patterns.PatternMemory(5)
    pm.add(np.random.default_rng(3).standard_normal((40, 5)), np.arange(40.0))
    own = pm.distill(3, seed=1)  # host memory: the project's k-means
    seen = []

    def fake(x, n_clusters, n_iter, seed, tol):
        seen.append((x.shape, n_clusters, n_iter, seed, tol))
        return own.centroids, np.zeros(40, np.int64), 1.5

    monkeypatch.setattr(patterns, "cuml_kmeans", fake)
    res = pm.distill(3, n_iter=9, seed=1, tol=0.5)
    assert seen == [((40, 5), 3, 9, 1, 0.5)]
    assert res.inertia == 1.5 and res.counts.tolist() == [40, 0, 0]
    assert res.mean_outcome[0] == pytest.approx(19.5) and np.isnan(res.mean_outcome[1:]).all()


# -- cuML in the bench -----------------------------------------------------------------------------
def test_bench_gpu_knn_case_has_cuml_as_reference():
    from gpu_trader.bench.harness import Reference
    from gpu_trader.bench.suites import vectors

    case = next(w for w in vectors.workloads("quick") if w.target == "vectors.batched_exact")
    refs = {r.name: r for r in case.references}
    assert isinstance(refs["cuml"], Reference) and refs["cuml"].requires == "cuml"
    assert refs["gemm"].requires == "cupy"
