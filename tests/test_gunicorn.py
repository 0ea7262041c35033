"""ctxlog.gunicorn.AccessLogFilter on records shaped as gunicorn's access records
(the real gunicorn runs in tests/integration/test_server_lines.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import ctxlog
from ctxlog.gunicorn import AccessLogFilter


def access_record(atoms: dict[str, Any], **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(r)s", None, None)
    record.args = atoms  # gunicorn passes its atoms mapping as the one argument
    record.__dict__.update(extra)
    return record


def test_the_id_comes_from_the_echoed_response_header() -> None:
    record = access_record({"r": "GET / HTTP/1.1", "{x-request-id}o": "abc-1"})
    assert AccessLogFilter().filter(record)
    assert record.__dict__["request_id"] == "abc-1"


def test_header_and_key_options() -> None:
    record = access_record({"{x-correlation-id}o": "c-1", "{x-request-id}o": "other"})
    AccessLogFilter(header="X-Correlation-ID", key="correlation_id").filter(record)
    assert record.__dict__["correlation_id"] == "c-1"
    assert "request_id" not in record.__dict__


@pytest.mark.parametrize("value", ["-", "has space", "ctl\n", "", 42, None])
def test_nothing_is_added_for_a_missing_or_unsendable_value(value: object) -> None:
    record = access_record({"{x-request-id}o": value})
    AccessLogFilter().filter(record)
    assert "request_id" not in record.__dict__


def test_a_value_the_record_has_wins_and_plain_records_pass() -> None:
    record = access_record({"{x-request-id}o": "abc"}, request_id="given")
    AccessLogFilter().filter(record)
    assert record.__dict__["request_id"] == "given"
    plain = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "plain", (), None)
    assert AccessLogFilter().filter(plain)
    assert "request_id" not in plain.__dict__


@pytest.mark.parametrize(
    ("options", "match"), [({"header": "bad header"}, "header"), ({"key": ""}, "context keys")]
)
def test_invalid_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        AccessLogFilter(**options)


def test_repr() -> None:
    assert repr(AccessLogFilter()) == (
        "ctxlog.gunicorn.AccessLogFilter(header='X-Request-ID', key='request_id')"
    )
