#!/usr/bin/env bash
# shellcheck disable=SC2317  # the step functions run through "--step NAME" (indirectly)
# The first thing a lent H100/H200 runs (documented in benches/results/README.md): under 10 minutes,
# every step time-boxed (10 s more each to be killed), everything written under $OUT (default: ./gpu-first-run).
#
#   bash benches/gpu_first_run.sh            # on the GPU machine, from the repository root
#   bash benches/gpu_first_run.sh --dry      # here, without a GPU: the same steps on the cpu backend,
#                                            # tiny sizes, no install (tests/test_packaging_first_run.py)
#
# Steps (seconds allowed):
#   1 env      (15)  nvidia-smi, Python, the installed GPU stack            -> env.txt
#   2 install  (60)  what the image lacks, from ./wheelhouse only (no network there) -> install.log
#   3 smoke    (90)  the device answers: one indicator (first call = compile or the on-disk
#                    kernel cache), one Monte Carlo VaR, one exact k-NN, checked  -> smoke.json
#   4 tests    (170) the cuda test selection (device tests, every backend-parametrized case)
#                                                                           -> tests.log, tests.xml
#   5 bench    (130) gpu-trader bench --backend cuda --quick                 -> bench-cuda-quick.json
#   6 mc       (75)  Monte Carlo 1000 assets x 1M scenarios at 1/100/1000 portfolios -> mc-scaling.json
# A step that fails or runs out of time is recorded in summary.txt and the next one still runs;
# the exit status is the number of failed steps. Each step's output is in $OUT/STEP.log.
# From a session with the device tool: run(command='bash benches/gpu_first_run.sh', carry=['wheelhouse'])
# (there $OUT is already set: the folder whose files come back).
#
# Filling ./wheelhouse here (the device machine reaches no package index): only what its image
# lacks, for its Python (check with `python3 -V` there; carry limits the folder to 64 MiB, so
# leave out what the image has, usually CuPy and the CUDA wheels):
#   .venv/bin/pip download -d wheelhouse --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       pytest hypothesis msgspec threadpoolctl
#   .venv/bin/pip download -d wheelhouse --no-deps --only-binary=:all: empyrical-reloaded
# Step 2 installs from it, with --no-index, whatever of REQUIRED does not import.
set -uo pipefail

export DRY="${DRY:-0}"
[[ "${1:-}" == "--dry" ]] && DRY=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-first-run}"
PY="${PYTHON:-python3}"
[[ -x "$ROOT/.venv/bin/python" && -z "${PYTHON:-}" ]] && PY="$ROOT/.venv/bin/python"
WHEELHOUSE="${WHEELHOUSE:-$ROOT/wheelhouse}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GPU_TRADER_CACHE_DIR="${GPU_TRADER_CACHE_DIR:-$OUT/kernel-cache}"
unset GPU_TRADER_BACKEND  # every step names its backend

if (( DRY )); then
    BACKEND=cpu; BENCH_ARGS=(--suite portfolio --case "unrealized P&L, one position" --quick); MC_ARGS=(--assets 20 --scenarios 20000 --portfolios 1 10 --repeats 1)
    TEST_SELECTION=(tests/test_backend.py -k "resolution_order")
else
    BACKEND=cuda; BENCH_ARGS=(--quick); MC_ARGS=(--assets 1000 --scenarios 1000000 --portfolios 1 100 1000)
    TEST_SELECTION=(tests/test_cuda_kernels.py tests/test_montecarlo.py tests/test_vectors.py tests/test_risk.py
                    tests/test_correlation.py tests/test_marketdata.py tests/test_portfolio.py tests/test_strategies.py
                    tests/test_indicators.py -m "not slow" -k "cuda or device or gpu")
fi
# import name -> wheel to install from the wheelhouse when it does not import
REQUIRED=(numpy:numpy numba:numba msgspec:msgspec threadpoolctl:threadpoolctl pytest:pytest hypothesis:hypothesis
          empyrical:empyrical-reloaded)
GPU_REQUIRED=(cupy:cupy-cuda12x numba_cuda:numba-cuda)

FAILED=0

