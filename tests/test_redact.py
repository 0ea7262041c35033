"""ctxlog.Redactor and redact=: no secret in any line, nothing else touched."""

from __future__ import annotations

import copy
import io
import json
import logging
import logging.config
import uuid
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

import ctxlog
from ctxlog.structlog import JSON_RENDERING, SHARED_PROCESSORS, Redact, merge_context

SECRET_KEYS = sorted(ctxlog.DEFAULT_SENSITIVE_KEYS)


def secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def json_logger(stream: io.StringIO, **options: Any) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ctxlog.stdlib.json_formatter(redact=options.get("redact")))
    handler.addFilter(ctxlog.ContextFilter(**options))
    logger = logging.getLogger(f"ctxlog.test.redact.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


# -- the redactor --------------------------------------------------------------------


def test_keys_match_without_case_and_with_dashes() -> None:
    redactor = ctxlog.Redactor()
    data = {
        "Password": "a",
        "API-KEY": "b",
        "Set-Cookie": "c",
        "user": "ada",
        "nested": {"Authorization": "d", "list": [{"TOKEN": "e"}, "plain"]},
    }
    before = copy.deepcopy(data)
    out = redactor.redact(data)
    assert out == {
        "Password": "[REDACTED]",
        "API-KEY": "[REDACTED]",
        "Set-Cookie": "[REDACTED]",
        "user": "ada",
        "nested": {"Authorization": "[REDACTED]", "list": [{"TOKEN": "[REDACTED]"}, "plain"]},
    }
    assert data == before  # never mutated


def test_a_sensitive_key_replaces_a_whole_container() -> None:
    out = ctxlog.Redactor().redact({"session": {"id": 1, "user": "x"}, "cookie": ["a", "b"]})
    assert out == {"session": "[REDACTED]", "cookie": "[REDACTED]"}


def test_untouched_values_are_the_same_objects() -> None:
    data = {"user": {"name": "ada", "roles": ["a", "b"]}, "n": 1}
    assert ctxlog.Redactor().redact(data) is data


def test_the_shipped_patterns() -> None:
    redactor = ctxlog.Redactor(
        patterns=[ctxlog.BEARER_TOKEN, ctxlog.JWT, ctxlog.CARD_NUMBER], replacement="***"
    )
    text = (
        "Authorization: Bearer abc.DEF-123_x~+/= then "
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_x and "
        "card 4111 1111 1111 1111, 5500-0000-0000-0004 and 4012888888881881; "
        "order 1234567890123456 and time 1733300000000"
    )
    assert redactor.text(text) == (
        "Authorization: *** then *** and card ***, *** and ***; "
        "order 1234567890123456 and time 1733300000000"
    )


def test_a_replacement_that_looks_like_a_group_reference_is_written_as_is() -> None:
    redactor = ctxlog.Redactor(patterns=[r"secret-\w+"], replacement=r"\1 \g<0>")
    assert redactor.text("x secret-abc y") == r"x \1 \g<0> y"


def test_a_custom_pattern_with_a_check() -> None:
    even = ctxlog.Pattern(r"\b\d+\b", check=lambda text: int(text) % 2 == 0)
    assert ctxlog.Redactor(patterns=[even]).text("1 2 3 4") == "1 [REDACTED] 3 [REDACTED]"


def test_the_marker_never_holds_the_secret() -> None:
    value = secret()
    redactor = ctxlog.Redactor(patterns=[r"s3cr3t-\w+"])
    for out in (redactor.redact({"password": value}), redactor.text(value)):
        assert value not in json.dumps(out)
        assert value[:8] not in json.dumps(out)
        assert str(len(value)) not in json.dumps(out)


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no")

    __str__ = __repr__


class BadMapping(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError("no items")


def test_never_raises_and_fails_closed() -> None:
    redactor = ctxlog.Redactor(patterns=[ctxlog.JWT])
    assert redactor.redact(Hostile()) == "<unrepresentable Hostile>"
    assert redactor.redact(BadMapping(password="x", user="y")) == {
        "password": "[REDACTED]",
        "user": "y",
    }
    deep: Any = "leaf"
    for _ in range(50):
        deep = {"k": deep}
    out = json.dumps(redactor.redact(deep))
    assert "leaf" not in out  # past the depth bound, replaced whole
    loop: list[Any] = []
    loop.append(loop)
    assert "[REDACTED]" in json.dumps(redactor.redact(loop))


def test_bad_options_are_refused() -> None:
    with pytest.raises(ctxlog.ContextError, match="keys"):
        ctxlog.Redactor(keys="password")
    with pytest.raises(ctxlog.ContextError, match="patterns"):
        ctxlog.Redactor(patterns=r"x")
    with pytest.raises(ctxlog.ContextError, match="replacement"):
        ctxlog.Redactor(replacement=None)  # type: ignore[arg-type]
    with pytest.raises(ctxlog.ContextError, match="redact"):
        ctxlog.ContextFilter(redact="yes")  # type: ignore[arg-type]
    with pytest.raises(ctxlog.ContextError, match="redact"):
        merge_context(redact=1)  # type: ignore[call-overload]


# -- every output path ---------------------------------------------------------------


def test_bound_annotated_extra_message_and_exception(stream: io.StringIO) -> None:
    redactor = ctxlog.Redactor(patterns=[ctxlog.BEARER_TOKEN])
    logger = json_logger(stream, redact=redactor)
    values = [secret() for _ in range(5)]
    with ctxlog.scope(request_id="r1"), ctxlog.bind(password=values[0], user="ada"):
        ctxlog.annotate(api_key=values[1])
        try:
            raise ValueError(f"Bearer {values[2]}")
        except ValueError:
            logger.exception(
                "login with Bearer %s", values[3], extra={"Authorization": values[4], "n": 1}
            )
    text = stream.getvalue()
    for value in values:
        assert value not in text
    line = json.loads(text)
    assert line["password"] == line["api_key"] == line["Authorization"] == "[REDACTED]"
    assert line["user"] == "ada"
    assert line["n"] == 1
    assert line["request_id"] == "r1"
    assert line["message"] == "login with [REDACTED]"
    assert "ValueError: [REDACTED]" in line["exception"]


def test_configure_redacts_every_line(stream: io.StringIO) -> None:
    ctxlog.configure(stream=stream, redact=True)
    value = secret()
    with ctxlog.bind(token=value, tenant="t1"):
        logging.getLogger("ctxlog.test.configure").warning("hello", extra={"cookie": value})
    line = json.loads(stream.getvalue())
    assert value not in stream.getvalue()
    assert line["token"] == line["cookie"] == "[REDACTED]"
    assert line["tenant"] == "t1"


def test_the_filter_alone_with_a_text_formatter(stream: io.StringIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(password)s %(client_secret)s"))
    handler.addFilter(ctxlog.ContextFilter(redact=ctxlog.Redactor(patterns=[r"s3cr3t-\w+"])))
    logger = logging.getLogger("ctxlog.test.redact.text")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        values = [secret() for _ in range(3)]
        with ctxlog.bind(password=values[0]):
            logger.warning("said %s", values[1], extra={"client_secret": values[2]})
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "said [REDACTED] [REDACTED] [REDACTED]\n"


def test_from_dictconfig(stream: io.StringIO) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"ctx": {"()": "ctxlog.ContextFilter", "redact": True}},
            "formatters": {"json": {"()": "ctxlog.stdlib.json_formatter", "redact": True}},
            "handlers": {
                "out": {
                    "class": "logging.StreamHandler",
                    "stream": stream,
                    "formatter": "json",
                    "filters": ["ctx"],
                }
            },
            "loggers": {
                "ctxlog.test.redact.dict": {
                    "handlers": ["out"],
                    "level": "INFO",
                    "propagate": False,
                }
            },
        }
    )
    logger = logging.getLogger("ctxlog.test.redact.dict")
    try:
        with ctxlog.bind(passwd="x"):
            logger.info("m")
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    assert json.loads(stream.getvalue())["passwd"] == "[REDACTED]"


