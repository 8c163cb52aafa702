"""The ``market_data`` suite under pytest-benchmark (``pytest benches``); same tests as the features mirror."""
from __future__ import annotations

from test_features_bench import test_reference, test_workload  # noqa: F401

SUITE = "market_data"
