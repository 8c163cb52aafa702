"""The ``trajectories`` suite of ``gpu-trader bench`` under pytest-benchmark (``pytest benches``)."""
from mirror import test_reference, test_workload  # noqa: F401

SUITE = "trajectories"
