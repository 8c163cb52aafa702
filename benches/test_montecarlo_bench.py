"""The Monte Carlo VaR cases (suite ``risk_mc``) under pytest-benchmark (``pytest benches``)."""
from __future__ import annotations

import pytest

from gpu_trader.backend import get_backend
from gpu_trader.bench import SkipCase

SUITE = "risk_mc"


def test_workload(benchmark, workload, backend):
    """One call of the workload on ``backend``, device-synchronized; the first call
    (JIT compilation) runs before timing starts."""
    be = get_backend(backend)
    try:
        state = workload.setup(be)
    except SkipCase as exc:
        pytest.skip(str(exc))
    run, sync = workload.run, be.synchronize

    def call():
        run(state)
        sync()

    call()
    benchmark.group = workload.name
    benchmark.extra_info.update(sizes=dict(workload.sizes), device=be.device_name(), target=workload.target)
    benchmark(call)


def test_reference(benchmark, reference):
    """The reference library on the same data (host), for side-by-side comparison."""
    workload, ref = reference
    if ref.requires:
        pytest.importorskip(ref.requires)
    state = ref.setup()
    ref.run(state)
    benchmark.group = workload.name
    benchmark.extra_info.update(sizes=dict(workload.sizes), reference=ref.name)
    benchmark(ref.run, state)
