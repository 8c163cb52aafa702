"""GPU indicator kernels (``gpu_trader.kernels.indicators``) against the CPU backend.

The same cases run three ways, each compared with ``cpu_fallback.indicators.compute``
(rel 1e-12 in float64, 2 ulp in float32, scaled by each output's magnitude; NaN and
inf positions identical):

* **twin** (in process): the scan path's bodies compiled for the CPU by numba
  (``cpu_fallback.scan.twin_compute``);
* **simulator** (a subprocess, because ``NUMBA_ENABLE_CUDASIM`` must be set before
  numba is first imported): the real launcher -- kernels, time-major transposes,
  chunked layout, carry scan -- on NumPy arrays in numba's CUDA simulator;
* **device**: with a GPU and CuPy (``'cuda' in gt.available_backends()``), the same
  cases through ``kernels.indicators.compute`` on CuPy arrays, plus long series.

``test_kernels_compile_to_ptx`` compiles every kernel of ``gpu_trader/kernels`` (found in
the source, so a new one cannot be missed) for sm_90 (H100) through numba-cuda with the
argument types a real launch uses; it needs numba-cuda and NVVM (the dev extras' wheels),
no GPU, and skips without them.

Run as a script (``python tests/test_cuda_kernels.py --simulate DIR`` or ``--ptx``)
this module is the subprocess's entry point.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from conftest import random_ohlcv  # noqa: E402
from gpu_trader._internal.indicator_specs import SPECS  # noqa: E402

# name -> (inputs picked from h, l, c, v; parameter grid used by the cases)
INDICATORS = {
    "sma": ("c", [(1,), (5,), (20,)]),
    "ema": ("c", [(1,), (3,), (10,)]),
    "wma": ("c", [(1,), (4,), (15,)]),
    "rsi": ("c", [(2,), (14,)]),
    "macd": ("c", [(12, 26, 9), (5, 3, 1), (3, 7, 4)]),
    "bollinger": ("c", [(20, 2.0), (6, 1.5)]),
    "atr": ("hlc", [(1,), (14,)]),
    "stoch": ("hlc", [(5, 3, 3), (4, 1, 2)]),
    "obv": ("cv", [()]),
    "vwap": ("hlcv", [(1,), (10,)]),
}
SCAN = [name for name in INDICATORS if name != "stoch"]
AFFINE = ["ema", "rsi", "macd", "atr", "obv"]  # the single-pass scan (the others are windowed: phase 3 only)
THREE_PHASE = ["ema", "macd"]  # simulator cases that force the three-phase scan
N_OUT = {"macd": 3, "bollinger": 3, "stoch": 2}


def ragged(n_series, n_bars, seed, dtype):
    """Random-walk OHLCV with ragged leading NaNs, interior NaNs and an inf."""
    h, l, c, v = (a.copy() for a in random_ohlcv(n_series, n_bars, seed))
    lead = [0, 7, 1, 30, n_bars - 1, n_bars][:n_series]
    for i, k in enumerate(lead):
        for a in (h, l, c, v):
            a[i, :k] = np.nan
    if n_series > 2:
        h[2, :3] = np.nan  # a late listing in one input only
        c[2, n_bars // 2] = np.nan
        v[2, (2 * n_bars) // 3] = np.nan
    if n_series > 3 and n_bars > 9:
        c[3, n_bars - 9] = np.inf
    if n_series == 1:
        c[0, n_bars // 3] = np.nan
    return tuple(np.ascontiguousarray(a.astype(dtype)) for a in (h, l, c, v))


def build_cases():
    """Deterministic cases: id -> dict(name, inputs, params, n_out, path, chunk, pair_block, tpb)."""
    cases = {}
    for dtype in (np.float64, np.float32):
        dt = np.dtype(dtype).name
        batch = ragged(6, 90, 11, dtype)
        long1 = ragged(1, 2000, 12, dtype)
        long2 = ragged(2, 1200, 13, dtype)
        auto1 = ragged(1, 4096, 14, dtype)
        for name, (pick, grid) in INDICATORS.items():
            params = np.array(grid, dtype=np.float64).reshape(len(grid), -1)

            def inputs(data, pick=pick):
                return [data["hlcv".index(k)] for k in pick]

            base = dict(name=name, params=params, n_out=N_OUT.get(name, 1), chunk=None, pair_block=None)
            # the batch path, several blocks (tpb 8) with a partial last one
            cases[f"{name}-{dt}-rows"] = dict(base, inputs=inputs(batch), path="rows", tpb=8)
            if name in SCAN:
                # one long series, many chunks, a 3-level carry scan
                cases[f"{name}-{dt}-scan1"] = dict(base, inputs=inputs(long1), params=params[-1:],
                                                   path="scan", chunk=32, pair_block=8, tpb=64)
                # ragged batch x parameter grid, chunks shorter than some windows
                cases[f"{name}-{dt}-scan6"] = dict(base, inputs=inputs(batch), path="scan", chunk=7,
                                                   pair_block=4, tpb=32)
                if dtype is np.float64 and name == "rsi":
                    # automatic choice: one series of SCAN_MIN_T bars takes the scan, default chunking
                    cases[f"{name}-{dt}-auto"] = dict(base, inputs=inputs(auto1), params=params[-1:],
                                                      path=None, tpb=128)
                if dtype is np.float64:
                    cases[f"{name}-{dt}-scan2"] = dict(base, inputs=inputs(long2), path="scan", chunk=50,
                                                       pair_block=32, tpb=128)
                if name in THREE_PHASE and dtype is np.float64:
                    # the three-phase scan the single pass replaced (kept for comparison and benches)
                    cases[f"{name}-{dt}-scan1-3phase"] = dict(cases[f"{name}-{dt}-scan1"], single_pass=False)
    return cases


def run_case(case, xp, compute_xp, executor):
    exe = executor(xp, case["tpb"])
    if "single_pass" in case:  # a scan forced to one algorithm: the scan glue, not compute_xp's policy
        from gpu_trader.kernels import indicators as ki
        from gpu_trader.kernels.scan import scan_compute

        return scan_compute(case["name"], [xp.asarray(a) for a in case["inputs"]], xp.asarray(case["params"]),
                            case["n_out"], xp, ki.IndicatorLauncher(exe), case["chunk"], case["pair_block"],
                            single_pass=case["single_pass"])
    kwargs = {}
    if case["pair_block"] is not None:
        kwargs["pair_block"] = case["pair_block"]
    return compute_xp(case["name"], [xp.asarray(a) for a in case["inputs"]], case["params"], case["n_out"],
                      xp=xp, exe=exe, path=case["path"], chunk=case["chunk"], **kwargs)


# -- comparison -----------------------------------------------------------------------
def assert_close_to_cpu(got, ref):
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg="NaN positions differ")
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf], err_msg="inf values differ")
    np.testing.assert_array_equal(np.isinf(got), inf, err_msg="inf positions differ")
    rtol = 1e-12 if ref.dtype == np.float64 else 2.4e-7
    for k in range(ref.shape[0]):  # per output: scale by its magnitude (MACD crosses zero)
        g, r = got[k].astype(np.float64), ref[k].astype(np.float64)
        fin = np.isfinite(r)
        if fin.any():
            scale = np.max(np.abs(r[fin]))
            np.testing.assert_allclose(g[fin], r[fin], rtol=rtol, atol=rtol * scale, err_msg=f"output {k}")


def cpu_reference(case):
    from gpu_trader.cpu_fallback.indicators import compute

    with np.errstate(all="ignore"):
        return compute(case["name"], case["inputs"], case["params"], case["n_out"])


CASES = build_cases()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rows_never_read_past_the_series_end(name):
    """On a GPU an out-of-bounds read is silent corruption or a dead context; here NumPy raises.

    Runs the shared row bodies as plain Python on short, all-NaN and partly-NaN
    series with windows longer than the series.
    """
    from gpu_trader._internal import indicator_loops

    code, _, n_out, pnames = SPECS[name]
    for T in range(1, 7):
        for fill in (np.nan, 1.0):
            x = np.full(T, fill)
            x[: T // 2] = np.nan
            for window in (1, 2, T, T + 1, T + 5):
                params = np.array([max(window, 2)] * len(pnames) + [0.0] * (3 - len(pnames)), dtype=np.float64)
                if name == "bollinger":
                    params[1] = 2.0
                indicator_loops.dispatch(code, x, x, x, x, params, np.empty((n_out, T)))


# -- twin: the scan bodies compiled for the CPU -------------------------------------------
@pytest.mark.parametrize("case_id", [k for k in CASES if "-scan" in k and "3phase" not in k])
def test_twin_scan_matches_cpu(case_id):
    """Both scans of the affine recurrences (single pass, three phases), the windowed scan."""
    from gpu_trader.cpu_fallback.scan import twin_compute
    from gpu_trader.kernels.scan import PAIR_BLOCK

    case = CASES[case_id]
    ref = cpu_reference(case)
    for single_pass in ((True, False) if case["name"] in AFFINE else (None,)):
        with np.errstate(all="ignore"):
            got = twin_compute(case["name"], case["inputs"], case["params"], case["n_out"], chunk=case["chunk"],
                               pair_block=case["pair_block"] or PAIR_BLOCK, single_pass=single_pass)
        assert_close_to_cpu(got, ref)


def test_twin_scan_atr_window_one_inf_at_chunk_boundaries():
    """ATR(1) is TA-Lib's ``1 * tr + 0 * prev``: an infinite true range is inf for one bar, then
    NaN for good (0 * inf). A chunk boundary right after it must carry that (a clamped
    carry coefficient would give inf instead)."""
    from gpu_trader.cpu_fallback.scan import twin_compute

    talib = pytest.importorskip("talib")
    h, l, c, _ = (np.ascontiguousarray(a) for a in random_ohlcv(6, 40, seed=3))
    for i, t in enumerate((5, 6, 7, 13, 14, 20)):  # chunk length 7: boundaries after bars 6, 13, 20
        h[i, t] = np.inf
    params = np.array([[1.0]])
    with np.errstate(all="ignore"):
        got = twin_compute("atr", [h, l, c], params, 1, chunk=7, pair_block=2)
        ref = np.stack([talib.ATR(h[i], l[i], c[i], 1) for i in range(6)])
    assert_close_to_cpu(got, cpu_reference(dict(name="atr", inputs=[h, l, c], params=params, n_out=1)))
    np.testing.assert_array_equal(got[0, 0], ref)


@pytest.mark.parametrize("name", SCAN)
@pytest.mark.parametrize("n_bars", [1, 2, 9])
def test_twin_scan_short_series(name, n_bars):
    """Series shorter than the windows, single bars, chunk length 1 and 3."""
    from gpu_trader.cpu_fallback.scan import twin_compute

    pick, grid = INDICATORS[name]
    data = ragged(4, n_bars, 5, np.float64)
    inputs = [data["hlcv".index(k)] for k in pick]
    params = np.array(grid, dtype=np.float64).reshape(len(grid), -1)
    case = dict(name=name, inputs=inputs, params=params, n_out=N_OUT.get(name, 1))
    ref = cpu_reference(case)
    for chunk in (1, 3):
        for single_pass in ((True, False) if name in AFFINE else (None,)):
            with np.errstate(all="ignore"):
                got = twin_compute(name, inputs, params, case["n_out"], chunk=chunk, pair_block=2,
                                   single_pass=single_pass)
            assert_close_to_cpu(got, ref)


@pytest.mark.parametrize("name", SCAN)
def test_twin_long_series_default_chunks(name):
    """300k bars, the whole parameter grid, the automatic chunk length (thousands of chunks)."""
    from gpu_trader.cpu_fallback.scan import twin_compute
    from gpu_trader.kernels.scan import choose_chunk

    pick, grid = INDICATORS[name]
    data = random_ohlcv(1, 300_000, 8)
    inputs = [data["hlcv".index(k)] for k in pick]
    params = np.array(grid, dtype=np.float64).reshape(len(grid), -1)
    chunk = choose_chunk(name, params, params.shape[0], 300_000)
    got = twin_compute(name, inputs, params, N_OUT.get(name, 1), chunk=chunk)
    assert_close_to_cpu(got, cpu_reference(dict(name=name, inputs=inputs, params=params, n_out=N_OUT.get(name, 1))))


def test_exclusive_affine_scan_matches_sequential():
    from gpu_trader.cpu_fallback.scan import CpuScanExecutor
    from gpu_trader.kernels.scan import exclusive_affine_scan

    rng = np.random.default_rng(3)
    Q, m = 3, 1000
    A = rng.uniform(0.5, 1.0, (Q, m))
    B = rng.normal(size=(Q, m))
    Ain, Bin = exclusive_affine_scan(A, B, np, CpuScanExecutor(), blk=4)
    y0 = rng.normal(size=Q)
    y = y0.copy()
    for c in range(m):
        np.testing.assert_allclose(Ain[:, c] * y0 + Bin[:, c], y, rtol=1e-12, atol=1e-12)
        y = A[:, c] * y + B[:, c]


def test_path_choice_and_chunk_length():
    from gpu_trader.kernels import scan

    assert scan.use_scan("ema", 1, scan.SCAN_MIN_T)
    assert not scan.use_scan("ema", 1, scan.SCAN_MIN_T - 1)
    assert not scan.use_scan("ema", int(scan.ROWS_MIN_FILL * scan.H100.resident_threads), 10**7)
    assert not scan.use_scan("stoch", 1, 10**7)
    p = np.array([[2.0]])
    # one 10M-bar series, windowed: ~one chunk per resident thread of an H100
    L = scan.choose_chunk("sma", p, 1, 10_000_000)
    target = scan.H100.resident_threads
    assert scan.MIN_CHUNK <= L and abs(-(-10_000_000 // L) - target) < target // 8
    assert scan.choose_chunk("ema", p, 1, 5000) == scan.MIN_CHUNK
    assert scan.choose_chunk("sma", np.array([[200.0]]), 1, 10**6) == 400
    assert scan.choose_chunk("wma", np.array([[200.0]]), 1, 10**6) == 1600
    assert scan.choose_chunk("ema", p, 1, 10) == 10


def test_single_pass_policy_bytes_and_launches():
    """The affine recurrences take the single-pass scan, its chunks sized for the L2, and the byte
    model (not a timing) shows what it saves: a float64 EMA moves 2N bytes-equivalents (the
    batch path's count) instead of the three-phase scan's 3N, in one launch after the first-valid
    search instead of 5 (phase 1; the carry scan's reduce, serial and expand; phase 3)."""
    from gpu_trader.kernels import scan

    assert {name for name in SCAN if scan.use_single_pass(name)} == set(AFFINE)
    assert not scan.use_single_pass("stoch")
    p = np.array([[20.0]])
    # the goals' shapes: one float64 indicator on 2000 x 2520, one 10M-bar EMA
    for n_series, T in ((2000, 2520), (1, 10_000_000)):
        assert scan.use_scan("ema", n_series, T)
        L = scan.choose_chunk("ema", p, n_series, T)
        in_flight = scan.H100.resident_threads * L * 8  # the chunks the threads hold between the two reads
        assert L == scan.MIN_CHUNK or in_flight <= scan.L2_SHARE * scan.H100.l2_bytes
        N = n_series * T * 8
        single = scan.traffic_bytes("ema", n_series, 1, T, 8, "single_pass")
        assert single == {"kernels": 2 * N, "info": 0, "total": 2 * N}
        assert scan.traffic_bytes("ema", n_series, 1, T, 8, "scan")["total"] == 3 * N
        assert scan.traffic_bytes("ema", n_series, 1, T, 8, "rows")["total"] == 2 * N
        nc = -(-T // L)
        assert scan.launches("ema", nc, "single_pass") == 2
        assert scan.launches("ema", nc, "scan") == 6
    assert scan.launches("macd", 158, "single_pass") == 3 and scan.launches("macd", 158, "scan") == 11
    # MACD: inputs + 3 outputs, and the float64 line written once and read once (not twice)
    N = 1000 * 8
    assert scan.traffic_bytes("macd", 1, 1, 1000, 8, "single_pass")["total"] == 4 * N + 2 * N
    assert scan.traffic_bytes("macd", 1, 1, 1000, 8, "scan")["total"] == 5 * N + 3 * N
    # windowed: one phase-3 launch either way, the same bytes
    for name in ("sma", "wma", "bollinger", "vwap"):
        assert scan.traffic_bytes(name, 3, 2, 500, 8, "single_pass") == scan.traffic_bytes(name, 3, 2, 500, 8, "scan")
        assert scan.launches(name, 10, "single_pass") == scan.launches(name, 10, "scan")
    with pytest.raises(ValueError, match="path"):
        scan.traffic_bytes("ema", 1, 1, 10, 8, "chained")


def test_scan_glue_launch_sequence():
    """The steps scan_compute asks of its executor (a recording double): one single-pass launch per
    affine pass, or phase 1 + carry scan + phase 3; counts equal :func:`launches`."""
    from gpu_trader.cpu_fallback.scan import CpuScanExecutor
    from gpu_trader.kernels import scan

    class Recording(CpuScanExecutor):
        def __init__(self):
            self.steps = []

        def __getattribute__(self, attr):
            if attr in ("phase1", "phase3", "single_pass", "pairs_reduce", "pairs_expand", "pairs_serial"):
                object.__getattribute__(self, "steps").append(attr)
            return object.__getattribute__(self, attr)

    x = np.ascontiguousarray(random_ohlcv(2, 600, 4)[2])
    for name, params in (("ema", [[10.0]]), ("macd", [[12.0, 26.0, 9.0]]), ("sma", [[5.0]])):
        nc = 600 // 20
        for single_pass in (True, False):
            exe = Recording()
            scan.scan_compute(name, [x], np.array(params), N_OUT.get(name, 1), np, exe, chunk=20, pair_block=4,
                              single_pass=single_pass)
            path = "single_pass" if single_pass else "scan"
            assert len(exe.steps) == scan.launches(name, nc, path, pair_block=4), (name, path, exe.steps)
            if single_pass and name != "sma":
                assert exe.steps.count("single_pass") == N_OUT.get(name, 1) // 2 + 1
                assert "pairs_serial" not in exe.steps and exe.steps.count("phase3") == 0


def test_scan_names_are_the_indicators_with_scan_bodies():
    """Every indicator but STOCH has a scan path; SMA, WMA, Bollinger and VWAP are windowed
    (phase 3 only), the others affine (phase 1, carry scan, phase 3)."""
    from gpu_trader._internal import scan_loops

    assert scan_loops.SCAN_NAMES == set(SCAN)
    assert scan_loops.WINDOWED_NAMES == {"sma", "wma", "bollinger", "vwap"}


# -- simulator: the CUDA launcher on NumPy arrays, in a subprocess ----------------------------
class _Child:
    """This module run as a script in a subprocess, started early (see ``_children``) so that
    it works while the in-process tests run; ``result()`` waits for it."""

    def __init__(self, args, env, workdir: Path):
        self.workdir = workdir
        full_env = {**os.environ, **env}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
        self._out = open(workdir / "stdout.txt", "w+")
        self._err = open(workdir / "stderr.txt", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "ignore::RuntimeWarning", str(Path(__file__)), *args],
            env=full_env, stdout=self._out, stderr=self._err, text=True)

    def result(self, timeout=600):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._out.seek(0)
        self._err.seek(0)
        return rc, self._out.read(), self._err.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()


@pytest.fixture(scope="module", autouse=True)
def _children(request, tmp_path_factory):
    """Start the simulator and PTX subprocesses at the module's first test, if selected."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    children = {}
    if "test_simulator_matches_cpu" in selected:
        work = tmp_path_factory.mktemp("cudasim")
        children["sim"] = _Child(["--simulate", str(work)], {"NUMBA_ENABLE_CUDASIM": "1"}, work)
    if "test_kernels_compile_to_ptx" in selected:
        work = tmp_path_factory.mktemp("ptx")
        children["ptx"] = _Child(["--ptx"], {"NUMBA_ENABLE_CUDASIM": "0"}, work)
    yield children
    for child in children.values():
        child.close()


@pytest.fixture(scope="module")
def simulated(_children):
    child = _children["sim"]
    rc, out, err = child.result()
    assert rc == 0, out[-3000:] + err[-3000:]
    with np.load(child.workdir / "results.npz") as f:
        results = {k: f[k] for k in f.files}
    errors = json.loads((child.workdir / "errors.json").read_text())
    return results, errors


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(CASES))
def test_simulator_matches_cpu(simulated, case_id):
    results, errors = simulated
    assert case_id not in errors, errors.get(case_id)
    assert_close_to_cpu(results[case_id], cpu_reference(CASES[case_id]))


def _simulate_main(out_dir):
    import traceback

    from numba import config

    assert config.ENABLE_CUDASIM, "run with NUMBA_ENABLE_CUDASIM=1"
    from gpu_trader.kernels import indicators as ki
    from gpu_trader.kernels.launch import CudaExecutor

    results, errors = {}, {}
    for case_id, case in CASES.items():
        try:
            results[case_id] = run_case(case, np, ki.compute_xp, CudaExecutor)
        except Exception:  # reported per case by the parent
            errors[case_id] = traceback.format_exc()[-4000:]
    np.savez(Path(out_dir) / "results.npz", **results)
    (Path(out_dir) / "errors.json").write_text(json.dumps(errors))


# -- PTX for a real GPU -----------------------------------------------------------------------
KERNELS_DIR = ROOT / "gpu_trader" / "kernels"


def kernel_definitions() -> dict[str, set[int]]:
    """Every CUDA kernel defined in ``gpu_trader/kernels/*.py``, found in the source (so a new
    kernel is found without being listed anywhere): "file:def-line" -> the lines its code
    object may report (the ``def`` and each decorator). A kernel is a function decorated by
    a CUDA jit (``cuda.jit``, ``cuda_jit_cached(...)``, ...) without ``device=True``."""
    import ast
    import re

    found = {}
    for path in sorted(KERNELS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.FunctionDef):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if any(re.search(r"cuda[._]jit", d) and "device=True" not in d for d in decorators):
                found[f"{path.name}:{node.lineno}"] = {node.lineno, *(d.lineno for d in node.decorator_list)}
    return found


def test_kernel_discovery_finds_the_known_kernels():
    """The source scan sees the kernels of every module that has them (the PTX test relies on it)."""
    files = {key.split(":")[0] for key in kernel_definitions()}
    assert {"indicators.py", "marketdata.py", "montecarlo.py", "portfolio.py", "strategies.py"} <= files
    assert sum(key.startswith("indicators.py") for key in kernel_definitions()) >= 6  # rows + 5 scan steps


@pytest.mark.slow
def test_kernels_compile_to_ptx(_children):
    """Every kernel of ``gpu_trader/kernels`` (:func:`kernel_definitions`) compiles to sm_90 PTX
    through numba-cuda (the one supported CUDA target), with the argument types real launches
    use; needs numba-cuda and NVVM (the dev extras' ``numba-cuda[cu12]``), not a GPU."""
    rc, out, err = _children["ptx"].result()
    if rc == 3:
        pytest.skip("NVVM (CUDA toolkit) not available: " + out.strip()[-300:])
    if rc == 4:
        pytest.skip("numba-cuda is not installed (a dev extra: pip install -e '.[dev]')")
    assert rc == 0, out[-3000:] + err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    # 20 batch kernels (10 indicators x 2 dtypes) + 16 scan phases + 3 carry-scan steps + 4 float32 MACD phases
    assert report["indicator_kernels"] >= 40, report
    assert not report["failed"], report["failed"]
    missed = sorted(set(kernel_definitions()) - set(report["compiled"]))
    assert not missed, f"kernels no PTX driver compiled (add them to _PTX_DRIVERS): {missed}"


def _ptx_indicators(exe):
    """Every indicator kernel with the float64 argument types, the batch kernels and MACD's scan with float32 too."""
    from gpu_trader.kernels import indicators as ki

    for case_id, case in CASES.items():
        if case_id == "macd-float64-scan1-3phase":  # the three-phase steps (single_pass=False)
            run_case(case, np, ki.compute_xp, lambda xp, tpb: exe)
            continue
        if not (case_id.endswith("float64-rows") or case_id.endswith("float64-scan1")
                or case_id.endswith("float32-rows") or case_id == "macd-float32-scan1"):
            continue
        ki.compute_xp(case["name"], case["inputs"], case["params"], case["n_out"], xp=np, exe=exe,
                      path=case["path"], chunk=case["chunk"], pair_block=case["pair_block"] or 32)


def _ptx_marketdata(exe):
    from gpu_trader.kernels.marketdata import aggregate_bars_xp

    ts = np.arange(10, dtype=np.int64)
    aggregate_bars_xp(ts, np.ones(10), np.ones(10), np.zeros(10, np.int64), 5, 0, 2, 1, xp=np, exe=exe)


def _ptx_strategies(exe):
    from gpu_trader.kernels.strategies import backtest_xp, sweep_xp

    i = np.zeros(2, np.int64)
    for dtype in (np.float64, np.float32):
        backtest_xp(np.ones((3, 8), dtype), np.ones((2, 3, 8), dtype), i, i, i, np.zeros(2), 0.0, xp=np, exe=exe)
        sweep_xp(np.ones((3, 8), dtype), np.ones((2, 3, 8), dtype), i, i, i, np.zeros(2), 0.0, 15.9, xp=np, exe=exe)


def _ptx_portfolio(exe):
    from gpu_trader.kernels.portfolio import apply_fills_xp

    apply_fills_xp(np, np.zeros(4), np.zeros(4), np.zeros(4), np.ones((4, 2)), np.ones((4, 2)))


def _ptx_montecarlo(exe):
    from gpu_trader.kernels import montecarlo as g

    for dt in (np.float64, np.float32):
        g.normals(1, 0, 8, 5, dt, 5.0, xp=np, exe=exe)
        g.project(1, 0, 8, np.ones((3, 5), dt), dt, 5.0, exe=exe)
    o = {k: np.ones(2) for k in ("drift", "spot", "strike", "tau", "rate", "vol", "value0")}
    o.update(under=np.zeros(2, np.int64), is_call=np.ones(2, bool), n=2)
    for dt in (np.float64, np.float32):
        g.option_pnl(np.ones((1, 4), dt), o, dt, exe=exe)
        g.tail_update(np.full((2, 4), -np.inf, dt), np.full((2, 4), -1), np.ones((2, 8), dt), 0, exe=exe)


def _ptx_sizing(exe):
    from gpu_trader.kernels.sizing import rolling_extreme_xp, trailing_stop_xp

    p, start = np.ones((3, 8)), np.zeros(3, np.int64)
    trailing_stop_xp(np, p, None, start, 0.05, 0.0, False)
    rolling_extreme_xp(np, p, 3, False)


_PTX_DRIVERS = {"indicators": _ptx_indicators, "marketdata": _ptx_marketdata, "strategies": _ptx_strategies,
                "portfolio": _ptx_portfolio, "montecarlo": _ptx_montecarlo, "sizing": _ptx_sizing}


def _ptx_main():
    """Compile every kernel the drivers launch (through an executor or directly) to sm_90 PTX; print
    a JSON report: the kernels compiled ("file:def-line"), the indicator count, the failures."""
    import importlib
    import importlib.util
    import traceback
    import types

    if importlib.util.find_spec("numba_cuda") is None:
        print("numba-cuda is not installed")
        sys.exit(4)
    from numba.cuda.cudadrv import nvvm

    try:
        nvvm.NVVM()
    except Exception as exc:  # no libnvvm: the parent skips
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(3)
    import numba.cuda
    from numba import typeof
    from numba.cuda import dispatcher as cuda_dispatcher

    from gpu_trader.kernels import launch
    from gpu_trader.kernels.launch import PtxExecutor

    assert "numba_cuda" in numba.cuda.__file__, numba.cuda.__file__  # numba-cuda, not numba's built-in target
    compiled, failed = set(), []
    real_compile = numba.cuda.compile_ptx

    def recording_compile(pyfunc, sig, *args, **kwargs):
        ptx, resty = real_compile(pyfunc, sig, *args, **kwargs)
        code = pyfunc.__code__
        if ".target sm_90" not in ptx or ".entry" not in ptx:
            failed.append(f"{code.co_name} ({code.co_filename}:{code.co_firstlineno}): malformed PTX")
        compiled.add((Path(code.co_filename).name, code.co_firstlineno))
        return ptx, resty

    numba.cuda.compile_ptx = recording_compile
    exe = PtxExecutor(cc=(9, 0))

    def direct_launch(kernel, config):  # kernel[grid, block](*args) outside an executor: compiled, not run
        def compile_for(*args):
            fake = types.SimpleNamespace(compute_capability=exe.cc)
            saved = cuda_dispatcher.get_current_device
            cuda_dispatcher.get_current_device = lambda: fake
            try:
                recording_compile(kernel.py_func, tuple(typeof(a) for a in args), cc=exe.cc)
            finally:
                cuda_dispatcher.get_current_device = saved
        return compile_for

    cuda_dispatcher.CUDADispatcher.__getitem__ = direct_launch
    every_executor = lambda *args, **kwargs: exe  # noqa: E731 - whatever executor a module would build
    for name in sorted({key.split(".py:")[0] for key in kernel_definitions()}):  # the modules with kernels
        module = importlib.import_module(f"gpu_trader.kernels.{name}")
        for attr in ("CudaExecutor", "default_executor"):
            if module is not launch and hasattr(module, attr):
                setattr(module, attr, every_executor)
    n_indicator = 0
    for area, drive in _PTX_DRIVERS.items():
        try:
            drive(exe)
        except Exception:
            failed.append(f"{area}: {traceback.format_exc()[-1500:]}")
        if area == "indicators":
            n_indicator = len(exe.ptx)
    keys = [key for key, lines in kernel_definitions().items()
            if any((key.split(":")[0], line) in compiled for line in lines)]
    print(json.dumps({"compiled": keys, "indicator_kernels": n_indicator, "failed": failed}))


# -- device: a real GPU with CuPy ---------------------------------------------------------------
def _cuda_or_skip():
    import gpu_trader as gt

    if "cuda" not in gt.available_backends():
        pytest.skip("no CUDA device / CuPy on this machine")
    import cupy

    from gpu_trader.kernels import indicators as ki

    return cupy, ki


@pytest.mark.parametrize("case_id", list(CASES))
def test_device_matches_cpu(case_id):
    cupy, ki = _cuda_or_skip()
    from gpu_trader.kernels.launch import CudaExecutor

    got = run_case(CASES[case_id], cupy, ki.compute_xp, CudaExecutor)
    assert_close_to_cpu(cupy.asnumpy(got), cpu_reference(CASES[case_id]))


@pytest.mark.parametrize("name", SCAN)
def test_device_long_single_series_auto_scan(name):
    """200k bars of one series (x 2 parameter sets): the automatic choice is the scan."""
    cupy, ki = _cuda_or_skip()
    pick, grid = INDICATORS[name]
    data = ragged(1, 200_000, 21, np.float64)
    inputs = [data["hlcv".index(k)] for k in pick]
    params = np.array(grid[-2:], dtype=np.float64).reshape(len(grid[-2:]), -1)
    assert ki.choose_path(name, params.shape[0], 200_000) == "scan"
    got = ki.compute(name, [cupy.asarray(a) for a in inputs], params, N_OUT.get(name, 1))
    case = dict(name=name, inputs=inputs, params=params, n_out=N_OUT.get(name, 1))
    assert_close_to_cpu(cupy.asnumpy(got), cpu_reference(case))


def test_device_compute_many():
    cupy, ki = _cuda_or_skip()
    from gpu_trader.cpu_fallback import indicators as cpu

    h, l, c, v = random_ohlcv(4, 3000, 6)
    names = ["ema", "macd", "atr", "vwap", "stoch"]
    params = [np.array(INDICATORS[n][1], dtype=np.float64).reshape(len(INDICATORS[n][1]), -1) for n in names]
    fields = {"high": h, "low": l, "close": c, "volume": v}
    got = ki.compute_many(names, params, {k: cupy.asarray(a) for k, a in fields.items()})
    for g, r in zip(got, cpu.compute_many(names, params, fields)):
        assert_close_to_cpu(cupy.asnumpy(g), np.ascontiguousarray(r))


def test_device_float32_and_public_api():
    cupy, ki = _cuda_or_skip()
    import gpu_trader as gt

    h, l, c, v = random_ohlcv(3, 5000, 4, np.float32)
    out = gt.ema(cupy.asarray(c), [5, 20])
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32 and out.shape == (2, 3, 5000)
    ref = gt.ema(c, [5, 20], backend="cpu")
    assert_close_to_cpu(cupy.asnumpy(out)[None], ref[None])


if __name__ == "__main__":
    if sys.argv[1] == "--simulate":
        _simulate_main(sys.argv[2])
    elif sys.argv[1] == "--ptx":
        _ptx_main()
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
