"""Shared fixtures: every backend present runs the same tests; absent ones skip cleanly."""
from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from hypothesis import settings

import gpu_trader as gt
from gpu_trader.backend import _REGISTRY

# The jax backend needs JAX's 64-bit mode; switching it on here (before JAX is imported)
# keeps the backend's one-time warning out of every test (tests/test_jax_backend.py checks it).
os.environ.setdefault("JAX_ENABLE_X64", "1")

# CI replays the same examples every run (a failure there is reproducible, never a fluke of
# the draw); locally hypothesis explores new ones each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ALL_BACKENDS = ("cpu", "cuda", "jax")
# The shared suite's jax cases compile with XLA per shape and parameter set (seconds each, no
# cache across processes): `make test-fast` leaves them out (the jax backend keeps its quick
# cases in test_jax_backend.py and test_jax_indicators.py); `make test` and CI run them all.
SLOW_BACKENDS = {"jax": pytest.mark.slow}


def pytest_generate_tests(metafunc):
    """Parametrize ``backend`` over every backend that implements the test module's ``AREA``
    (a module without one runs on every backend): a backend that lacks an area is not
    collected for it at all, rather than skipped. Cases of a backend in ``SLOW_BACKENDS`` are
    marked ``slow``."""
    if "backend" not in metafunc.fixturenames:
        return
    area = getattr(metafunc.module, "AREA", None)
    names = [n for n in ALL_BACKENDS if area is None or _REGISTRY[n].supports(area)]
    metafunc.parametrize("backend", [pytest.param(n, marks=SLOW_BACKENDS.get(n, ())) for n in names], indirect=True)


@pytest.fixture
def backend(request) -> str:
    """Name of one backend; the test is skipped where that backend is not present."""
    if request.param not in gt.available_backends():
        pytest.skip(f"backend {request.param!r} is not available on this machine")
    return request.param


def on_backend(backend: str, *arrays):
    """Move NumPy arrays to ``backend``'s array type."""
    be = gt.get_backend(backend)
    out = tuple(be.asarray(a) for a in arrays)
    return out if len(out) > 1 else out[0]


class FirstAnswerLost:
    """A venue adapter around ``inner`` (a :class:`~gpu_trader.brokers.SimulatedBroker`) that
    processes every request, but whose answer to an order's first submission never comes:
    the order is in doubt. ``status=False``: an adapter without ``status`` (its orders in
    doubt cannot be asked about)."""

    def __init__(self, inner, status: bool = True, name: str = "lossy") -> None:
        self.inner, self.name, self.seen = inner, name, set()
        if status:
            self.status = inner.status

    async def submit(self, order):
        ack = await self.inner.submit(order)
        if order.client_order_id not in self.seen:
            self.seen.add(order.client_order_id)
            await asyncio.sleep(3600)
        return ack

    async def cancel(self, cid):
        return await self.inner.cancel(cid)


def venue_book(brokers, cash: float, symbols=()):
    """The oracle of reconciliation: positions (``symbols`` start at 0) and cash (starting
    from ``cash``, gross of commissions) that the fills recorded by ``brokers`` (simulated
    venues, or one) imply."""
    pos, flows = dict.fromkeys(symbols, 0.0), cash
    for broker in brokers if isinstance(brokers, (list, tuple)) else (brokers,):
        for _, symbol, signed, price in broker.fills():
            pos[symbol] = pos.get(symbol, 0.0) + signed
            flows -= signed * price
    return pos, flows


def random_ohlcv(n_series: int, n_bars: int, seed: int = 0, dtype=np.float64):
    """Geometric random-walk OHLCV bars, shape (n_series, n_bars) each, strictly positive prices."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_series, n_bars)), axis=-1))
    spread = rng.uniform(0.0, 0.01, (2, n_series, n_bars))
    high = close * (1.0 + spread[0])
    low = close * (1.0 - spread[1])
    volume = rng.integers(1, 10_000, (n_series, n_bars)).astype(np.float64)
    return tuple(a.astype(dtype) for a in (high, low, close, volume))


_PTX_PRELUDE = """
import sys
import numpy as np
from numba.cuda.cudadrv import nvvm
try:
    nvvm.NVVM()
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(3)
"""


def assert_compiles_to_ptx(body: str) -> None:
    """Run ``body`` (code that compiles real CUDA kernels to PTX and asserts on the result)
    in a fresh interpreter with the CUDA simulator off; skip where NVVM (the CUDA
    toolkit's compiler library, no GPU needed) is missing."""
    import subprocess
    import sys
    import textwrap

    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    script = _PTX_PRELUDE + textwrap.dedent(body) + '\nprint("ok")\n'
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode == 3:
        pytest.skip("NVVM (CUDA toolkit) not available: " + proc.stdout.strip()[-300:])
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-2000:]
