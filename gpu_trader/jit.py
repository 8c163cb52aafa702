"""numba compilation with an on-disk cache that follows the package's source.

numba's own cache is keyed by the source file of the jitted function only, so a
driver compiled against an older version of :mod:`gpu_trader.indicator_math`
would keep being loaded after that module changed. :func:`njit_cached` compiles
with ``cache=True`` into a directory named after a hash of the package's compute
modules (all but the benchmark harness and the CLI, which hold no jitted code),
so any change to them (an upgrade, a local edit) starts a fresh cache.

The directory is ``$GPU_TRADER_CACHE_DIR`` if set, else
``~/.cache/gpu-trader/numba/<hash>``. The user's own numba cache settings are
left untouched.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_NOT_HASHED = ("bench", "cli.py")  # no jitted code there: editing them keeps the cache


@functools.lru_cache(maxsize=1)
def cache_dir() -> str:
    """The numba cache directory for this exact version of the package's source."""
    digest = hashlib.sha1()
    for path in sorted(_PACKAGE.rglob("*.py")):
        if path.relative_to(_PACKAGE).parts[0] in _NOT_HASHED:
            continue
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    root = os.environ.get("GPU_TRADER_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gpu-trader", "numba"
    )
    return os.path.join(root, digest.hexdigest()[:16])


def njit_cached(**options):
    """``numba.njit(cache=True, **options)`` with the cache in :func:`cache_dir`."""
    import numba
    from numba.core import config

    def decorate(fn):
        previous = config.CACHE_DIR
        config.CACHE_DIR = cache_dir()
        try:
            return numba.njit(cache=True, **options)(fn)
        finally:
            config.CACHE_DIR = previous

    return decorate