def test_the_caller_objects_are_never_changed(stream: io.StringIO) -> None:
    logger = json_logger(stream, redact=True)
    payload = {"password": "p", "items": [{"token": "t"}]}
    extra_payload = {"secret": "s"}
    with ctxlog.bind(payload=payload):
        logger.info("x", extra={"data": extra_payload})
    assert payload == {"password": "p", "items": [{"token": "t"}]}
    assert extra_payload == {"secret": "s"}
    line = json.loads(stream.getvalue())
    assert line["payload"] == {"password": "[REDACTED]", "items": [{"token": "[REDACTED]"}]}


def test_structlog_keywords_context_and_exception() -> None:
    out = io.StringIO()
    redactor = ctxlog.Redactor(patterns=[ctxlog.JWT])
    structlog.configure(
        processors=[
            merge_context(redact=redactor),
            structlog.processors.format_exc_info,
            Redact(redactor),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"
    try:
        with ctxlog.bind(refresh_token="r", user="u"):
            try:
                raise RuntimeError(jwt)
            except RuntimeError:
                structlog.get_logger().exception("oops " + jwt, private_key="k", n=2)
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert jwt not in text
    event = json.loads(text)
    assert event["refresh_token"] == event["private_key"] == "[REDACTED]"
    assert event["user"] == "u"
    assert event["n"] == 2
    assert event["event"] == "oops [REDACTED]"


def test_structlog_through_the_stdlib_keeps_its_record() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[*JSON_RENDERING[:-1], Redact(), JSON_RENDERING[-1]],
            foreign_pre_chain=list(SHARED_PROCESSORS),
        )
    )
    logger = logging.getLogger("ctxlog.test.redact.pf")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with ctxlog.bind(secret="x"):
            logger.warning("plain record")
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["secret"] == "[REDACTED]"
    assert line["message"] == "plain record"


