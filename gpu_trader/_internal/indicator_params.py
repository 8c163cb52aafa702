"""Validation of indicator parameters, as positional arguments or as a feature-spec entry.

Shared by :mod:`gpu_trader.indicators` (the batch functions and ``features``),
:mod:`gpu_trader.streaming` (``FeatureStream`` specs) and :mod:`gpu_trader.distributed`,
so a parameter is checked the same way wherever it is given. The table of parameters
(names, defaults, minimums) is :data:`gpu_trader._internal.indicator_specs.PARAMETERS`.

Both checks return one ``(values, is_grid)`` pair per parameter, in signature order:
``values`` is a tuple of the validated numbers (``int`` for windows and periods, ``float``
for real parameters such as Bollinger's ``nstd``), ``is_grid`` is True when the parameter
was given as a sequence (a parameter grid axis).
"""
from __future__ import annotations

from typing import Any, Mapping

from . import indicator_specs
from .validation import MAX_WINDOW, check_floats, check_grid_size, check_windows

__all__ = ["check_params", "check_params_by_name"]


def check_params(name: str, *values) -> list[tuple[tuple[float, ...], bool]]:
    """Validate indicator ``name``'s parameter values, given in signature order: integers in
    ``[minimum, MAX_WINDOW]`` for windows and periods, real numbers otherwise, and a grid of
    at most ``MAX_GRID`` parameter sets (``TypeError``/``ValueError`` naming the parameter)."""
    out = []
    for (pname, _, minimum), value in zip(indicator_specs.PARAMETERS[name], values):
        if minimum is None:
            out.append(check_floats(value, pname))
        else:
            out.append(check_windows(value, pname, minimum, MAX_WINDOW))
    check_grid_size([len(v) for v, _ in out], name)
    return out


def check_params_by_name(
    name: str, params: Mapping[str, Any], where: str = "spec"
) -> list[tuple[tuple[float, ...], bool]]:
    """Validate a mapping ``{parameter name: value}`` for indicator ``name`` exactly as the
    public function would check its arguments, defaults filled in; ``where`` prefixes the
    ``ValueError`` for an unknown or a missing required parameter name."""
    table = indicator_specs.PARAMETERS[name]
    names = [p[0] for p in table]
    unknown = set(params) - set(names)
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {sorted(unknown)} for {name}; expected {names}")
    values = []
    for pname, default, _ in table:
        value = params.get(pname, default)
        if value is None:
            raise ValueError(f"{where}: {name} needs parameter {pname!r}")
        values.append(value)
    return check_params(name, *values)
