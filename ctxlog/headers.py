"""Request ids and trace context at the edges of the process.

Validation of incoming request ids (a strict allow-list, the length checked
before any regular expression runs), W3C ``traceparent`` parsing, the headers
to pass to the next service (:func:`outgoing_headers`) and the escaping used
when a rejected value is mentioned in a log line.  Standard library only: the
ASGI and WSGI middlewares (:mod:`ctxlog.asgi`, :mod:`ctxlog.wsgi`) build on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Final, NamedTuple, TypeAlias

from ctxlog._context import _STORE, ContextError, get

__all__ = [
    "MAX_REQUEST_ID_LENGTH",
    "REQUEST_FIELDS",
    "REQUEST_ID_HEADER",
    "TraceParent",
    "escape_rejected",
    "is_valid_request_id",
    "new_request_id",
    "outgoing_headers",
    "parse_traceparent",
]

#: The header a request id is read from and echoed in, by default.
REQUEST_ID_HEADER: Final = "X-Request-ID"

#: The longest request id the default validator accepts.
MAX_REQUEST_ID_LENGTH: Final = 128

#: The request fields the middlewares can bind besides the id (off by default):
#: the HTTP method, the URL path (escaped like a rejected value when it holds a
#: character outside the request-id alphabet or ``/``) and the client address
#: as ``host:port`` (escaped likewise when it holds a character outside the
#: request-id alphabet: a proxy header may have set it).
REQUEST_FIELDS: Final = frozenset({"method", "path", "client"})

_ALLOWED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
# Explicit ASCII ranges: ``\w`` or ``\d`` would let non-ASCII digits and letters in.
_ID_MATCH: Final = re.compile(r"[A-Za-z0-9._:\-]+").fullmatch
_ID_MATCH_BYTES: Final = re.compile(rb"[A-Za-z0-9._:\-]+").fullmatch

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

#: Trace flags of the incoming ``traceparent`` of the current request, so that
#: :func:`outgoing_headers` forwards the caller's sampling decision.  The
#: middlewares set it at the start of every request.
_TRACE_FLAGS: Final[ContextVar[str]] = ContextVar("ctxlog.trace_flags", default="01")

#: Set by :func:`ctxlog.otel.install`: the trace flags of the active
#: OpenTelemetry span when the given trace id is its trace, else ``None``.
_active_trace_flags: Callable[[str], str | None] | None = None

# How much of a rejected value a warning line shows, before escaping.
_ESCAPE_LIMIT: Final = 32


def is_valid_request_id(value: object) -> bool:
    """Return whether *value* is acceptable as a request id from a header.

    The default validator of the middlewares: a ``str`` of 1 to
    :data:`MAX_REQUEST_ID_LENGTH` characters, each one of ``A-Z a-z 0-9 . _ : -``
    (ASCII only; no spaces, tabs, control characters or quotes).  UUIDs, ULIDs,
    and the ids of most proxies and tracing systems pass.  The length is
    checked first, so a megabyte header costs no regex work.

    .. versionadded:: 0.1.0
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_REQUEST_ID_LENGTH
        and _ID_MATCH(value) is not None
    )


