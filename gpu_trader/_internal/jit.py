"""numba compilation with an on-disk cache that follows the package's source.

numba's own cache is keyed by the source file of the jitted function only, so a
driver compiled against an older version of :mod:`gpu_trader._internal.indicator_loops`
would keep being loaded after that module changed. :func:`njit_cached` compiles
with ``cache=True`` into a directory named after a hash of the packages that hold
compiled code and everything it reads (``_internal/``, ``cpu_fallback/``,
``kernels/``: the public modules hold none, see docs/architecture.md), so any change
to them (an upgrade, a local edit) starts a fresh cache, and an edit of a public
module keeps it.

The cache root is ``$GPU_TRADER_CACHE_DIR`` if set (an empty value counts as
unset), else ``~/.cache/gpu-trader/numba``; the cache lives in ``<root>/<hash>``.
A root that cannot be created or written (a file, a read-only mount, a bad path)
gives one :class:`CacheDirWarning` and the cache goes to
``<temporary directory>/gpu-trader-<uid>/numba/<hash>`` instead; when that fails
too, functions are compiled without a disk cache (a second warning). The cache is
never written inside the installed package: numba would otherwise fall back to a
``__pycache__`` next to the source, so only the chosen directory is offered to it.
The user's own numba cache settings are left untouched.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from pathlib import Path

__all__ = ["CacheDirWarning", "ENV_VAR", "cache_dir", "njit_cached", "cuda_jit_cached"]

ENV_VAR = "GPU_TRADER_CACHE_DIR"
_PACKAGE = Path(__file__).resolve().parent.parent
# The packages whose source compiled code can depend on. Jitted functions live only there and
# import nothing from the public modules (tests/test_jit_cache.py checks both).
HASHED_PACKAGES = ("_internal", "cpu_fallback", "kernels")


class CacheDirWarning(UserWarning):
    """The numba cache directory could not be used; another one (or none) is."""


def _source_hash() -> str:
    digest = hashlib.sha1()
    for path in sorted(p for name in HASHED_PACKAGES for p in (_PACKAGE / name).rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _usable(path: str) -> str | None:
    """Why ``path`` cannot hold the cache (created if missing, a file written and
    removed there, outside the package); ``None`` when it can."""
    try:
        resolved = Path(path).resolve()
        if resolved == _PACKAGE or _PACKAGE in resolved.parents:
            return "it is inside the gpu_trader package"
        os.makedirs(resolved, exist_ok=True)
        tempfile.TemporaryFile(dir=resolved).close()
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte
        return f"{type(exc).__name__}: {exc}"
    return None


def _user_root() -> str:
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(os.path.expanduser("~"), ".cache", "gpu-trader", "numba")


def _fallback_root() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"gpu-trader-{uid}", "numba")


@functools.lru_cache(maxsize=1)
def cache_dir() -> str | None:
    """The numba cache directory for this exact version of the package's source, or
    ``None`` when no usable directory was found (compiled code is then not cached).
    Chosen once per process; see the module docstring for the order tried."""
    leaf = _source_hash()
    user = os.path.join(_user_root(), leaf)
    problem = _usable(user)
    if problem is None:
        return user
    fallback = os.path.join(_fallback_root(), leaf)
    source = f"${ENV_VAR}" if os.environ.get(ENV_VAR, "").strip() else "the default cache directory"
    second = _usable(fallback)
    if second is None:
        warnings.warn(f"gpu-trader: cannot use {source} {user!r} for numba's cache ({problem}); "
                      f"caching in {fallback!r} instead", CacheDirWarning, stacklevel=2)
        return fallback
    warnings.warn(f"gpu-trader: cannot use {source} {user!r} ({problem}) nor {fallback!r} ({second}) for numba's "
                  "cache; compiled functions are not cached on disk", CacheDirWarning, stacklevel=2)
    return None


def _user_provided_locator() -> str:
    """The dotted name of numba's locator for ``config.CACHE_DIR`` (its only cache location we allow)."""
    from numba.core import caching

    cls = getattr(caching, "UserProvidedCacheLocator", None) or getattr(caching, "_UserProvidedCacheLocator")
    return f"{cls.__module__}.{cls.__qualname__}"


def _config_modules():
    """numba's config modules whose ``CACHE_DIR`` a cache locator reads: numba's, and
    numba-cuda's own (``numba.cuda.core.config``) where numba-cuda provides the CUDA target."""
    from numba.core import config

    modules = [config]
    try:
        from numba.cuda.core import config as cuda_config
    except ImportError:  # numba's built-in CUDA target reads numba.core.config
        pass
    else:
        if cuda_config is not config:
            modules.append(cuda_config)
    return modules


def _compile_cached(jit, fn, options):
    """``jit(cache=True, **options)(fn)`` with the cache in :func:`cache_dir` and nowhere
    else; ``jit(**options)(fn)`` without a disk cache when there is none."""
    directory = cache_dir()
    if directory is None:
        return jit(**options)(fn)
    configs = _config_modules()
    saved = [(c, c.CACHE_DIR, getattr(c, "CACHE_LOCATOR_CLASSES", None)) for c in configs]
    for c, _, locators in saved:
        c.CACHE_DIR = directory
        if locators is not None:  # where numba has the setting: offer it no in-tree fallback at all
            c.CACHE_LOCATOR_CLASSES = _user_provided_locator()
    try:
        return jit(cache=True, **options)(fn)
    except RuntimeError as exc:  # the directory vanished since it was checked: no locator
        warnings.warn(f"gpu-trader: numba cannot cache {fn.__qualname__} in {directory!r} ({exc}); "
                      "compiling it without a disk cache", CacheDirWarning, stacklevel=3)
        return jit(**options)(fn)
    finally:
        for c, cache, locators in saved:
            c.CACHE_DIR = cache
            if locators is not None:
                c.CACHE_LOCATOR_CLASSES = locators


def njit_cached(**options):
    """``numba.njit(cache=True, **options)`` with the cache in :func:`cache_dir` and
    nowhere else; ``numba.njit(**options)`` without a disk cache when there is none."""
    import numba

    return lambda fn: _compile_cached(numba.njit, fn, options)


def cuda_jit_cached(**options):
    """``numba.cuda.jit(cache=True, **options)`` for kernels, cached like :func:`njit_cached`
    (same directory, same source hash), so a process loads the kernels an earlier one compiled
    for its device instead of recompiling them. Kernels built in a factory (closures) are
    cached per closure content (numba keys the index by the closed-over values). numba's CUDA
    simulator ignores the cache."""
    from numba import cuda

    return lambda fn: _compile_cached(cuda.jit, fn, options)