# -- the property ----------------------------------------------------------------------

plain_keys = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
    lambda k: ctxlog.Redactor().sensitive(k) is False
)
plain_values = st.one_of(
    st.integers(-(10**9), 10**9), st.booleans(), st.none(), st.text("xyz 019", max_size=8)
)


def random_case(draw: st.DrawFn, key: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
    return "".join(c.upper() if flip else c for c, flip in zip(key, flips, strict=True))


@st.composite
def planted(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], list[Any]]:
    """A nested value with secrets under sensitive keys at random depths and
    casings, the secrets, and the plain leaves that must survive as they are."""
    secrets: list[str] = []
    leaves: list[Any] = []

    def build(depth: int) -> Any:
        kind = draw(st.sampled_from(["leaf", "dict", "list"] if depth < 6 else ["leaf"]))
        if kind == "leaf":
            value = draw(plain_values)
            leaves.append(value)
            return value
        if kind == "list":
            return [build(depth + 1) for _ in range(draw(st.integers(0, 3)))]
        out: dict[str, Any] = {}
        for _ in range(draw(st.integers(0, 3))):
            out[draw(plain_keys)] = build(depth + 1)
        if draw(st.booleans()):
            value = secret()
            secrets.append(value)
            out[random_case(draw, draw(st.sampled_from(SECRET_KEYS)).replace("_", "-"))] = (
                value if draw(st.booleans()) else {"inner": value, "list": [value]}
            )
        return out

    top: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 4))):
        top[draw(plain_keys)] = build(1)
    value = secret()
    secrets.append(value)
    top[random_case(draw, draw(st.sampled_from(SECRET_KEYS)))] = value
    return top, secrets, leaves


def leaves_of(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves_of(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves_of(item)]
    return [value]


@given(planted())
def test_no_secret_in_any_line_and_every_plain_value_untouched(
    case: tuple[dict[str, Any], list[str], list[Any]],
) -> None:
    data, secrets, _ = case
    before = copy.deepcopy(data)
    stream = io.StringIO()
    logger = json_logger(stream, redact=True)
    extra_key = next(iter(data))
    with ctxlog.bind(**data):
        logger.info("m", extra={"payload": data, extra_key + "_x": data[extra_key]})
    events = io.StringIO()
    structlog.configure(
        processors=[merge_context(redact=True), structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(events),
        cache_logger_on_first_use=False,
    )
    try:
        with ctxlog.bind(bound=data):
            structlog.get_logger().info("e", kw=data)
    finally:
        structlog.reset_defaults()
    for text in (stream.getvalue(), events.getvalue()):
        for value in secrets:
            assert value not in text
    assert data == before
    # Every plain leaf is still there, unchanged, in the same place.
    line = json.loads(stream.getvalue())
    redacted = ctxlog.Redactor().redact(data)
    assert line["payload"] == redacted
    expected = [leaf for leaf in leaves_of(redacted) if leaf != "[REDACTED]"]
    assert expected == [leaf for leaf in leaves_of(data) if not _is_secret(leaf, secrets)]
    event = json.loads(events.getvalue())
    assert event["kw"] == redacted
    assert event["bound"] == redacted


def _is_secret(leaf: Any, secrets: list[str]) -> bool:
    return isinstance(leaf, str) and leaf in secrets
