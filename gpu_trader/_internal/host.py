"""Reading a device value on the host, for the array-namespace (``*_xp``) code and the checks.

Depends on nothing in the package, so any internal module may import it.
"""
from __future__ import annotations

import sys
from typing import Any

__all__ = ["host_bool"]


def host_bool(x: Any) -> bool | None:
    """``bool(x)`` of a 0-d array, read on the host; ``None`` inside a ``jax.jit`` trace, where
    the value does not exist yet (callers then skip a data-dependent check, or take the
    branch that is right for any data)."""
    try:
        return bool(x)
    except Exception as exc:
        jax = sys.modules.get("jax")
        if jax is not None and isinstance(exc, jax.errors.ConcretizationTypeError):
            return None
        raise
