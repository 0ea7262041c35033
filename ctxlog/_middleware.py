"""The engine the request-context middlewares share: options, the request id
and trace id of one request, and its unit of work.

[`ctxlog.asgi`][ctxlog.asgi] and [`ctxlog.wsgi`][ctxlog.wsgi] read the headers the way their
protocol gives them and hand them to one `Policy`; it validates the
options once, picks the request id, and opens and closes the request's unit
of work ([`ctxlog.scope`][ctxlog.scope]) through the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from ctxlog._errors import ContextError, check_collection, check_flag
from ctxlog._store import UnitEntry, store
from ctxlog.headers import (
    ALLOWED_BYTES,
    ALLOWED_CHARS,
    MAX_REQUEST_ID_LENGTH,
    REQUEST_FIELDS,
    check_header_name,
    escape_rejected,
    generate_request_id,
    is_valid_request_id,
    match_request_id,
    parse_traceparent,
    safe_field,
    transform_request_id,
)

__all__ = ["Incoming", "Policy"]

#: What a middleware binds for one request: (values to bind, the request id,
#: the incoming trace flags, why a header value was rejected or ``None``).
#: A plain tuple: it is built on every request.
Incoming: TypeAlias = tuple[dict[str, Any], str, str, str | None]


class Policy:
    """The options shared by the ASGI and WSGI middlewares, and the per-request work."""

    __slots__ = (
        "_default_limit",
        "echo",
        "environ_key",
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
        "transformer",
        "update_request_header",
        "validator",
    )

    def __init__(
        self,
        *,
        header: str,
        key: str,
        validator: Callable[[str], bool] | None,
        generator: Callable[[], str],
        transformer: Callable[[str], str] | None,
        echo: bool,
        request_fields: Iterable[str],
        traceparent: bool,
        trace_key: str,
        max_length: int,
        update_request_header: bool,
        where: str,
    ) -> None:
        check_header_name(header, where)
        for name, option in (("key", key), ("trace_key", trace_key)):
            if not isinstance(option, str) or not option:
                msg = f"{where}({name}={option!r}): give a non-empty context key."
                raise ContextError(msg)
        check_collection(request_fields, "request_fields", where)
        fields = tuple(request_fields)
        unknown = set(fields) - REQUEST_FIELDS
        if unknown:
            msg = (
                f"{where}(request_fields=...): unknown field(s) {sorted(unknown)}; "
                f"choose among {sorted(REQUEST_FIELDS)}."
            )
            raise ContextError(msg)
        check_flag(echo, "echo", where)
        check_flag(traceparent, "traceparent", where)
        check_flag(update_request_header, "update_request_header", where)
        if not isinstance(max_length, int) or max_length < 1:
            msg = f"{where}(max_length={max_length!r}): give a positive int."
            raise ContextError(msg)
        functions: tuple[tuple[str, object], ...] = (
            ("validator", validator),
            ("generator", generator),
            ("transformer", transformer),
        )
        for name, function in functions:
            # Found out here, not as a rejected header (or a 500) on every request.
            # validator=None: any value the safety floor lets through;
            # transformer=None: the id as it is.
            if function is None and name != "generator":
                continue
            if not callable(function):
                msg = (
                    f"{where}({name}={function!r}): give a function, not {type(function).__name__}."
                )
                raise ContextError(msg)
        self.header = header
        self.header_lower = header.lower()
        self.header_bytes = self.header_lower.encode("ascii")
        #: The header's key in a WSGI environ (and Django's ``request.META``).
        self.environ_key = "HTTP_" + header.upper().replace("-", "_")
        self.key = key
        self.validator = validator
        self.generator = generator
        self.transformer = transformer
        self.echo = echo
        self.request_fields = fields
        self.traceparent = traceparent
        self.trace_key = trace_key
        self.max_length = max_length
        self.update_request_header = update_request_header
        # With the default validator, a header value of bytes of its alphabet and
        # of a length both limits allow is accepted without decoding it first:
        # the same verdict, a third of the cost.
        self._default_limit = (
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
        value, rejection = self._check(raw, count)
        if value is None:
            value = generate_request_id(self.generator)
        if self.transformer is not None:
            value = transform_request_id(self.transformer, value)
        return value, rejection

    def _check(self, raw: str | bytes | None, count: int) -> tuple[str | None, str | None]:
        if raw is None or count == 0:
            return None, None
        if count > 1:
            return None, f"sent {count} times"
        size = len(raw)
        if (
            0 < size <= self._default_limit
            and isinstance(raw, bytes)
            and not raw.translate(None, ALLOWED_BYTES)
        ):
            return raw.decode("ascii"), None
        if size == 0 or size > self.max_length:
            return None, "empty value" if size == 0 else (
                f"{size} characters, over the {self.max_length} limit, "
                f"starting {escape_rejected(raw)}"
            )
        return self._validate(raw.decode("latin-1") if isinstance(raw, bytes) else raw)

    def _validate(self, value: str) -> tuple[str | None, str | None]:
        """The safety floor, then the validator, on a value of an allowed length."""
        try:
            ok = value.isascii() and value.isprintable() and " " not in value
            if self.validator is not None:
                ok = ok and bool(self.validator(value))
        except Exception as exc:  # noqa: BLE001 -- a broken validator must not break the request
            return None, f"the validator raised {type(exc).__name__}"
        return (value, None) if ok else (None, f"invalid value {escape_rejected(value)}")

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
    ) -> Incoming:
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
                values["method"] = method if match_request_id(method) else escape_rejected(method)
            elif name == "path" and path is not None:
                values["path"] = safe_field(path)
            elif name == "client" and client is not None:
                # Not only the server's word: proxy-header middlewares (uvicorn's,
                # werkzeug's ProxyFix) take it from X-Forwarded-For.
                values["client"] = safe_field(client, ALLOWED_CHARS)
        return values, request_id, flags, rejection

    def from_environ(self, environ: Mapping[str, Any]) -> Incoming:
        """`incoming` for a WSGI environ (or Django's ``request.META``)."""
        raw = environ.get(self.environ_key)
        if raw is not None:
            # Whitespace around a field value is not part of it (RFC 9110, 5.5);
            # not every WSGI server strips it.
            raw = raw.strip(" \t")
        traceparent = environ.get("HTTP_TRACEPARENT")
        traceparent_count = 0
        if traceparent is not None:
            traceparent = traceparent.strip(" \t")
            # Servers join a repeated header with commas; a traceparent never
            # holds one: sent twice, it is refused (as the ASGI middleware does).
            traceparent_count = 2 if "," in traceparent else 1
        path = client = None
        if self.request_fields:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if "REMOTE_ADDR" in environ:
                client = f"{environ['REMOTE_ADDR']}:{environ.get('REMOTE_PORT', '')}".rstrip(":")
        return self.incoming(
            raw,
            0 if raw is None else 1,
            traceparent,
            traceparent_count,
            method=environ.get("REQUEST_METHOD"),
            path=path,
            client=client,
        )

    def open(self, incoming: Incoming, logger: logging.Logger) -> UnitEntry:
        """Open the request's unit of work, binding what `incoming` found,
        and log the one warning about a rejected header.

        Every managed key is replaced or removed, never assumed absent: a
        context leaked from an earlier request (CPython gh-140947) cannot show
        through.
        """
        values, request_id, flags, rejection = incoming
        entry = store.open_unit(values, drop=self.managed, trace_flags=flags)
        if rejection is not None:
            logger.warning(
                "Rejected the %s request header (%s); using the generated request id %s",
                self.header,
                rejection,
                request_id,
            )
        return entry

    def describe(self) -> Mapping[str, Any]:
        return {
            "header": self.header,
            "key": self.key,
            "echo": self.echo,
            "request_fields": self.request_fields,
            "traceparent": self.traceparent,
            "update_request_header": self.update_request_header,
            "transformer": self.transformer,
        }
