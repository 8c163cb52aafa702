"""The ``end_to_end`` suite of ``gpu-trader bench`` under pytest-benchmark (``pytest benches``)."""
from mirror import test_reference, test_workload  # noqa: F401

SUITE = "end_to_end"
