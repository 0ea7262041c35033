"""ctxlog.sentry.ContextIntegration with a real sentry_sdk and a transport
that keeps every envelope in memory (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

import ctxlog
import ctxlog.sentry
from tests.conftest import THREADS_INHERIT_CONTEXT, import_error_without


class MemoryTransport(Transport):
    """Keeps the events of the envelopes Sentry would send."""

    events: ClassVar[list[dict[str, Any]]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event":
                event = item.payload.json
                assert event is not None
                MemoryTransport.events.append(event)


@contextlib.contextmanager
def sentry(*integrations: Integration) -> Iterator[list[dict[str, Any]]]:
    """A real Sentry client with these integrations only, sending to memory;
    yields the events sent, and takes the client down after."""
    MemoryTransport.events = []
    sentry_sdk.init(
        dsn="https://public@sentry.invalid/1",
        transport=MemoryTransport,
        default_integrations=False,
        integrations=list(integrations),
    )
    try:
        yield MemoryTransport.events
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    logging_integration = LoggingIntegration(level=None, event_level=logging.ERROR)
    with sentry(ctxlog.sentry.ContextIntegration(), logging_integration) as sent:
        yield sent


def test_exception_message_and_logging_events(events: list[dict[str, Any]]) -> None:
    log = logging.getLogger(f"tests.sentry.{uuid.uuid4().hex}")
    with ctxlog.scope(request_id="r-1", user_id=7, cart={"items": [1, 2]}):
        try:
            raise ValueError("boom")
        except ValueError:
            sentry_sdk.capture_exception()
        sentry_sdk.capture_message("a message")
        log.error("a logged error")
    exception, message, logged = events
    assert exception["exception"]["values"][0]["value"] == "boom"
    assert message["message"] == "a message"
    assert logged["logentry"]["message"] == "a logged error"
    for event in events:
        assert event["tags"]["request_id"] == "r-1"
        assert event["contexts"]["ctxlog"] == {
            "request_id": "r-1",
            "user_id": 7,
            "cart": {"items": [1, 2]},
        }


def test_values_where_the_event_was_captured(events: list[dict[str, Any]]) -> None:
    """Threads, pools and tasks ctxlog handed the work to capture with their values."""

    def in_thread(tag: str) -> None:
        with ctxlog.bind(step=tag):
            sentry_sdk.capture_message(tag)

    async def in_task(tag: str) -> None:
        await asyncio.sleep(0)
        sentry_sdk.capture_message(tag)

    async def tasks() -> None:
        async with ctxlog.scope(request_id="r-task"):
            await asyncio.gather(*(asyncio.create_task(in_task(f"task-{n}")) for n in range(3)))

    with ctxlog.scope(request_id="r-2"):
        thread = ctxlog.Thread(target=in_thread, args=("thread",))
        thread.start()
        thread.join()
        with ctxlog.ThreadPoolExecutor(2) as pool:
            list(pool.map(in_thread, ["pool-1", "pool-2"]))
        plain = threading.Thread(target=sentry_sdk.capture_message, args=("bare thread",))
        plain.start()
        plain.join()
    asyncio.run(tasks())
    sentry_sdk.capture_message("outside")
    by_message = {event["message"]: event for event in events}
    for name in ("thread", "pool-1", "pool-2"):
        assert by_message[name]["contexts"]["ctxlog"] == {"request_id": "r-2", "step": name}
        assert by_message[name]["tags"]["request_id"] == "r-2"
    for n in range(3):
        assert by_message[f"task-{n}"]["contexts"]["ctxlog"] == {"request_id": "r-task"}
    # A plain thread starts empty, unless threads inherit the context of the caller
    # of start() (3.14+, thread_inherit_context): Sentry gets what is in force there.
    if THREADS_INHERIT_CONTEXT:
        assert by_message["bare thread"]["contexts"]["ctxlog"] == {"request_id": "r-2"}
        assert by_message["bare thread"]["tags"]["request_id"] == "r-2"
    for name in ("outside",) if THREADS_INHERIT_CONTEXT else ("bare thread", "outside"):
        assert "ctxlog" not in by_message[name].get("contexts", {})
        assert "request_id" not in by_message[name].get("tags", {})


def test_values_are_made_safe_and_tags_valid(events: list[dict[str, Any]]) -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError

    sentry_sdk.set_tag("request_id", "set-by-hand")
    try:
        with ctxlog.bind(request_id="r-3", odd=Broken(), big=10**5000, nan=float("nan")):
            sentry_sdk.capture_message("kept tag")
    finally:
        sentry_sdk.get_isolation_scope().remove_tag("request_id")
    with ctxlog.bind(request_id="line\nbreak"):
        sentry_sdk.capture_message("bad tag")
    with ctxlog.bind(request_id=True):
        sentry_sdk.capture_message("not a tag")
    kept, bad, flag = events
    assert "request_id" not in flag["tags"]
    assert kept["tags"]["request_id"] == "set-by-hand"
    assert kept["contexts"]["ctxlog"] == {
        "request_id": "r-3",
        "odd": "<unrepresentable Broken>",
        "big": "<int of 16610 bits>",
        "nan": None,
    }
    assert "request_id" not in bad["tags"]
    assert bad["contexts"]["ctxlog"] == {"request_id": "line\nbreak"}


def test_options() -> None:
    integration = ctxlog.sentry.ContextIntegration(
        tags=["tenant", "request_id"], context_name="request", fields=["tenant"]
    )
    with sentry(integration) as events, ctxlog.bind(request_id="r-4", tenant="acme", secret="s"):
        sentry_sdk.capture_message("options")
    (event,) = events
    assert event["tags"] == {"tenant": "acme", "request_id": "r-4"}
    assert event["contexts"]["request"] == {"tenant": "acme"}
    assert "ctxlog" not in event["contexts"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tags": "request_id"}, "not a string"),
        ({"fields": "request_id"}, "not a string"),
        ({"tags": [""]}, "non-empty"),
        ({"context_name": ""}, "non-empty name"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        ctxlog.sentry.ContextIntegration(**options)


def test_without_the_integration_events_are_left_alone() -> None:
    with sentry(ctxlog.sentry.ContextIntegration()):
        pass  # its processor is registered for good once a client has used it
    with sentry() as events, ctxlog.bind(request_id="r-5"):
        sentry_sdk.capture_message("not ours")
    (event,) = events
    assert "ctxlog" not in event.get("contexts", {})


def test_missing_sentry_names_the_extra() -> None:
    message = import_error_without("sentry_sdk", "import ctxlog.sentry")
    assert "pip install 'ctxlog-correlation[sentry]'" in message


def test_redact_covers_the_context_and_the_tags() -> None:
    integration = ctxlog.sentry.ContextIntegration(tags=("request_id", "token"), redact=True)
    with (
        sentry(integration) as sent,
        ctxlog.scope(request_id="r-9", token="t0k", user={"pwd": "x"}),
    ):
        sentry_sdk.capture_message("hello")
    (event,) = sent
    assert "t0k" not in repr(event)
    assert event["contexts"]["ctxlog"] == {
        "request_id": "r-9",
        "token": "[REDACTED]",
        "user": {"pwd": "[REDACTED]"},
    }
    assert event["tags"]["request_id"] == "r-9"
    assert event["tags"].get("token") in (None, "[REDACTED]")
