"""Request ids and trace context at the edges of the process.

Validation of incoming request ids (a strict allow-list, the length checked
before any regular expression runs), W3C ``traceparent`` parsing, the headers
to pass to the next service ([`outgoing_headers`][ctxlog.headers.outgoing_headers]) and the escaping
used
when a rejected value is mentioned in a log line.  Standard library only: the
ASGI and WSGI middlewares ([`ctxlog.asgi`][ctxlog.asgi], [`ctxlog.wsgi`][ctxlog.wsgi]) build on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Final, NamedTuple

from ctxlog._errors import ContextError
from ctxlog._store import store

__all__ = [
    "ALLOWED_BYTES",
    "ALLOWED_CHARS",
    "MAX_REQUEST_ID_LENGTH",
    "REQUEST_FIELDS",
    "REQUEST_ID_HEADER",
    "TraceParent",
    "check_header_name",
    "escape_rejected",
    "forwardable",
    "generate_request_id",
    "is_valid_request_id",
    "match_request_id",
    "new_request_id",
    "outgoing_headers",
    "parse_traceparent",
    "safe_field",
    "transform_request_id",
]

REQUEST_ID_HEADER: Final = "X-Request-ID"
"""The header a request id is read from and echoed in, by default."""

MAX_REQUEST_ID_LENGTH: Final = 128
"""The longest request id the default validator accepts."""

REQUEST_FIELDS: Final = frozenset({"method", "path", "client"})
"""The request fields the middlewares can bind besides the id (off by default):
the HTTP method, the URL path (escaped like a rejected value when it holds a
character outside the request-id alphabet or ``/``) and the client address
as ``host:port`` (escaped likewise when it holds a character outside the
request-id alphabet: a proxy header may have set it).
"""

ALLOWED_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
)
"""The characters of a request id the default validator accepts."""
ALLOWED_BYTES: Final = "".join(sorted(ALLOWED_CHARS)).encode("ascii")
"""The same characters as bytes: ``value.translate(None, ALLOWED_BYTES)`` is empty
exactly when every byte of *value* is one of them (a C-speed check of raw
header bytes, for the middlewares' default validator).
"""
# Explicit ASCII ranges: ``\w`` or ``\d`` would let non-ASCII digits and letters in.
match_request_id: Final = re.compile(r"[A-Za-z0-9._:\-]+").fullmatch
"""Full-matches a string of request-id characters."""

# A traceparent is 55 characters in version 00; later versions may append
# fields.  Anything longer than this is refused before the regex sees it.
_TRACEPARENT_CAP: Final = 512
_TRACEPARENT_MATCH: Final = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?"
).fullmatch
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_HEX32: Final = re.compile(r"[0-9a-f]{32}").fullmatch
_HEX16: Final = re.compile(r"[0-9a-f]{16}").fullmatch
_HEX2: Final = re.compile(r"[0-9a-f]{2}").fullmatch

# The longest value outgoing_headers() forwards: the cap of the default
# validator is for what we accept, this one only guards the next hop.
_OUTGOING_CAP: Final = 1024

# How much of a rejected value a warning line shows, before escaping.
_ESCAPE_LIMIT: Final = 32


def check_header_name(header: object, where: str) -> None:
    """Refuse a header option that is not a header name, naming the caller *where*.

    :raises ContextError: *header* is not a non-empty str of ``A-Z a-z 0-9 . _ : -``.
    """
    if not isinstance(header, str) or not header or match_request_id(header) is None:
        msg = f"{where}(header={header!r}): give a header name such as 'X-Request-ID'."
        raise ContextError(msg)


def is_valid_request_id(value: object) -> bool:
    """Return whether *value* is acceptable as a request id from a header.

    The default validator of the middlewares: a ``str`` of 1 to
    [`MAX_REQUEST_ID_LENGTH`][ctxlog.headers.MAX_REQUEST_ID_LENGTH] characters, each one of ``A-Z
    a-z 0-9 . _ : -``
    (ASCII only; no spaces, tabs, control characters or quotes).  UUIDs, ULIDs,
    and the ids of most proxies and tracing systems pass.  The length is
    checked first, so a megabyte header costs no regex work.

    *New in version 0.1.0.*
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_REQUEST_ID_LENGTH
        and match_request_id(value) is not None
    )


def generate_request_id(generator: Callable[[], str]) -> str:
    """Call *generator* for a new request id and check that it can be sent on.

    :raises ContextError: it returned something that is not a non-empty
        printable ASCII str without spaces, of at most 1024 characters.
    """
    if generator is new_request_id:
        return new_request_id()
    return _sendable(generator(), "generator", generator)


def transform_request_id(transformer: Callable[[str], str], request_id: str) -> str:
    """Pass *request_id* through *transformer* and check that the result can be sent on.

    :raises ContextError: as [`generate_request_id`][ctxlog.headers.generate_request_id].
    """
    return _sendable(transformer(request_id), "transformer", transformer)


def _sendable(request_id: object, role: str, made_by: object) -> str:
    if not forwardable(request_id):
        msg = (
            f"The request-id {role} {made_by!r} returned {request_id!r}; it must "
            "return a non-empty printable ASCII str without spaces (at most 1024 chars)."
        )
        raise ContextError(msg)
    return request_id  # type: ignore[return-value]  # forwardable() checked it is a str


