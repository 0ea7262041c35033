"""W3C Baggage: the parser, the outgoing header, and the options that take baggage keys."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import ctxlog
from ctxlog.asgi import RequestContextMiddleware as AsgiMiddleware
from ctxlog.headers import (
    MAX_BAGGAGE_BYTES,
    MAX_BAGGAGE_ENTRIES,
    MAX_BAGGAGE_VALUE_LENGTH,
    baggage_header,
    parse_baggage,
)
from ctxlog.testing import capture
from ctxlog.wsgi import RequestContextMiddleware as WsgiMiddleware
from tests.strategies import baggage_keys, baggage_properties, baggage_values, hostile_baggage


def test_the_w3c_examples() -> None:
    assert parse_baggage("key1=value1,key2=value2") == {"key1": "value1", "key2": "value2"}
    assert parse_baggage("key1 = value1 ,  key2=value2 ") == {"key1": "value1", "key2": "value2"}
    assert parse_baggage(
        "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue"
    ) == {
        "key1": "value1",
        "key2": "value2",
        "key3": "value3",
    }
    assert parse_baggage("serverNode=DF%2028,userId=Am%C3%A9lie") == {
        "serverNode": "DF 28",
        "userId": "Amélie",
    }


def test_several_header_lines_keys_and_repeats() -> None:
    lines: list[str | bytes] = [b"tenant=acme,plan=free", "region=eu, tenant=globex"]
    assert parse_baggage(lines) == {"tenant": "globex", "plan": "free", "region": "eu"}
    assert parse_baggage(lines, {"tenant", "other"}) == {"tenant": "globex"}
    assert parse_baggage(None) == {}
    assert parse_baggage("") == {}
    assert parse_baggage([None, 7, "a=1"]) == {"a": "1"}  # type: ignore[list-item]  # what a hostile caller may hand over


@pytest.mark.parametrize(
    "member",
    [
        "bad key=1",  # a space inside the key
        "k=a b",  # a raw space inside the value
        'k="quoted"',
        "k=back\\slash",
        "=novalue",
        "noequals",
        "k=%0A",  # a line break, once decoded
        "k=%1B%5B31m",  # an escape sequence
        "k=%E2%80%A8",  # U+2028, a line separator to str.splitlines()
        "k=%FF",  # not UTF-8
        "k=%zz",
        "k=%",
        "k=é",  # not a baggage octet: must be percent-encoded
        "k=" + "a" * (MAX_BAGGAGE_VALUE_LENGTH + 1),
    ],
)
def test_malformed_or_unsafe_members_are_dropped_alone(member: str) -> None:
    assert parse_baggage(f"a=1,{member},b=2") == {"a": "1", "b": "2"}


def test_limits() -> None:
    many = ",".join(f"k{i}=v" for i in range(10_000))
    parsed = parse_baggage(many)
    assert len(parsed) == MAX_BAGGAGE_ENTRIES
    assert list(parsed)[-1] == f"k{MAX_BAGGAGE_ENTRIES - 1}"
    # Exactly at the byte limit: kept; one byte more: the member crossing it is dropped.
    filler = "f=" + "a" * 1000
    head = ",".join([filler] * 8)  # 8 * 1002 + 7 bytes
    room = MAX_BAGGAGE_BYTES - len(head) - 1 - len("k=")
    assert parse_baggage(f"{head},k={'b' * room}")["k"] == "b" * room
    assert "k" not in parse_baggage(f"{head},k={'b' * (room + 1)}")
    # A megabyte value costs no more than the limit, and binds nothing.
    assert parse_baggage("tenant=" + "a" * 3_000_000) == {}
    assert parse_baggage(["a=1", "b=" + "x" * 3_000_000, "c=3"]) == {"a": "1"}


@given(
    st.dictionaries(
        baggage_keys, st.tuples(baggage_values, baggage_properties), min_size=1, max_size=8
    ),
    st.sampled_from([",", ", ", " ,\t"]),
)
def test_round_trip_through_the_header(
    members: dict[str, tuple[str, list[str]]], separator: str
) -> None:
    values = {key: value for key, (value, _) in members.items()}
    header = baggage_header(values.items())
    assert header is not None
    assert header.isascii()
    assert parse_baggage(header) == values
    # Properties, as other tracers send them, are read past.
    sent = header.split(",")
    with_properties = separator.join(
        ";".join([member, *properties])
        for member, (_, properties) in zip(sent, members.values(), strict=True)
    )
    assert parse_baggage(with_properties) == values


@given(hostile_baggage)
@example("tenant=a%0AINFO forged line")
@example(b"tenant=\xff\xfe,\r\nx=1")
def test_a_hostile_header_never_raises_and_yields_only_safe_values(raw: Any) -> None:
    parsed = parse_baggage(raw)
    assert len(parsed) <= MAX_BAGGAGE_ENTRIES
    for key, value in parsed.items():
        assert key.isascii()
        assert key.isprintable()
        assert len(value) <= MAX_BAGGAGE_VALUE_LENGTH
        assert value.isprintable()  # no control, no line break of any kind


def test_baggage_header_leaves_out_what_cannot_travel() -> None:
    header = baggage_header(
        [
            ("tenant", "acme corp"),
            ("n", 3),
            ("ratio", 0.5),
            ("nested", {"a": 1}),
            ("bad key", "x"),
            ("line", "a\nb"),
            ("long", "x" * (MAX_BAGGAGE_VALUE_LENGTH + 1)),
            ("enc", 'ü;,%\\"'),
        ]
    )
    assert header == "tenant=acme%20corp,n=3,ratio=0.5,enc=%C3%BC%3B%2C%25%5C%22"
    assert baggage_header([]) is None
    assert baggage_header([("x", None)]) is None
    many = baggage_header((f"k{i}", "v" * 100) for i in range(500))
    assert many is not None
    assert len(many) <= MAX_BAGGAGE_BYTES
    assert len(many.split(",")) <= MAX_BAGGAGE_ENTRIES


def test_outgoing_headers_carry_the_bound_baggage() -> None:
    with ctxlog.bind(request_id="r-1", tenant="acme", plan="pro team"):
        headers = ctxlog.outgoing_headers(baggage=("tenant", "plan", "absent"))
        assert headers == {"X-Request-ID": "r-1", "baggage": "tenant=acme,plan=pro%20team"}
        assert "baggage" not in ctxlog.outgoing_headers()
        assert "baggage" not in ctxlog.outgoing_headers(baggage=("absent",))
    with pytest.raises(ctxlog.ContextError, match="not a baggage key"):
        ctxlog.outgoing_headers(baggage=("bad key",))
    with pytest.raises(ctxlog.ContextError, match="not a string"):
        ctxlog.outgoing_headers(baggage="tenant")
    with pytest.raises(ctxlog.ContextError, match="collection of baggage keys"):
        ctxlog.outgoing_headers(baggage=5)  # type: ignore[arg-type]  # the mistake under test


def app(*_: Any) -> Any:
    """An application the options are checked for, never called."""
    raise AssertionError


@pytest.mark.parametrize("middleware", [AsgiMiddleware, WsgiMiddleware])
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"baggage": "tenant"}, "not a string"),
        ({"baggage": ["bad key"]}, "not a baggage key"),
        ({"baggage": [1]}, "not a baggage key"),
        ({"baggage": ["request_id"]}, "must not replace them"),
        ({"baggage": ["trace_id"]}, "must not replace them"),
        ({"baggage": ["path"], "request_fields": ["path"]}, "must not replace them"),
    ],
)
def test_middleware_options(middleware: Any, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        middleware(app, **options)


def test_wsgi_binds_the_baggage_keys_for_the_request() -> None:
    """The WSGI middleware in-process (the real servers are in tests/integration)."""
    log = logging.getLogger("tests.baggage")

    def view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        log.info("view")
        start_response("200 OK", [])
        return [b""]

    wrapped = WsgiMiddleware(view, baggage=["tenant", "plan"])
    environ = {"REQUEST_METHOD": "GET", "HTTP_BAGGAGE": "tenant=acme,plan=pro%20team,other=x"}
    with capture(level="INFO") as lines:
        body = wrapped(environ, lambda *_: lambda _data: None)
        list(body)
        getattr(body, "close", lambda: None)()
    (line,) = [line for line in lines if line["logger"] == "tests.baggage"]
    assert (line["tenant"], line["plan"]) == ("acme", "pro team")
    assert "other" not in line
    assert dict(ctxlog.current()) == {}
