"""Request ids and trace context at the edges of the process.

Validation of incoming request ids (a strict allow-list, the length checked
before any regular expression runs), W3C ``traceparent`` and ``baggage``
parsing, the headers to pass to the next service (`outgoing_headers`) and
the escaping used when a rejected value is mentioned in a log line.  Standard library only: the
ASGI and WSGI middlewares ([`ctxlog.asgi`][ctxlog.asgi], [`ctxlog.wsgi`][ctxlog.wsgi]) build on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable
from typing import Final, NamedTuple
from urllib.parse import quote, unquote

from ctxlog._errors import ContextError, check_collection
from ctxlog._store import store

__all__ = [
    "ALLOWED_BYTES",
    "ALLOWED_CHARS",
    "BAGGAGE_HEADER",
    "MAX_BAGGAGE_BYTES",
    "MAX_BAGGAGE_ENTRIES",
    "MAX_BAGGAGE_VALUE_LENGTH",
    "MAX_REQUEST_ID_LENGTH",
    "REQUEST_FIELDS",
    "REQUEST_ID_HEADER",
    "TraceParent",
    "baggage_header",
    "check_baggage_keys",
    "check_header_name",
    "escape_rejected",
    "forwardable",
    "generate_request_id",
    "is_valid_request_id",
    "match_request_id",
    "new_request_id",
    "outgoing_headers",
    "parse_baggage",
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


BAGGAGE_HEADER: Final = "baggage"
"""The W3C Baggage header (lowercase: ASGI and HTTP/2 give header names so)."""
MAX_BAGGAGE_ENTRIES: Final = 180
"""The most list members of a ``baggage`` header read or written (W3C Baggage:
at least 64 must be propagated; OpenTelemetry reads up to 180).
"""
MAX_BAGGAGE_BYTES: Final = 8192
"""The most bytes of ``baggage`` read or written, all header lines together."""
MAX_BAGGAGE_VALUE_LENGTH: Final = 1024
"""The longest baggage value bound, after percent-decoding, in characters."""

# A key is an RFC 9110 token; a value is made of baggage-octets (printable
# ASCII but space, DQUOTE, comma, semicolon and backslash), percent-encoded
# beyond that.  OWS around "=" and the members is allowed.
_BAGGAGE_KEY: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_BAGGAGE_MEMBER: Final = re.compile(
    r"[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*"
    r"([\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*)[ \t]*"
).fullmatch
# A "%" that does not start an escape: unquote() would keep it as it is.
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})").search
# What quote() leaves alone in a value: the baggage-octets but "%".
_BAGGAGE_SAFE: Final = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '"%,;\\')


def check_baggage_keys(keys: object, where: str) -> tuple[str, ...]:
    """The baggage keys of an option, checked: a collection of W3C tokens.

    *New in version 0.1.0.*

    :raises ContextError: *keys* is a string, or holds something that is not a
        non-empty token (``A-Z a-z 0-9`` and ``!#$%&'*+-.^_`|~``).
    """
    check_collection(keys, "baggage", where)
    if not isinstance(keys, Iterable):
        msg = f"{where}(baggage={keys!r}): give a collection of baggage keys, e.g. ('tenant',)."
        raise ContextError(msg)
    out = tuple(keys)
    for key in out:
        if not isinstance(key, str) or _BAGGAGE_KEY(key) is None:
            msg = (
                f"{where}(baggage=...): {key!r} is not a baggage key (a non-empty token of "
                "A-Z a-z 0-9 and !#$%&'*+-.^_`|~)."
            )
            raise ContextError(msg)
    return out


def parse_baggage(
    value: str | bytes | Iterable[str | bytes] | None, keys: Collection[str] | None = None
) -> dict[str, str]:
    """Parse W3C ``baggage`` header values into ``{key: value}``; never raises.

    *value* is one header value or the values of several ``baggage`` lines
    (read in order, as if joined by commas).  Per the
    [W3C Baggage](https://www.w3.org/TR/baggage/) format: comma-separated
    ``key=value`` members, optional whitespace around them, values
    percent-decoded as UTF-8, properties after ``;`` parsed past and not kept;
    a key sent twice keeps its last value.  With *keys*, only those keys are
    returned.

    Bounded work and a safety floor, whatever is sent: at most
    `MAX_BAGGAGE_ENTRIES` members and `MAX_BAGGAGE_BYTES` bytes are read (a
    member that crosses the limit, and all after it, are dropped); a member
    that is not well formed, whose value is not valid percent-encoded UTF-8,
    holds a control or line-breaking character once decoded, or is longer
    than `MAX_BAGGAGE_VALUE_LENGTH`, is dropped: nothing raw reaches a line.

    *New in version 0.1.0.*
    """
    out: dict[str, str] = {}
    if value is None:
        return out
    parts = [value] if isinstance(value, str | bytes) else value
    budget = MAX_BAGGAGE_BYTES
    entries = MAX_BAGGAGE_ENTRIES
    try:
        for part in parts:
            if not isinstance(part, str | bytes):
                continue
            # One more byte than the budget: a member cut there is seen as too long.
            head = part[: budget + 1]
            text = head.decode("latin-1") if isinstance(head, bytes) else head
            for member in text.split(","):
                if entries <= 0 or budget <= 0:
                    return out
                size = len(member) + 1
                budget -= size
                if budget < -1:
                    return out
                entries -= 1
                _baggage_member(member, keys, out)
            if budget <= 0 or entries <= 0:
                break
            budget -= 1  # the comma that joins header lines
    except Exception:  # noqa: BLE001 -- a hostile header must never fail a request
        return out
    return out


def _baggage_member(member: str, keys: Collection[str] | None, out: dict[str, str]) -> None:
    pair = member.split(";", 1)[0]
    if not pair.strip(" \t"):
        return  # an empty member (",,"): skipped, as OWS-only members are
    match = _BAGGAGE_MEMBER(pair)
    if match is None:
        return
    key, raw = match.groups()
    if keys is not None and key not in keys:
        return
    if "%" in raw:
        if _BAD_ESCAPE(raw) is not None:
            return
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return
    else:
        decoded = raw
    if len(decoded) <= MAX_BAGGAGE_VALUE_LENGTH and decoded.isprintable():
        out[key] = decoded


def baggage_header(values: Iterable[tuple[str, object]]) -> str | None:
    """A ``baggage`` header value for *values* (``(key, value)`` pairs), or
    ``None`` when there is nothing to send.

    Keys that are not tokens and values that are not ``str``, ``int`` or
    ``float`` (``bool`` included) are left out; values are percent-encoded;
    members past `MAX_BAGGAGE_ENTRIES` or `MAX_BAGGAGE_BYTES` are left out
    whole.

    *New in version 0.1.0.*
    """
    members: list[str] = []
    size = -1
    for key, value in values:
        if not isinstance(key, str) or _BAGGAGE_KEY(key) is None:
            continue
        if isinstance(value, str):
            text = value
        elif isinstance(value, int | float):
            text = str(value)
        else:
            continue
        if len(text) > MAX_BAGGAGE_VALUE_LENGTH or not text.isprintable():
            continue
        member = f"{key}={quote(text, safe=_BAGGAGE_SAFE)}"
        if len(members) >= MAX_BAGGAGE_ENTRIES or size + 1 + len(member) > MAX_BAGGAGE_BYTES:
            break
        members.append(member)
        size += 1 + len(member)
    return ",".join(members) or None


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
    baggage: Iterable[str] = (),
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
      and the trace is that span's;
    * ``baggage`` (W3C Baggage), when *baggage* names keys: the values bound
      under those keys (``str``, ``int``, ``float``; others are left out),
      percent-encoded, within the W3C limits.

    Pass the result to your HTTP client: ``httpx.get(url, headers=outgoing_headers())``.

    *New in version 0.1.0.*

    :raises ContextError: *baggage* holds a key that is not a W3C token.
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
    if baggage:
        keys = check_baggage_keys(baggage, "outgoing_headers")
        sent = baggage_header((key, get(key)) for key in keys)
        if sent is not None:
            out[BAGGAGE_HEADER] = sent
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
