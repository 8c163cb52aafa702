"""pytest-benchmark mirrors of ``gpu-trader bench``: the same Workload objects.

A test module sets ``SUITE = "<name>"`` and takes the fixtures below:

* ``workload``: each workload of that suite (quick sizes under ``--benchmark-disable``,
  where every test runs once, so the mirror doubles as a fast smoke test; otherwise the
  standard sizes of ``gpu-trader bench``'s default run);
* ``reference``: each ``(workload, reference)`` pair of that suite;
* ``backend``: each backend name, skipped where the backend is absent.
"""
from __future__ import annotations

import pytest

from gpu_trader.backend import available_backends
from gpu_trader.bench import workloads

ALL_BACKENDS = ("cpu", "cuda")


def _size(config) -> str:
    return "quick" if config.getoption("benchmark_disable") else "standard"


def pytest_generate_tests(metafunc):
    names = metafunc.fixturenames
    if "workload" not in names and "reference" not in names:
        return
    wls = workloads(metafunc.module.SUITE, _size(metafunc.config))
    if "workload" in names:
        metafunc.parametrize("workload", wls, ids=[w.name for w in wls])
    if "reference" in names:
        pairs = [(w, r) for w in wls for r in w.references]
        metafunc.parametrize("reference", pairs, ids=[f"{w.name}-{r.name}" for w, r in pairs])


@pytest.fixture(params=ALL_BACKENDS)
def backend(request) -> str:
    """Name of one backend; skipped where that backend is not present."""
    if request.param not in available_backends():
        pytest.skip(f"backend {request.param!r} is not available on this machine")
    return request.param