def new_request_id() -> str:
    """Return a new request id: a random UUID4 as 32 lowercase hex digits.

    The default generator of the middlewares.

    *New in version 0.1.0.*
    """
    # uuid.uuid4().hex without building a UUID object (a third of the cost):
    # the version (4) and variant (RFC 4122) bits set on 16 random bytes.
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


class TraceParent(NamedTuple):
    """A parsed W3C ``traceparent`` header (`Trace Context
    <https://www.w3.org/TR/trace-context/>`_): all fields lowercase hex.

    *New in version 0.1.0.*
    """

    version: str
    trace_id: str
    parent_id: str
    flags: str

    @property
    def sampled(self) -> bool:
        """Whether the caller recorded its span (the ``sampled`` flag)."""
        return bool(int(self.flags, 16) & 1)

    def __str__(self) -> str:
        return f"{self.version}-{self.trace_id}-{self.parent_id}-{self.flags}"


def parse_traceparent(value: str | bytes | None) -> TraceParent | None:
    """Parse a W3C ``traceparent`` header value; ``None`` when it is not valid.

    Follows the Trace Context rules: lowercase hex fields, version ``ff``
    refused, version ``00`` exactly 55 characters, later versions may append
    ``-``-separated fields (ignored), all-zero trace or parent ids refused.
    Values longer than 512 characters are refused before any parsing.

    *New in version 0.1.0.*
    """
    if value is None or len(value) > _TRACEPARENT_CAP:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _TRACEPARENT_MATCH(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(version, trace_id, parent_id, flags)


def forwardable(value: object) -> bool:
    """Whether *value* is safe to put in an outgoing header (printable ASCII, no space)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= _OUTGOING_CAP
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def outgoing_headers(
    *,
    header: str = REQUEST_ID_HEADER,
    key: str = "request_id",
    trace_key: str = "trace_id",
    span_key: str = "span_id",
) -> dict[str, str]:
    """Return the headers that carry the current request id and trace to the next service.

    ``{header: <value bound under key>, "traceparent": "00-<trace>-<span>-<flags>"}``,
    each present only when there is something valid to send:

    * the request id is the value bound under *key* (a printable ASCII string
      without spaces, at most 1024 characters; anything else is left out);
    * ``traceparent`` needs a 32-hex-digit trace id under *trace_key* (bound by
      the middlewares from the incoming ``traceparent``, or by OpenTelemetry).
      Its parent id is the span id bound under *span_key* when there is a valid
      one, else a new random one for this hop; its flags are those of the
      incoming request (``01``, sampled, when there was none), or those of the
      active OpenTelemetry span when [`ctxlog.otel.install`][ctxlog.otel.install] is in effect
      and the trace is that span's.

    Pass the result to your HTTP client: ``httpx.get(url, headers=outgoing_headers())``.

    *New in version 0.1.0.*
    """
    out: dict[str, str] = {}
    get = store.value
    request_id = get(key)
    if forwardable(request_id):
        out[header] = request_id
    trace_id = get(trace_key)
    if isinstance(trace_id, str):
        trace_id = trace_id.lower()
        if _HEX32(trace_id) is not None and trace_id != _ZERO_TRACE:
            span_id = get(span_key)
            if isinstance(span_id, str):
                span_id = span_id.lower()
            if not isinstance(span_id, str) or _HEX16(span_id) is None or span_id == _ZERO_SPAN:
                span_id = _new_span_id()
            out["traceparent"] = f"00-{trace_id}-{span_id}-{store.trace_flags(trace_id)}"
    return out


def _new_span_id() -> str:
    while True:
        span_id = os.urandom(8).hex()
        if span_id != _ZERO_SPAN:
            return span_id


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f":{code:02x}"
    if code < 0x10000:
        return f":u{code:04x}"
    return f":U{code:08x}"


def escape_rejected(value: str | bytes, limit: int = _ESCAPE_LIMIT) -> str:
    """Return a log-safe rendering of a rejected header *value*.

    At most the first *limit* characters are shown; every character outside
    ``A-Z a-z 0-9 . _ : -``, and ``:`` itself, is written as ``:XX`` (or
    ``:uXXXX`` / ``:UXXXXXXXX``) with its code point in hex, and a truncated
    value ends in ``...len:N``.  The result is made only of the request-id
    alphabet, so it can carry no newline, control character, quote, space or
    non-ASCII character from the original, and it is short: the original
    (when longer than the cap) cannot appear in it.  ``bytes`` are read as
    Latin-1, as HTTP header bytes are.

    *New in version 0.1.0.*
    """
    size = len(value)
    head = value[:limit]
    text = head.decode("latin-1") if isinstance(head, bytes) else head
    out = "".join(c if c in ALLOWED_CHARS and c != ":" else _escape_char(c) for c in text)
    if size > limit:
        out += f"...len:{size}"
    return out


_ESCAPE_PATH_OK: Final = ALLOWED_CHARS | {"/"}


def safe_field(value: str, allowed: frozenset[str] = _ESCAPE_PATH_OK) -> str:
    """A request field as bound by ``request_fields``: unchanged when it is plain,
    else escaped like a rejected value (at most 1024 characters of it)."""
    if len(value) <= 1024 and all(c in allowed for c in value):
        return value
    return "".join(c if c in allowed and c != ":" else _escape_char(c) for c in value[:1024])
