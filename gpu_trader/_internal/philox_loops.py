"""Counter-based random numbers for the GPU Monte Carlo kernels, written once for every compiler.

Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the
generator behind cuRAND's ``PHILOX4_32_10``) maps a 128-bit counter and a 64-bit key to 128
random bits with no state, so any thread can draw the numbers of any scenario directly: the
kernels of :mod:`gpu_trader.kernels.montecarlo` generate their normals in registers and never
write a scenario matrix out. The functions are plain Python decorated with numba's
``register_jitable``: ``numba.cuda.jit`` compiles them into the kernels, ``numba.njit`` into the
tests' CPU reference, and numba's CUDA simulator runs them as Python (every intermediate fits in
a ``uint64``, so nothing overflows there either).

Streams (``key`` from the seed, :func:`seed_key`; ``s`` the scenario number, split into its low
and high 32 bits):

* normals: asset pair ``q`` (assets ``2q``, ``2q + 1``) of scenario ``s`` is counter
  ``(s_lo, s_hi, q, 0)``; its four words give two 53-bit uniforms in ``(0, 1)`` and the
  Box-Muller pair ``sqrt(-2 ln u1) (cos, sin)(2 pi u2)`` (:func:`normal_pair`);
* Student-t mixing factor: attempt ``a`` of scenario ``s`` draws a normal from counter
  ``(s_lo, s_hi, a, 1)`` and a uniform from ``(s_lo, s_hi, a, 2)`` for Marsaglia and Tsang's
  gamma sampler (:func:`chi2_draw`; ``dof > 2``, so the shape ``dof / 2 > 1``).

So a scenario's numbers do not depend on chunking, thread layout or the path (fused or GEMM)
that consumes them.
"""
from __future__ import annotations

import math

import numpy as np
from numba import float64 as f64
from numba import uint64 as u64
from numba.extending import register_jitable

__all__ = ["philox4x32", "uniform53", "normal_pair", "scenario_normal_pair", "chi2_draw", "t_factor", "seed_key",
           "MAX_GAMMA_ATTEMPTS"]

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_SHIFT21 = np.uint64(21)
_TWO_PI = 6.283185307179586
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53
MAX_GAMMA_ATTEMPTS = 256  # Marsaglia-Tsang accepts > 95 % of attempts at shape > 1: 256 rejections never happen


@register_jitable
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter words ``c0..c3`` and key words ``k0, k1`` (each a ``uint64``
    holding 32 bits); returns the four 32-bit output words as ``uint64``."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _SHIFT32) ^ c1 ^ k0), (p1 & _MASK32), ((p0 >> _SHIFT32) ^ c3 ^ k1), (p0 & _MASK32)
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


@register_jitable
def uniform53(hi, lo):
    """The uniform in ``(0, 1)`` of the 53 bits ``hi[31:0] lo[31:11]``, centred in its cell (never 0 or 1)."""
    return (f64((hi << _SHIFT21) | (lo >> np.uint64(11))) + 0.5) * _TWO_M53


@register_jitable
def normal_pair(c0, c1, c2, c3, k0, k1):
    """Two independent standard normals (Box-Muller) from the Philox block at counter ``c``, key ``k``."""
    w0, w1, w2, w3 = philox4x32(c0, c1, c2, c3, k0, k1)
    r = math.sqrt(-2.0 * math.log(uniform53(w0, w1)))
    t = _TWO_PI * uniform53(w2, w3)
    return r * math.cos(t), r * math.sin(t)


@register_jitable
def scenario_normal_pair(s, q, k0, k1):
    """The normals of assets ``2q`` and ``2q + 1`` in scenario ``s`` (both ``int64``, ``s >= 0``)."""
    su = u64(s)
    return normal_pair(su & _MASK32, su >> _SHIFT32, u64(q), u64(0), k0, k1)


@register_jitable
def chi2_draw(s, dof, k0, k1):
    """A chi-square variate with ``dof > 2`` degrees of freedom for scenario ``s``: ``2 Gamma(dof / 2)``
    by Marsaglia and Tsang (2000) on the scenario's own counters; see the module docstring."""
    su = u64(s)
    lo, hi = su & _MASK32, su >> _SHIFT32
    d = 0.5 * dof - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    for a in range(MAX_GAMMA_ATTEMPTS):
        x = normal_pair(lo, hi, u64(a), u64(1), k0, k1)[0]
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        w0, w1, _, _ = philox4x32(lo, hi, u64(a), u64(2), k0, k1)
        u = uniform53(w0, w1)
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return 2.0 * d * v
    return 2.0 * d  # unreachable in practice (probability < 0.05 ** 256): the gamma's mode


@register_jitable
def t_factor(s, dof, k0, k1):
    """The Student-t mixing factor ``sqrt((dof - 2) / chi2_dof)`` of scenario ``s`` (unit variance)."""
    return math.sqrt((dof - 2.0) / chi2_draw(s, dof, k0, k1))


def seed_key(seed: int) -> tuple[int, int]:
    """The two 32-bit key words of ``seed`` (``numpy.random.SeedSequence``, so nearby seeds give unrelated keys)."""
    k = np.random.SeedSequence(seed).generate_state(2, np.uint32)
    return int(k[0]), int(k[1])
