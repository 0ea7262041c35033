"""Turning any bound value into something a log line or a header can hold.

One place for it: the JSON lines of [`ctxlog.stdlib`][ctxlog.stdlib] and of
[`ctxlog.structlog`][ctxlog.structlog], the snapshot's header codec and the queue handler
all use these, so a value one output can write is written the same way by
the others, and no value can cost a line.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ctxlog._redact import Redactor

__all__ = [
    "JSON_SAFE_DEPTH",
    "dumps_line",
    "escape_unsafe",
    "json_safe",
    "orjson_dumps_line",
    "outbound",
    "placeholder",
    "rfc3339",
    "safe_str",
]

#: How deep `json_safe` follows containers before writing ``str()`` of the rest.
JSON_SAFE_DEPTH: Final = 32

# What a JSON string may hold raw but a line must not: DEL and the C1 controls
# (a terminal acts on them), U+2028/U+2029 (str.splitlines() and JavaScript
# split a line there) and lone surrogates (no UTF-8 stream can write them).
# JSON already escapes the C0 controls.
_UNSAFE: Final = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def placeholder(value: object) -> str:
    """What a value that cannot be written becomes: a string naming its type.

    ``type()`` never runs the value's code (``__class__`` may raise: lazy proxies).
    """
    return f"<unrepresentable {type(value).__name__}>"


def safe_str(value: Any) -> str:
    """``str(value)``, or `placeholder` when ``__str__`` raises."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 -- a broken __str__ must not break the line
        return placeholder(value)


def _key(key: object) -> str:
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str.__str__(key)  # a str subclass: its own __str__ bypassed
    return safe_str(key)


def json_safe(  # noqa: PLR0911 -- one return per kind of value reads best
    value: Any,
    depth: int = JSON_SAFE_DEPTH,
    default: Callable[[Any], Any] | None = None,
) -> Any:
    """A copy of *value* made only of what `json.dumps` writes as strict JSON.

    Plain ``str``/``int``/``float``/``bool``/``None``, ``dict`` with string
    keys and ``list``; subclasses are read through the base type's own methods
    (an overridden ``items()`` or ``__repr__`` never runs), non-finite floats
    and ints too long to print become strings, dates and times their ISO
    form, containers nested deeper than *depth* (or circular) ``str()``, other
    objects what *default* makes of them (then ``str()``).  Anything that
    raises on the way becomes `placeholder`.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    try:
        if issubclass(kind, str):
            return str.__str__(value)
        if issubclass(kind, int):
            number = int.__int__(value)
            try:
                str(number)
            except ValueError:  # longer than sys.get_int_max_str_digits()
                return f"<int of {number.bit_length()} bits>"
            return number
        if issubclass(kind, float):
            real = float.__float__(value)
            # JSON has no NaN or infinity: null, as orjson and JSON.stringify write them.
            return real if math.isfinite(real) else None
        if issubclass(kind, dict | list | tuple):
            if depth <= 0:
                return safe_str(value)
            if issubclass(kind, dict):
                return {
                    _key(key): json_safe(item, depth - 1, default)
                    for key, item in dict.items(value)
                }
            items = list.__iter__(value) if issubclass(kind, list) else tuple.__iter__(value)
            return [json_safe(item, depth - 1, default) for item in items]
        # No date or time can exist before the module that defines them is loaded.
        datetime = sys.modules.get("datetime")
        if datetime is not None and issubclass(kind, datetime.date | datetime.time):
            return str(value.isoformat())
        if default is not None:
            return json_safe(default(value), depth - 1)
        return safe_str(value)
    except Exception:  # noqa: BLE001 -- whatever a value does, the line is written
        return placeholder(value)


def outbound(values: Mapping[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    """*values* (the bound context, a record's own fields) as they leave the
    process for a telemetry backend: an OpenTelemetry log record's
    attributes, a Sentry event's context.

    Each value is made `json_safe` (nested mappings and sequences keep their
    shape; other objects become text, never raising); keys become text.  The
    one place such values pass through: *redactor*, when given, replaces the
    secrets in what is left, so every backend gets the same redaction.
    """
    safe = {_key(key): json_safe(value) for key, value in values.items()}
    return safe if redactor is None else redactor.redact_mapping(safe)


def escape_unsafe(text: str) -> str:
    """*text* (JSON) with DEL, C1 controls, U+2028/U+2029 and lone surrogates
    written as ``\\uXXXX`` escapes: still the same JSON, one line, valid UTF-8."""
    if text.isascii() and "\x7f" not in text:
        return text
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dumps_line(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` for log lines: strict JSON (RFC 8259) on one line, always.

    The common case is one plain ``json.dumps``.  When it fails on any value
    (a non-string mapping key, NaN, an int too long to print, deep or circular
    nesting, a value whose methods raise), the line is written from
    `json_safe` instead of being lost.  Keyword arguments are those of
    `json.dumps` (``default`` included); ``allow_nan`` is always off.
    """
    kwargs["allow_nan"] = False
    encode = _encoder(kwargs) if kwargs.keys() <= _CACHED_OPTIONS else None
    try:
        text = encode(obj) if encode is not None else _json().dumps(obj, **kwargs)
    except Exception:  # noqa: BLE001 -- any failure: the safe copy below never fails
        default = kwargs.pop("default", None)
        kwargs.pop("cls", None)
        text = _json().dumps(json_safe(obj, default=default), **kwargs)
    return escape_unsafe(text)


#: The options a log line's callers pass (ctxlog's formatter, structlog's
#: renderer): for these, one encoder per set of values is kept.  ``json.dumps``
#: with any option builds a new ``JSONEncoder`` per call: a sixth of a line.
_CACHED_OPTIONS: Final = frozenset({"default", "ensure_ascii", "allow_nan", "sort_keys"})
_encoders: dict[tuple[Any, ...], Callable[[Any], str]] = {}


def _encoder(options: dict[str, Any]) -> Callable[[Any], str] | None:
    try:
        key = tuple(sorted(options.items()))
        encode = _encoders.get(key)
    except TypeError:  # an unhashable default: no cache
        return None
    if encode is None:
        if len(_encoders) >= 32:  # a few formatters per process; never a leak
            _encoders.clear()
        encode = _encoders[key] = _json().JSONEncoder(**options).encode
    return encode


def _json() -> Any:
    # Loaded with the first line written: json stays off `import ctxlog` for an
    # application that writes no JSON.
    import json  # noqa: PLC0415

    return json


def orjson_dumps_line(dumps: Callable[..., bytes]) -> Callable[..., str]:
    """`dumps_line` with *dumps* (``orjson.dumps``) for the common case.

    Whatever orjson refuses (ints over 64 bits, non-string keys, deep or
    circular nesting, lone surrogates, a *default* that fails) is written by
    `dumps_line` instead.
    """

    def line(obj: Any, *, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
        try:
            text = dumps(obj, default=default).decode()
        except Exception:  # noqa: BLE001 -- the strict path below never fails
            return dumps_line(obj, default=default, ensure_ascii=False)
        return escape_unsafe(text)

    return line


# One entry: the whole second of the last timestamp written, as text.
_second: tuple[int, str] = (-1, "")


def rfc3339(created: float) -> str:
    """*created* (``time.time()``) as an RFC 3339 UTC timestamp with microseconds:
    ``2026-12-01T09:30:00.123456Z``, as structlog's ``TimeStamper(fmt="iso", utc=True)``."""
    global _second  # noqa: PLW0603 -- a one-entry cache, swapped whole (thread-safe)
    whole = int(created)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int((created - whole) * 1_000_000):06d}Z"
