"""ctxlog.headers: request-id validation, traceparent, outgoing_headers, escaping."""

from __future__ import annotations

import re
import string
import uuid
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import ctxlog
from ctxlog._middleware import Policy
from ctxlog._store import store
from ctxlog.headers import (
    MAX_REQUEST_ID_LENGTH,
    TraceParent,
    escape_rejected,
    is_valid_request_id,
    new_request_id,
    outgoing_headers,
    parse_traceparent,
)

ALLOWED = string.ascii_letters + string.digits + "._:-"
SPEC_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def unescape(text: str) -> str:
    """Inverse of escape_rejected for an untruncated value."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != ":":
            out.append(char)
            i += 1
            continue
        if text[i + 1] == "u":
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        elif text[i + 1] == "U":
            out.append(chr(int(text[i + 2 : i + 10], 16)))
            i += 10
        else:
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
    return "".join(out)


# --------------------------------------------------------------------------
# is_valid_request_id / new_request_id
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "0af7651916cd43dd8448eb211c80319c",
        "123e4567-e89b-12d3-a456-426614174000",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "1-67891233-abcdef012345678912345678",
        "svc.web:42_x-y",
        "x" * MAX_REQUEST_ID_LENGTH,
    ],
)
def test_valid_request_ids(value: str) -> None:
    assert is_valid_request_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * (MAX_REQUEST_ID_LENGTH + 1),
        "a b",
        "a\tb",
        "abc\n",  # a `$` anchor would have let the trailing newline through
        "a\r\nX-Injected: 1",
        "a\x00",
        "\x1b[31mred",
        "caf\u00e9",
        "\u0661\u0662",  # Arabic-Indic digits: \d would accept them
        "\uff41",  # fullwidth a
        "a,b",
        'a"b',
        "a'b",
        "a/b",
        "a=b",
        "a%0a",
        "a\\n",
    ],
)
def test_invalid_request_ids(value: str) -> None:
    assert not is_valid_request_id(value)


@pytest.mark.parametrize("value", [None, 1, b"abc", ["abc"]])
def test_non_strings_are_not_request_ids(value: object) -> None:
    assert not is_valid_request_id(value)


def test_a_huge_value_is_refused_by_length() -> None:
    assert not is_valid_request_id("a" * 10_000_000)


@given(st.text(max_size=200))
@example("x" * 128)
@example("x" * 129)
def test_validator_is_exactly_the_allow_list(value: str) -> None:
    expected = 1 <= len(value) <= MAX_REQUEST_ID_LENGTH and all(c in ALLOWED for c in value)
    assert is_valid_request_id(value) is expected


def test_new_request_id_is_valid_unique_hex() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        assert is_valid_request_id(request_id)
        parsed = uuid.UUID(request_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == request_id


# --------------------------------------------------------------------------
# traceparent
# --------------------------------------------------------------------------


def test_parse_the_spec_example() -> None:
    parsed = parse_traceparent(SPEC_TRACEPARENT)
    assert parsed == TraceParent("00", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01")
    assert parsed is not None
    assert parsed.sampled
    assert str(parsed) == SPEC_TRACEPARENT
    assert parse_traceparent(SPEC_TRACEPARENT.encode()) == parsed


def test_unsampled_flags() -> None:
    parsed = parse_traceparent(SPEC_TRACEPARENT[:-2] + "00")
    assert parsed is not None
    assert not parsed.sampled


def test_future_versions_may_append_fields() -> None:
    parsed = parse_traceparent("cc-" + SPEC_TRACEPARENT[3:] + "-what-the-future-holds")
    assert parsed is not None
    assert parsed.version == "cc"
    assert parsed.trace_id == "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        SPEC_TRACEPARENT.upper(),
        "ff" + SPEC_TRACEPARENT[2:],
        SPEC_TRACEPARENT + "-extra",  # version 00 is exactly 55 characters
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
        SPEC_TRACEPARENT[:-1],
        SPEC_TRACEPARENT + "\n",
        " " + SPEC_TRACEPARENT,
        "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        "cc-" + SPEC_TRACEPARENT[3:] + "x",
        "cc-" + SPEC_TRACEPARENT[3:] + "-" + "x" * 600,
    ],
)
def test_invalid_traceparents(value: str | None) -> None:
    assert parse_traceparent(value) is None


@given(st.text(max_size=80))
def test_parse_traceparent_never_raises(value: str) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        assert str(parsed) == value[:55]


# --------------------------------------------------------------------------
# outgoing_headers
# --------------------------------------------------------------------------


def test_nothing_bound_nothing_sent() -> None:
    assert outgoing_headers() == {}


def test_request_id_is_forwarded() -> None:
    with ctxlog.bind(request_id="r-1"):
        assert outgoing_headers() == {"X-Request-ID": "r-1"}
        assert outgoing_headers(header="X-Correlation-ID") == {"X-Correlation-ID": "r-1"}
    with ctxlog.bind(correlation_id="c-1"):
        assert outgoing_headers(key="correlation_id") == {"X-Request-ID": "c-1"}


@pytest.mark.parametrize("value", ["", "a\nb", "a b", "caf\u00e9", 42, None, "x" * 1025])
def test_unsafe_request_ids_are_not_forwarded(value: object) -> None:
    with ctxlog.bind(request_id=value):
        assert outgoing_headers() == {}


def test_traceparent_from_the_bound_trace_id() -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with ctxlog.bind(request_id="r-1", trace_id=trace_id):
        first = outgoing_headers()
        second = outgoing_headers()
    assert first["X-Request-ID"] == "r-1"
    parsed = parse_traceparent(first["traceparent"])
    assert parsed is not None
    assert parsed.trace_id == trace_id
    assert parsed.flags == "01"
    # no span bound: every outgoing call is a new hop with its own parent id
    other = parse_traceparent(second["traceparent"])
    assert other is not None
    assert other.parent_id != parsed.parent_id


def test_traceparent_uses_a_bound_span_id_and_the_incoming_flags() -> None:
    # The middlewares open the request's unit of work with its incoming flags.
    entry = store.open_unit({}, trace_flags="00")
    try:
        with ctxlog.bind(trace_id="0AF7651916CD43DD8448EB211C80319C", span_id="B7AD6B7169203331"):
            assert outgoing_headers() == {
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
            }
    finally:
        store.close_unit(entry)


@pytest.mark.parametrize("trace_id", ["0" * 32, "xyz", 123, "0af7651916cd43dd8448eb211c80319"])
def test_invalid_trace_ids_send_no_traceparent(trace_id: object) -> None:
    with ctxlog.bind(trace_id=trace_id):
        assert outgoing_headers() == {}


@pytest.mark.parametrize("span_id", ["0" * 16, "nothex__nothex__", 7])
def test_invalid_span_ids_get_a_fresh_parent(span_id: object) -> None:
    with ctxlog.bind(trace_id="0af7651916cd43dd8448eb211c80319c", span_id=span_id):
        parsed = parse_traceparent(outgoing_headers()["traceparent"])
    assert parsed is not None
    assert parsed.parent_id != "0" * 16


def test_outgoing_headers_is_exported() -> None:
    assert ctxlog.outgoing_headers is outgoing_headers
    assert "outgoing_headers" in ctxlog.__all__


# --------------------------------------------------------------------------
# escape_rejected
# --------------------------------------------------------------------------


def test_escape_examples() -> None:
    assert escape_rejected("abc") == "abc"
    assert escape_rejected("a b") == "a:20b"
    assert escape_rejected("a\r\nb") == "a:0d:0ab"
    assert escape_rejected("a:b") == "a:3ab"
    assert escape_rejected("caf\u00e9") == "caf:e9"
    assert escape_rejected("\u2028") == ":u2028"
    assert escape_rejected("\U0001f600") == ":U0001f600"
    assert escape_rejected(b"\xff\x00") == ":ff:00"
    assert escape_rejected("x" * 40) == "x" * 32 + "...len:40"
    assert escape_rejected("abcdef", limit=2) == "ab...len:6"


@given(st.one_of(st.text(max_size=100), st.binary(max_size=100)))
def test_escaped_form_uses_only_the_id_alphabet(value: str | bytes) -> None:
    out = escape_rejected(value)
    assert all(c in ALLOWED for c in out)
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if len(value) <= 32:
        assert unescape(out) == text
    else:
        assert out.endswith(f"...len:{len(value)}")
        assert unescape(out.rsplit("...len:", 1)[0]) == text[:32]
    # What made a value dangerous (anything outside the alphabet) cannot survive.
    if text and not all(c in ALLOWED for c in text):
        assert text not in out


@given(st.text(min_size=300, max_size=400))
def test_long_values_never_survive_escaping(value: str) -> None:
    out = escape_rejected(value)
    assert value not in out
    assert len(out) < 400


def _policy(validator: Any, max_length: int) -> Policy:
    return Policy(
        header="X-Request-ID",
        key="request_id",
        validator=validator,
        generator=lambda: "generated",
        transformer=None,
        echo=True,
        request_fields=(),
        traceparent=True,
        trace_key="trace_id",
        max_length=max_length,
        update_request_header=True,
        where="test",
    )


@given(
    raw=st.one_of(
        st.binary(max_size=140),
        st.text(string.ascii_letters + string.digits + "._:-", max_size=140).map(str.encode),
    ),
    max_length=st.sampled_from([1, 4, 32, 128, 129, 300]),
)
@example(raw=b"x" * 128, max_length=300)
@example(raw=b"x" * 129, max_length=300)
@example(raw=b"", max_length=128)
def test_the_default_validators_fast_path_agrees_with_the_validator(
    raw: bytes, max_length: int
) -> None:
    """Raw header bytes of the id alphabet are accepted without decoding when the
    validator is the default one: the verdict is the one the validator gives."""

    def the_same_validator(value: str) -> bool:  # not the default object: no fast path
        return is_valid_request_id(value)

    fast = _policy(is_valid_request_id, max_length)
    slow = _policy(the_same_validator, max_length)
    assert fast.accept(raw, 1) == slow.accept(raw, 1)
