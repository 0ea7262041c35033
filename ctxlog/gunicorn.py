"""gunicorn's access lines for WSGI workers (sync, gthread): the request id from the response.

A sync or gthread worker writes its access line after the application's
response is finished, in the worker thread, outside the context the WSGI
middleware ran the request in: [`ctxlog.ContextFilter`][ctxlog.ContextFilter] finds nothing
bound there.  The id is still on the response, in the header the middleware
echoes.  [`AccessLogFilter`][ctxlog.gunicorn.AccessLogFilter], on the ``gunicorn.access`` logger,
takes it
from there and puts it on the record under the context key, where the JSON
formatter (or ``%(request_id)s``) finds it.

Nothing of gunicorn is imported: the filter reads the mapping gunicorn passes
as the access record's arguments (the atoms of ``access_log_format``, which
hold every response header as ``{name}o``).  Under uvicorn workers the access
line is written inside the request's context and needs no such filter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from ctxlog._errors import check_key
from ctxlog.headers import REQUEST_ID_HEADER, check_header_name, forwardable

__all__ = ["AccessLogFilter"]

_NOT_SENT: Final = "-"  # what gunicorn's atoms hold for a header that was not sent


class AccessLogFilter(logging.Filter):
    """Put the request id of a gunicorn access line on its record.

    Put it on the ``gunicorn.access`` logger (``logconfig_dict``:
    ``"loggers": {"gunicorn.access": {"filters": ["access_id"], ...}}``), with
    the *header* and *key* the WSGI middleware uses.  A record that already
    has *key* keeps it; a response without the header adds nothing (the
    handler's [`ctxlog.ContextFilter`][ctxlog.ContextFilter] default then shows).  Values that
    could not have been sent by the middleware (not printable ASCII, spaces)
    are ignored.

    *New in version 0.1.0.*

    :raises ctxlog.ContextError: *header* or *key* is invalid.
    """

    def __init__(self, header: str = REQUEST_ID_HEADER, key: str = "request_id") -> None:
        super().__init__()
        check_header_name(header, "AccessLogFilter")
        check_key(key, "AccessLogFilter")
        self.header = header
        self.key = key
        self._atom = "{" + header.lower() + "}o"

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        args = record.args
        if self.key not in attrs and isinstance(args, Mapping):
            value = args.get(self._atom)
            if value != _NOT_SENT and forwardable(value):
                attrs[self.key] = value
        return True

    def __repr__(self) -> str:
        return f"ctxlog.gunicorn.AccessLogFilter(header={self.header!r}, key={self.key!r})"
