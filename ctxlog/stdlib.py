"""stdlib `logging` integration: the filter, the record factory, ``configure()``.

Everything here reads the store with one ``ContextVar.get()`` per record and
caches the prepared attributes per distinct context mapping, so the cost of a
record does not depend on how much else lives in the process's contexts.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any, Final, Literal, NoReturn

from ctxlog._errors import ContextError, check_flag, check_no_options
from ctxlog._projection import (
    LINE_FIELDS,
    UNCACHED,
    ConflictPolicy,
    Projection,
    free_key,
    redactor_of,
)
from ctxlog._store import store
from ctxlog._values import dumps_line, orjson_dumps_line, rfc3339

if TYPE_CHECKING:
    from ctxlog._redact import Redactor

__all__ = [
    "RESERVED_ATTRS",
    "ContextFilter",
    "Serializer",
    "configure",
    "install_record_factory",
    "json_formatter",
    "uninstall_record_factory",
]

RESERVED_ATTRS: Final[frozenset[str]] = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None))
) | {"message", "asctime", "taskName", "exc_info", "exc_text", "stack_info"}
"""Attributes a `logging.LogRecord` has (or that formatters add) which a
context key must never overwrite.  ``taskName`` is listed on every Python
version so a config behaves the same on 3.10 and 3.12+.
"""

NOT_EXTRA: Final[frozenset[str]] = RESERVED_ATTRS | {"color_message"}
"""What a JSON line never writes as an ``extra=`` value: the record's own
attributes, and uvicorn's ``color_message`` (its message again, with ANSI
colour codes for a terminal).
"""

#: The options of ContextFilter (the keys of its dictConfig entry).
_FILTER_OPTIONS: Final = ("fields", "defaults", "nest_under", "on_conflict", "redact")

#: How many attributes ``LogRecord()`` sets on this Python version (see ContextFilter.filter).
_PLAIN_RECORD_LEN: Final = len(vars(logging.LogRecord("", 0, "", 0, "", (), None)))

#: ``store.read`` bound once: the filter's common path calls it for every record.
_read_store: Final = store.read


def _record_projection(  # noqa: PLR0917 -- the filter's and the factory's options, in order
    where: str,
    fields: Iterable[str] | None,
    defaults: Mapping[str, Any] | None,
    nest_under: str | None,
    on_conflict: ConflictPolicy,
    redactor: Redactor | None = None,
) -> Projection:
    """The projection of the context onto a LogRecord's attributes."""
    return Projection(
        redactor=redactor,
        fields=fields,
        defaults=defaults,
        nest_under=nest_under,
        on_conflict=on_conflict,
        reserved=RESERVED_ATTRS,
        reserved_are="standard LogRecord attributes",
        where=where,
    )


