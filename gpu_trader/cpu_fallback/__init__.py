"""CPU implementations (NumPy + numba), one module per public module, and the thread policy
their parallel drivers share (docs/design.md#cpu-threads):

* :func:`run_on_threads` runs a kernel that claims its work as it goes on the calling thread
  and on helper threads of this package, and never waits for a helper that has not started;
* the batched indicator driver (:mod:`gpu_trader.cpu_fallback.indicators`) uses at most
  :func:`usable_cpus` threads (and numba's thread count); the ``prange`` kernels use numba's
  thread count;
* importing this package (the first use of the ``cpu`` backend, or
  ``get_backend("cpu").configure_process()``) sets ``OMP_WAIT_POLICY=PASSIVE`` when the
  process has not set that variable (:func:`prefer_passive_waits`). numba's OpenMP threading
  layer (the kernels that use ``prange``) otherwise lets its idle workers spin for milliseconds
  after every parallel call; on a busy machine that spinning takes a core from the threads the
  next call needs. It takes effect only if numba has not started its OpenMP pool yet (the first
  parallel call of the process), and never overrides a value the user set (``ACTIVE`` restores
  the spinning).
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

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


@functools.lru_cache(maxsize=1)
def _helpers() -> ThreadPoolExecutor:
    """The helper threads (numba's maximum thread count less the caller), started on first use."""
    import numba

    return ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),
                              thread_name_prefix="gpu_trader_cpu")


class _SharedCall:
    """One kernel call that helper threads may join until the caller closes it. The helpers'
    queue entries hold this object, not the call's arguments, and closing drops the arguments:
    a helper that has not started, or that has returned but not yet let go of its queue entry,
    keeps none of the call's arrays (its output buffer) alive after the call returns."""

    __slots__ = ("kernel", "args")

    def __init__(self, kernel, args: tuple):
        self.kernel, self.args = kernel, args

    def join(self, k: int) -> None:
        """``kernel(*args, k)`` unless the call is closed. A helper that gets here is running,
        so the caller waits for it (its future can no longer be cancelled)."""
        args = self.args
        if args is not None:
            self.kernel(*args, k)

    def close(self) -> None:
        self.args = None


def run_on_threads(kernel, threads: int, *args) -> None:
    """``kernel(*args, k)`` for k = 0 .. threads - 1: k = 0 on the calling thread, the others on
    helper threads. For kernels (compiled with ``nogil``) that claim their work from a shared
    counter, so that any one of them can finish all of it: a helper that has not started by the
    time the caller is done is cancelled (or finds the call closed), never waited for, so a thread
    slow to wake (a busy machine, a VM whose host deschedules an idle vCPU) delays nothing; a
    started one is waited for, as it finishes the work it claimed. No reference to ``args``
    outlives the call. Exceptions of the kernels propagate."""
    call = _SharedCall(kernel, args)
    pending = [_helpers().submit(call.join, k) for k in range(1, threads)]
    try:
        kernel(*args, 0)
    finally:
        call.close()
        for future in pending:
            if not future.cancel():
                future.result()


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads
    os.register_at_fork(after_in_child=_helpers.cache_clear)
prefer_passive_waits()
