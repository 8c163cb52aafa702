"""CPU implementations (NumPy + numba), one module per public module, and the thread policy
their parallel drivers share (docs/design.md#cpu-threads):

* importing this package (the first use of the ``cpu`` backend, or
  ``get_backend("cpu").configure_process()``) sets ``OMP_WAIT_POLICY=PASSIVE`` when the
  process has not set that variable (:func:`prefer_passive_waits`). numba's OpenMP threading
  layer otherwise lets its idle workers spin for milliseconds after every parallel call; on a
  busy machine that spinning takes a core from the thread the next call waits for. It takes
  effect only if numba has not started its OpenMP pool yet (the first parallel call of the
  process), and never overrides a value the user set (``ACTIVE`` restores the spinning);
* a parallel driver runs on at most :func:`usable_cpus` threads (and numba's thread count).
"""
from __future__ import annotations

import os

WAIT_POLICY_VAR = "OMP_WAIT_POLICY"


def prefer_passive_waits() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the environment already has the variable (any value)."""
    os.environ.setdefault(WAIT_POLICY_VAR, "PASSIVE")


def usable_cpus() -> int:
    """CPUs this process may run on now (``os.sched_getaffinity``, read on every call: a
    process can be re-pinned; ``os.cpu_count()`` where there is no affinity API), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


prefer_passive_waits()