class ContextFilter(logging.Filter):
    """Adds the current context to every record that passes, as attributes.

    Attach it to **handlers** (a filter on a logger does not see records
    propagated from child loggers), or to a ``QueueHandler`` so the context is
    captured on the thread that logs.  From ``dictConfig``:

    ```python
    "filters": {"ctx": {"()": "ctxlog.ContextFilter", "defaults": {"request_id": "-"}}}
    ```

    *New in version 0.1.0.*

    :param fields: only these keys are added (an allow-list); default: all.
    :param defaults: values for keys that are not bound, so that a format such
        as ``%(request_id)s`` never fails (also for keys outside *fields*).
    :param nest_under: add one attribute of this name holding a ``dict`` of the
        context, instead of one attribute per key.
    :param on_conflict: what to do with a key that collides with a standard
        `LogRecord` attribute (``name``, ``msg``, ``levelname``,
        ``taskName``, ...): ``"rename"`` stores it as ``ctx_<key>``, ``"drop"``
        leaves it out.
    :param redact: a [`Redactor`][ctxlog.Redactor], or ``True`` for the
        defaults: secrets in the context and in ``extra=`` values are replaced,
        and with patterns, in the message too (the JSON formatter's
        ``redact=`` also covers the exception text).

    A key passed with ``extra=`` in the log call wins over the bound context.
    The filter never drops a record and never raises into the log call.

    :raises ContextError: an option is invalid, or unknown (a typo in a
        ``dictConfig`` entry), at construction.
    """

    def __init__(
        self,
        *,
        fields: Iterable[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        nest_under: str | None = None,
        on_conflict: ConflictPolicy = "rename",
        redact: Redactor | bool | None = None,
        **unknown: NoReturn,  # a typo in a dictConfig entry: refused by name below
    ) -> None:
        super().__init__()
        check_no_options(unknown, "ContextFilter", _FILTER_OPTIONS)
        redactor = redactor_of(redact, "ContextFilter")
        projection = _record_projection(
            "ContextFilter", fields, defaults, nest_under, on_conflict, redactor
        )
        self._projection = projection
        self.redact = redactor
        self.fields = projection.fields
        self.defaults = projection.defaults
        self.nest_under = projection.nest_under
        self.on_conflict: ConflictPolicy = projection.on_conflict
        # What filter()'s common path reads its cache from: the projection when
        # the attributes land flat, else one whose cache never matches.  A
        # redactor with patterns rewrites every message: no common path then
        # (a check for it there would cost every other filter 6 % a record).
        flat = nest_under is None and not (redactor is not None and redactor.patterns)
        self._flat: Projection | _NeverCached = projection if flat else _NeverCached()

    def prepare(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Return the attributes this filter adds for the context *data*.

        Applies ``fields``, ``defaults`` and ``on_conflict``; the result is what
        lands on the record (flat) or under ``nest_under``.

        *New in version 0.1.0.*
        """
        return self._projection.prepare(data)

    def attributes(self) -> dict[str, Any]:
        """The attributes this filter would add to a record logged right now.

        *New in version 0.1.0.*
        """
        return self._projection.current()

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the context to *record*; always returns ``True``.

        *New in version 0.1.0.*
        """
        try:
            attrs = record.__dict__
            raw, unit, values, prepared, providers, stamp = self._flat.cache
            # The common path, for every record, is Projection.current()'s cache
            # check written out: the record holds just the attributes LogRecord()
            # sets, none of which can be a context attribute (those are never
            # reserved names).  extra=, another filter or a record factory make
            # it longer: the key check below.  Written out, it costs 6-9 %
            # less per record than the call (benchmarks/bench_core.py, "through
            # Projection.current()" against "ctxlog.ContextFilter").
            # With providers (ctxlog.otel), their stamp stands for their values:
            # one call, the same object while the span stays the same.
            if (
                raw is _read_store()
                and len(attrs) == _PLAIN_RECORD_LEN
                and providers is store.providers
                and (unit is None or unit.values is values)
                and (not providers or stamp is store.stamp())
            ):
                attrs.update(prepared)
                return True
            if self.redact is not None:
                _redact_record(self.redact, record)
            out = self._projection.current()
            # Membership through keys(): the record factory's __dict__ answers
            # False to `in` for what it added (so extra= may overwrite it), but
            # those values, captured where the record was made, win here too.
            present = attrs.keys()
            if self.nest_under is not None:
                if self.nest_under not in present:
                    attrs[self.nest_under] = dict(out)
                return True
            if present.isdisjoint(out):
                attrs.update(out)
            else:
                # Something (extra=, another filter, the record factory) set some
                # keys already: it wins.
                for key, value in out.items():
                    if key not in present:
                        attrs[key] = value
        except Exception:  # noqa: BLE001 -- a log call must never fail because of its context
            return True
        return True

    def __repr__(self) -> str:
        return f"ctxlog.ContextFilter({self._projection.describe()})"


def _redact_message(redactor: Redactor, record: logging.LogRecord) -> None:
    """The message, formatted now, with the patterns applied."""
    message = record.getMessage()
    redacted = redactor.text(message)
    if redacted is not message and redacted != message:
        record.msg = redacted
        record.args = None


def _redact_record(redactor: Redactor, record: logging.LogRecord) -> None:
    """Secrets in ``extra=`` values (what the record holds beyond LogRecord's
    own attributes), then in the message."""
    attrs = record.__dict__
    for key in [k for k in attrs if k not in RESERVED_ATTRS]:
        value = attrs[key]
        new = redactor.replacement if redactor.sensitive(key) else redactor.redact(value)
        if new is not value:
            attrs[key] = new
    if redactor.patterns:
        _redact_message(redactor, record)


class _NeverCached:
    """Stands in for the projection in ``ContextFilter.filter``'s common path
    when the context is nested: its cache never matches."""

    __slots__ = ()

    cache: Final = UNCACHED


# --------------------------------------------------------------------------
# record factory
# --------------------------------------------------------------------------


class _RecordDict(dict[str, Any]):
    """A record ``__dict__`` that lets ``extra=`` overwrite context attributes.

    ``Logger.makeRecord`` refuses an ``extra`` key that is already ``in
    record.__dict__`` (``KeyError: Attempt to overwrite ...``).  Keys the
    factory injected answer ``False`` to ``in`` until they are overwritten, so
    the explicit value wins instead of breaking the log call.
    """

    __slots__ = ("_injected",)

    _injected: frozenset[str]

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) and key not in self._injected

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._injected:
            self._injected = self._injected - {key}
        dict.__setitem__(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled or copied records carry a plain dict.
        return (dict, (dict(self),))


class _ContextRecordFactory:
    """Wraps the previous record factory and adds the context at creation."""

    __slots__ = ("previous", "projection")

    def __init__(self, previous: Any, projection: Projection) -> None:
        self.previous = previous
        self.projection = projection

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.previous(*args, **kwargs)
        try:
            projection = self.projection
            out = projection.current()
            if projection.nest_under is not None:
                out = {projection.nest_under: dict(out)}
            attrs = record.__dict__
            added = {k: v for k, v in out.items() if k not in attrs}
            if added:
                new = _RecordDict(attrs)
                new._injected = frozenset(added)
                dict.update(new, added)
                record.__dict__ = new
        except Exception:  # noqa: BLE001 -- never break record creation; see ContextFilter.filter
            return record
        return record


_factory_lock = threading.Lock()


def install_record_factory(
    *,
    fields: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    nest_under: str | None = None,
    on_conflict: ConflictPolicy = "rename",
) -> None:
    """Add the context to every `LogRecord` when it is created.

    The alternative to [`ContextFilter`][ctxlog.stdlib.ContextFilter] when records reach handlers on
    another thread (a ``QueueHandler``/``QueueListener``) or when no handler
    should need a filter: the context is captured on the thread that logs.
    Chains the factory installed before; calling it again only updates the
    options (it never wraps twice).  A key passed with ``extra=`` still wins
    and never raises ``KeyError: Attempt to overwrite``.

    Options are those of [`ContextFilter`][ctxlog.stdlib.ContextFilter].

    *New in version 0.1.0.*
    """
    projection = _record_projection(
        "install_record_factory", fields, defaults, nest_under, on_conflict
    )
    with _factory_lock:
        factory = logging.getLogRecordFactory()
        if isinstance(factory, _ContextRecordFactory):
            factory.projection = projection
        else:
            logging.setLogRecordFactory(_ContextRecordFactory(factory, projection))


def uninstall_record_factory() -> None:
    """Restore the record factory that
    [`install_record_factory`][ctxlog.stdlib.install_record_factory] wrapped.

    Does nothing when ctxlog's factory is not installed.

    *New in version 0.1.0.*

    :raises ContextError: another factory was installed on top of ctxlog's
        (uninstall that one first, or the chain would break).
    """
    with _factory_lock:
        factory = logging.getLogRecordFactory()
        if isinstance(factory, _ContextRecordFactory):
            logging.setLogRecordFactory(factory.previous)
            return
        chained = getattr(factory, "previous", None)
        while chained is not None:
            if isinstance(chained, _ContextRecordFactory):
                msg = (
                    f"uninstall_record_factory(): another record factory ({factory!r}) was "
                    "installed after ctxlog's; restore it first."
                )
                raise ContextError(msg)
            chained = getattr(chained, "previous", None)


# --------------------------------------------------------------------------
# configure()
# --------------------------------------------------------------------------

_CONFIGURED_MARK: Final = "_ctxlog_configured"


def _json_formatter_class() -> type[Any]:
    """python-json-logger's ``JsonFormatter``, writing ctxlog's line (made once)."""
    global _JSON_FORMATTER  # noqa: PLW0603 -- built on first use: the import is optional
    if _JSON_FORMATTER is not None:
        return _JSON_FORMATTER
    try:
        from pythonjsonlogger.json import JsonFormatter  # noqa: PLC0415 -- optional dependency
    except (
        ImportError
    ) as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
        msg = (
            "ctxlog writes JSON lines through python-json-logger (>= 3.1), which is not "
            "installed: pip install 'ctxlog-correlation[json]'"
        )
        raise ImportError(msg, name="pythonjsonlogger") from exc

    class ContextJsonFormatter(JsonFormatter):
        """One JSON object per record: ``time``, ``level``, ``logger``, ``message``,
        then the context and ``extra=`` values, then ``exception`` / ``stack``.

        ``format()`` builds the object in one pass over the record (the base
        class's generic field machinery is what a line spent most of its time
        in), then hands it to the serializer.
        """

        #: Set by ``json_formatter(redact=...)``: applied to the whole line.
        redactor: Redactor | None = None

        def format(self, record: logging.LogRecord) -> str:
            msg = record.msg
            record.message = "" if isinstance(msg, dict) else record.getMessage()
            data: dict[str, Any] = {
                "time": rfc3339(record.created),
                "level": record.levelname,
                "logger": record.name,
                "message": record.message,
            }
            for key, value in record.__dict__.items():
                if key not in NOT_EXTRA:
                    data[free_key(key, data) if key in _LINE_FIELDS else key] = value
            if isinstance(msg, dict):
                # A dict logged as the message: its keys win, as extra= does.
                for key, value in msg.items():
                    data[free_key(key, data) if key in _LINE_FIELDS else key] = value
            if record.exc_info and not record.exc_text:
                record.exc_text = str(self.formatException(record.exc_info))
            if record.exc_text:
                data["exception"] = record.exc_text
            if record.stack_info:
                data["stack"] = self.formatStack(record.stack_info)
            redactor = self.redactor
            if redactor is not None:
                data = redactor.redact_mapping(data)
            text: str = self.json_serializer(data, default=self.json_default, ensure_ascii=False)
            return text

    _JSON_FORMATTER = ContextJsonFormatter
    return ContextJsonFormatter


_JSON_FORMATTER: type[Any] | None = None
_LINE_FIELDS: Final = frozenset(LINE_FIELDS)


Serializer = Literal["auto", "json", "orjson"]


def _serializer(kind: Serializer) -> Callable[..., str]:
    if kind not in ("auto", "json", "orjson"):
        msg = f"json_formatter(serializer={kind!r}): use 'auto', 'json' or 'orjson'."
        raise ContextError(msg)
    if kind == "json":
        return dumps_line
    try:
        import orjson  # noqa: PLC0415 -- optional dependency, loaded with the formatter
    except ImportError as exc:
        if kind == "auto":
            return dumps_line
        msg = (
            "json_formatter(serializer='orjson') needs orjson: "
            "pip install 'ctxlog-correlation[orjson]'"
        )
        raise ImportError(msg, name="orjson") from exc
    return orjson_dumps_line(orjson.dumps)


def json_formatter(
    serializer: Serializer = "auto",
    *,
    redact: Redactor | bool | None = None,
    **unknown: NoReturn,  # a typo in a dictConfig entry: refused by name below
) -> logging.Formatter:
    """Return the JSON-lines formatter ``configure()`` uses (python-json-logger's
    ``JsonFormatter``, set up for ctxlog).

    Each line is one JSON object: ``time`` (RFC 3339, UTC, microseconds),
    ``level``, ``logger``, ``message``, then the context and the ``extra=``
    values, then ``exception`` and ``stack`` when there is a traceback.  Those
    six names always hold the line's own values: a context or ``extra=`` key
    of one of them is kept as ``ctx_<key>``.  Every line is strict JSON
    (RFC 8259) on one line, whatever is bound: a value JSON cannot hold as it
    is (a mapping with non-string keys, NaN, an int too long to print, deep or
    circular nesting, an object whose methods raise) is written as a string
    instead of losing the line, and DEL, C1 controls, U+2028/U+2029 and lone
    surrogates are escaped; other text stays readable UTF-8.  From
    ``dictConfig``: ``{"()": "ctxlog.stdlib.json_formatter"}``.

    *serializer*: ``"orjson"`` writes with orjson (``pip install
    'ctxlog-correlation[orjson]'``; a third less per line), ``"json"`` with the standard
    library, ``"auto"`` (the default) with orjson when it is installed.  The
    values are the same either way (NaN and infinities are ``null``); the
    spacing is not: orjson writes compact lines.

    *redact*: a [`Redactor`][ctxlog.Redactor], or ``True`` for the defaults:
    applied to the whole line (the context, ``extra=`` values, and with
    patterns the message and the exception text).

    *New in version 0.1.0.*

    :raises ImportError: python-json-logger (or orjson, when asked for) is not
        installed; the message names the extra to install.
    :raises ContextError: *serializer* is not one of the three, *redact* is
        neither a ``Redactor`` nor a bool, or another option is given (a typo in
        a ``dictConfig`` entry).
    """
    check_no_options(unknown, "json_formatter", ("serializer", "redact"))
    redactor = redactor_of(redact, "json_formatter")
    dumps = _serializer(serializer)
    formatter: logging.Formatter = _json_formatter_class()(
        "%(message)s", json_ensure_ascii=False, json_serializer=dumps
    )
    if redactor is not None:
        # The class (made at run time: its base is optional) declares the attribute.
        formatter.redactor = redactor  # type: ignore[attr-defined]
    return formatter


def configure(
    level: int | str = logging.INFO,
    *,
    stream: IO[str] | None = None,
    fields: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    nest_under: str | None = None,
    on_conflict: ConflictPolicy = "rename",
    formatter: logging.Formatter | None = None,
    replace_handlers: bool = False,
    redact: Redactor | bool | None = None,
) -> logging.Handler:
    """Set up root logging in one call: JSON lines on *stream* with the context.

    Installs one `logging.StreamHandler` on the root logger, writing to
    *stream* (default: ``sys.stderr``) through python-json-logger, with a
    [`ContextFilter`][ctxlog.stdlib.ContextFilter] built from *fields*, *defaults*, *nest_under* and
    *on_conflict* attached, and sets the root level to *level*.  Calling it
    again replaces the handler an earlier call installed (and only that one);
    other handlers are left alone, so after ``logging.basicConfig()`` every
    line is written twice (once by basicConfig's handler): pass
    *replace_handlers* to remove every other root handler first.  Pass
    *formatter* to write something other than JSON.  *redact* (a
    [`Redactor`][ctxlog.Redactor], or ``True`` for the defaults) replaces
    secrets in every line: on the filter, and on the JSON formatter when
    *formatter* is not given.  Returns the handler.

    *level* is a number or a level name in any case (``"debug"``).  Nothing
    changes when an argument is invalid.

    *New in version 0.1.0.*

    :raises ImportError: python-json-logger is missing (``pip install 'ctxlog-correlation[json]'``).
    :raises ValueError: *level* is not a known level name.
    :raises ContextError: a filter option is invalid.
    """
    check_flag(replace_handlers, "replace_handlers", "configure")
    redactor = redactor_of(redact, "configure")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(json_formatter(redact=redactor) if formatter is None else formatter)
    handler.addFilter(
        ContextFilter(
            fields=fields,
            defaults=defaults,
            nest_under=nest_under,
            on_conflict=on_conflict,
            redact=redactor,
        )
    )
    setattr(handler, _CONFIGURED_MARK, True)
    root = logging.getLogger()
    # First: an unknown level name raises before any handler is swapped.
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for old in list(root.handlers):
        if replace_handlers or getattr(old, _CONFIGURED_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    return handler