step() {  # step NAME SECONDS FUNCTION: run FUNCTION in a fresh copy of this script, time-boxed,
          # its output in $OUT/NAME.log; record the outcome
    local name=$1 limit=$2 fn=$3
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" bash "${BASH_SOURCE[0]}" --step "$fn" > "$OUT/$name.log" 2>&1
    rc=$?
    local verdict=ok
    (( rc == 124 || rc == 137 )) && verdict="timed out after ${limit}s"
    (( rc != 0 && rc != 124 && rc != 137 )) && verdict="failed (exit $rc)"
    [[ $verdict != ok ]] && FAILED=$((FAILED + 1))
    printf '%-8s %-28s %4ds\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$OUT/summary.txt"
}

env_report() {
    { date -u; uname -a; "$PY" -V
      command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
      "$PY" -m pip list 2> /dev/null | grep -i -E "cupy|numba|cuda|nvidia|numpy|faiss|cuml|cudf|pytest|hypothesis"
    } > "$OUT/env.txt" 2>&1
}

install_missing() {
    local pairs=("${REQUIRED[@]}") missing=() pair
    (( DRY )) || pairs+=("${GPU_REQUIRED[@]}")
    for pair in "${pairs[@]}"; do
        "$PY" -c "import ${pair%%:*}" 2> /dev/null || missing+=("${pair#*:}")
    done
    echo "missing: ${missing[*]:-none}"
    (( ${#missing[@]} == 0 )) && return 0
    if (( DRY )); then echo "dry run: would install ${missing[*]} from $WHEELHOUSE"; return 0; fi
    [[ -d "$WHEELHOUSE" ]] || { echo "no $WHEELHOUSE: fill it as the header says"; return 1; }
    # empyrical-reloaded declares peewee, which it never imports and which has no wheel
    "$PY" -m pip install --no-index --find-links "$WHEELHOUSE" --no-deps "${missing[@]}"
}

smoke() {
    "$PY" - "$BACKEND" "$OUT/smoke.json" <<'EOF'
import json, sys, time
import numpy as np
import gpu_trader as gt

name, out = sys.argv[1], sys.argv[2]
be = gt.get_backend(name)
report = {"backend": be.name, "device": be.device_name()}
rng = np.random.default_rng(0)
close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (64, 2520)), axis=1))
t0 = time.perf_counter()
got = be.to_numpy(gt.ema(be.asarray(close), [20], backend=name))
report["ema_first_call_s"] = time.perf_counter() - t0  # compile (or the on-disk kernel cache) + run
ref = gt.ema(close, [20], backend="cpu")
report["ema_max_rel_err"] = float(np.nanmax(np.abs(got - ref) / np.abs(ref)))
cov = np.diag(rng.uniform(1e-4, 4e-4, 50))
var = gt.var_monte_carlo(be.asarray(rng.uniform(0, 1e4, 50)), be.asarray(np.zeros(50)), be.asarray(cov),
                         n_scenarios=200_000, seed=3, backend=name)
report["mc_var"] = float(be.to_numpy(var.var))
db = rng.standard_normal((10_000, 64)).astype(np.float32)
index = gt.VectorIndex(64, "l2", backend=name)
index.add(be.asarray(db))
_, ids = index.search(be.asarray(db[:5]), 1)
report["knn_self_match"] = bool((be.to_numpy(ids)[:, 0] == np.arange(5)).all())
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report))
assert report["ema_max_rel_err"] < 1e-9 and report["knn_self_match"], report
EOF
}

run_tests() {
    "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUT/tests.xml" "${TEST_SELECTION[@]}"
}

bench() {
    "$PY" -m gpu_trader.cli bench --backend "$BACKEND" "${BENCH_ARGS[@]}" --json "$OUT/bench-$BACKEND-quick.json"
}

mc_scaling() {
    "$PY" "$ROOT/benches/mc_scaling.py" --backend "$BACKEND" "${MC_ARGS[@]}" --json "$OUT/mc-scaling.json"
}

cd "$ROOT" || exit 1
if [[ "${1:-}" == "--step" ]]; then
    "$2"
    exit
fi
: > "$OUT/summary.txt"
step env 15 env_report
step install 60 install_missing
step smoke 90 smoke
step tests 170 run_tests
step bench 130 bench
step mc 75 mc_scaling
echo "failed steps: $FAILED (outputs in $OUT)" | tee -a "$OUT/summary.txt"
exit "$FAILED"
