"""Field types and size rules shared by every decoder of market messages (the project's own
tick/quote JSON in :mod:`gpu_trader.marketdata`, the vendor formats in
:mod:`gpu_trader._internal.feed_formats`)."""
from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["TS_MAX", "MAX_SYMBOL_LENGTH", "Price", "Size", "Symbol", "Ts", "message_size", "validation_reason"]

TS_MAX = 2**63 - 1
"""Largest timestamp (int ns since the epoch): the int64 ``ts`` columns hold every valid one."""
MAX_SYMBOL_LENGTH = 64
"""Longest symbol name of a message (characters)."""

Price = Annotated[float, msgspec.Meta(gt=0.0)]
Size = Annotated[float, msgspec.Meta(ge=0.0)]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SYMBOL_LENGTH)]
Ts = Annotated[int, msgspec.Meta(ge=0, le=TS_MAX)]


def message_size(data: Any) -> int:
    """Length of a message or frame in bytes (characters for a ``str``); -1 when it is not a
    bytes-like object or a ``str`` (or a released memoryview). The base types' ``__len__``
    is called, never a subclass's."""
    for kind in (bytes, bytearray, str):
        if isinstance(data, kind):
            return kind.__len__(data)
    if isinstance(data, memoryview):
        try:
            return data.nbytes
        except ValueError:  # released
            return -1
    return -1


def validation_reason(exc: msgspec.ValidationError) -> str:
    """The rejection reason of a msgspec validation failure: ``"missing_field"`` or ``"invalid_field"``."""
    return "missing_field" if "missing required field" in str(exc) else "invalid_field"
