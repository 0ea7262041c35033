"""Turning any bound value into something a log line or a header can hold.

One place for it: the JSON lines of :mod:`ctxlog.stdlib`, the snapshot's
header codec and the queue handler all use these, so a value that one output
can write is written the same way by the others.
"""

from __future__ import annotations

import math
from typing import Any, Final

__all__ = ["JSON_SAFE_DEPTH", "json_safe", "safe_str"]

#: How deep :func:`json_safe` follows containers before writing ``str()`` of the rest.
JSON_SAFE_DEPTH: Final = 32


def safe_str(value: Any) -> str:
    """``str(value)``, or a placeholder naming its type when ``__str__`` raises."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 -- a broken __str__ must not break the line
        return f"<unprintable {type(value).__name__}>"


def json_safe(value: Any, depth: int = JSON_SAFE_DEPTH) -> Any:
    """A copy of *value* that :func:`json.dumps` always writes as strict JSON.

    Mapping keys become strings, non-finite floats and ints too long to print
    become strings, and containers nested deeper than *depth* (or circular)
    become ``str()``; other objects are left to the formatter's ``default``.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            str(value)
        except ValueError:  # longer than sys.get_int_max_str_digits()
            return f"<int of {value.bit_length()} bits>"
    elif isinstance(value, dict | list | tuple):
        if depth <= 0:
            return safe_str(value)
        if isinstance(value, dict):
            return {
                key if isinstance(key, str) else safe_str(key): json_safe(item, depth - 1)
                for key, item in value.items()
            }
        return [json_safe(item, depth - 1) for item in value]
    return value