def new_request_id() -> str:
    """Return a new request id: a random UUID4 as 32 lowercase hex digits.

    The default generator of the middlewares.

    .. versionadded:: 0.1.0
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

    .. versionadded:: 0.1.0
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

    .. versionadded:: 0.1.0
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


def _forwardable(value: object) -> bool:
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
      active OpenTelemetry span when :func:`ctxlog.otel.install` is in effect
      and the trace is that span's.

    Pass the result to your HTTP client: ``httpx.get(url, headers=outgoing_headers())``.

    .. versionadded:: 0.1.0
    """
    out: dict[str, str] = {}
    request_id = get(key)
    if _forwardable(request_id):
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
            flags = _active_trace_flags(trace_id) if _active_trace_flags is not None else None
            out["traceparent"] = f"00-{trace_id}-{span_id}-{flags or _TRACE_FLAGS.get()}"
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

    .. versionadded:: 0.1.0
    """
    size = len(value)
    head = value[:limit]
    text = head.decode("latin-1") if isinstance(head, bytes) else head
    out = "".join(c if c in _ALLOWED and c != ":" else _escape_char(c) for c in text)
    if size > limit:
        out += f"...len:{size}"
    return out


_ESCAPE_PATH_OK: Final = _ALLOWED | {"/"}


def _safe_field(value: str, allowed: frozenset[str] = _ESCAPE_PATH_OK) -> str:
    """A request field as bound by ``request_fields``: unchanged when it is plain,
    else escaped like a rejected value (at most 1024 characters of it)."""
    if len(value) <= 1024 and all(c in allowed for c in value):
        return value
    return "".join(c if c in allowed and c != ":" else _escape_char(c) for c in value[:1024])


#: What a middleware binds for one request: (values to bind, the request id,
#: the incoming trace flags, why a header value was rejected or ``None``).
#: A plain tuple: it is built on every request.
_Incoming: TypeAlias = tuple[dict[str, Any], str, str, str | None]


class _Policy:
    """The options shared by the ASGI and WSGI middlewares, and the per-request work."""

    __slots__ = (
        "echo",
        "fast_cap",
        "generator",
        "header",
        "header_bytes",
        "header_lower",
        "key",
        "managed",
        "max_length",
        "request_fields",
        "trace_key",
        "traceparent",
        "validator",
    )

    def __init__(
        self,
        *,
        header: str,
        key: str,
        validator: Callable[[str], bool],
        generator: Callable[[], str],
        echo: bool,
        request_fields: Iterable[str],
        traceparent: bool,
        trace_key: str,
        max_length: int,
        where: str,
    ) -> None:
        if not isinstance(header, str) or not header or _ID_MATCH(header) is None:
            msg = f"{where}(header={header!r}): give a header name such as 'X-Request-ID'."
            raise ContextError(msg)
        for name, option in (("key", key), ("trace_key", trace_key)):
            if not isinstance(option, str) or not option:
                msg = f"{where}({name}={option!r}): give a non-empty context key."
                raise ContextError(msg)
        if isinstance(request_fields, str):
            msg = (
                f"{where}(request_fields={request_fields!r}): pass a collection, "
                f"e.g. request_fields=[{request_fields!r}]."
            )
            raise ContextError(msg)
        fields = tuple(request_fields)
        unknown = set(fields) - REQUEST_FIELDS
        if unknown:
            msg = (
                f"{where}(request_fields=...): unknown field(s) {sorted(unknown)}; "
                f"choose among {sorted(REQUEST_FIELDS)}."
            )
            raise ContextError(msg)
        if not isinstance(max_length, int) or max_length < 1:
            msg = f"{where}(max_length={max_length!r}): give a positive int."
            raise ContextError(msg)
        functions: tuple[tuple[str, object], ...] = (
            ("validator", validator),
            ("generator", generator),
        )
        for name, function in functions:
            # Found out here, not as a rejected header (or a 500) on every request.
            if not callable(function):
                msg = (
                    f"{where}({name}={function!r}): give a function, not {type(function).__name__}."
                )
                raise ContextError(msg)
        self.header = header
        self.header_lower = header.lower()
        self.header_bytes = self.header_lower.encode("ascii")
        self.key = key
        self.validator = validator
        self.generator = generator
        self.echo = echo
        self.request_fields = fields
        self.traceparent = traceparent
        self.trace_key = trace_key
        self.max_length = max_length
        # Values this short are checked by one regex when the validator is the default.
        self.fast_cap = (
            min(max_length, MAX_REQUEST_ID_LENGTH) if validator is is_valid_request_id else 0
        )
        managed = {key, *fields}
        if traceparent:
            managed.add(trace_key)
        self.managed = frozenset(managed)

    def accept(self, raw: str | bytes | None, count: int) -> tuple[str, str | None]:
        """Pick the request id from the header value *raw*, sent *count* times.

        Returns the id and, when a value was rejected, why.
        """
        if count == 1 and raw and len(raw) <= self.fast_cap:
            # The default validator on its own alphabet: one regex, no decoding twice.
            if isinstance(raw, bytes):
                if _ID_MATCH_BYTES(raw) is not None:
                    return raw.decode("ascii"), None
            elif _ID_MATCH(raw) is not None:
                return raw, None
        value, rejection = self._check(raw, count)
        if value is None:
            return self._generate(), rejection
        return value, None

    def _check(self, raw: str | bytes | None, count: int) -> tuple[str | None, str | None]:
        if raw is None or count == 0:
            return None, None
        if count > 1:
            return None, f"sent {count} times"
        size = len(raw)
        if size == 0:
            return None, "empty value"
        if size > self.max_length:
            return None, (
                f"{size} characters, over the {self.max_length} limit, "
                f"starting {escape_rejected(raw)}"
            )
        value = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        try:
            ok = value.isascii() and value.isprintable() and " " not in value
            ok = ok and bool(self.validator(value))
        except Exception as exc:  # noqa: BLE001 -- a broken validator must not break the request
            return None, f"the validator raised {type(exc).__name__}"
        return (value, None) if ok else (None, f"invalid value {escape_rejected(value)}")

    def _generate(self) -> str:
        if self.generator is new_request_id:
            return new_request_id()
        request_id = self.generator()
        if not _forwardable(request_id):
            msg = (
                f"The request-id generator {self.generator!r} returned {request_id!r}; it must "
                "return a non-empty printable ASCII str without spaces (at most 1024 chars)."
            )
            raise ContextError(msg)
        return request_id

    def incoming(
        self,
        raw_id: str | bytes | None,
        id_count: int,
        raw_traceparent: str | bytes | None,
        traceparent_count: int,
        *,
        method: str | None = None,
        path: str | None = None,
        client: str | None = None,
    ) -> _Incoming:
        """Everything to bind for one request (request id, trace id, request fields)."""
        request_id, rejection = self.accept(raw_id, id_count)
        values: dict[str, Any] = {self.key: request_id}
        flags = "01"
        if self.traceparent and traceparent_count == 1:
            parsed = parse_traceparent(raw_traceparent)
            if parsed is not None:
                values[self.trace_key] = parsed.trace_id
                flags = parsed.flags
        for name in self.request_fields:
            if name == "method" and method is not None:
                values["method"] = method if _ID_MATCH(method) else escape_rejected(method)
            elif name == "path" and path is not None:
                values["path"] = _safe_field(path)
            elif name == "client" and client is not None:
                # Not only the server's word: proxy-header middlewares (uvicorn's,
                # werkzeug's ProxyFix) take it from X-Forwarded-For.
                values["client"] = _safe_field(client, _ALLOWED)
        return values, request_id, flags, rejection

    def bound(self, values: dict[str, Any]) -> dict[str, Any]:
        """The new store mapping: the current one without any managed key, plus *values*.

        Every managed key is replaced or removed, never assumed absent: a
        context leaked from an earlier request (CPython gh-140947) cannot show
        through.
        """
        old = _STORE.get()
        if old:
            new = {k: v for k, v in old.items() if k not in self.managed}
            new.update(values)
            return new
        return values

    def describe(self) -> Mapping[str, Any]:
        return {
            "header": self.header,
            "key": self.key,
            "echo": self.echo,
            "request_fields": self.request_fields,
            "traceparent": self.traceparent,
        }


def _rejection_message(policy: _Policy, rejection: str, request_id: str) -> tuple[str, ...]:
    """The (format, args...) of the one warning line about a rejected header."""
    return (
        "Rejected the %s request header (%s); using the generated request id %s",
        policy.header,
        rejection,
        request_id,
    )
