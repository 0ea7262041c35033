"""ctxlog.TailSamplingHandler and ctxlog.structlog.TailSampling: the lines written."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import io
import json
import logging
import logging.config
import subprocess
import sys
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import ctxlog
from ctxlog._sampling import keeps
from ctxlog._store import store
from ctxlog.structlog import TailSampling, merge_context


class Sink:
    """A JSON-lines handler (with ctxlog's filter on it) over a StringIO."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(ctxlog.stdlib.json_formatter())
        self.handler.addFilter(ctxlog.ContextFilter())
        self.lock = threading.Lock()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def messages(self) -> list[str]:
        return [line["message"] for line in self.lines()]


@pytest.fixture
def sink() -> Sink:
    return Sink()


@contextlib.contextmanager
def sampled(handler: logging.Handler) -> Iterator[logging.Logger]:
    """A fresh logger writing only through *handler*, until the block ends."""
    logger = logging.getLogger(f"ctxlog.test.sampling.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def log(sink: Sink) -> Iterator[tuple[logging.Logger, ctxlog.TailSamplingHandler]]:
    handler = ctxlog.TailSamplingHandler(sink.handler, capacity=50)
    logger = logging.getLogger(f"ctxlog.test.sampling.{id(sink)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def test_outside_any_unit_records_pass_straight_through(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, _ = log
    logger.debug("debug")
    logger.info("info")
    assert sink.messages() == ["debug", "info"]


def test_a_clean_unit_drops_its_quiet_lines_and_passes_the_rest(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, handler = log
    with ctxlog.scope(request_id="clean"):
        logger.info("held")
        logger.warning("warned")
        assert sink.messages() == ["warned"]
    assert sink.messages() == ["warned"]
    assert handler.sampler.held() == 0


def test_an_error_writes_the_held_lines_first_in_order_with_their_context(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, _ = log
    with ctxlog.scope(request_id="r1"):
        with ctxlog.bind(step="one"):
            logger.info("first %s", "a")
        with ctxlog.bind(step="two"):
            logger.debug("second")
        assert sink.messages() == []
        logger.error("failed")
        logger.info("after the error")
    lines = sink.lines()
    assert [line["message"] for line in lines] == [
        "first a",
        "second",
        "failed",
        "after the error",
    ]
    assert {line["request_id"] for line in lines} == {"r1"}
    assert [line.get("step") for line in lines] == ["one", "two", None, None]


def test_a_unit_that_raises_writes_its_lines(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, _ = log
    with pytest.raises(KeyError), ctxlog.scope(request_id="boom"):
        logger.info("before")
        raise KeyError("x")
    assert sink.messages() == ["before"]
    assert sink.lines()[0]["request_id"] == "boom"


def test_a_decorated_async_unit_that_raises_writes_its_lines(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, _ = log

    @ctxlog.scope(request_id="job")
    async def job() -> None:
        logger.info("working")
        await asyncio.sleep(0)
        raise ValueError("job failed")

    @ctxlog.scope(request_id="fine")
    def fine() -> None:
        logger.info("quiet")

    with pytest.raises(ValueError, match="job failed"):
        asyncio.run(job())
    fine()
    assert sink.messages() == ["working"]


def test_capacity_keeps_the_newest_and_says_how_many_went(sink: Sink) -> None:
    handler = ctxlog.TailSamplingHandler(sink.handler, capacity=3)
    with sampled(handler) as logger, ctxlog.scope(request_id="big"):
        for i in range(10):
            logger.info("line %d", i)
        logger.error("now")
    lines = sink.lines()
    assert [line["message"] for line in lines] == [
        "7 earlier records of this unit of work were not kept (capacity 3 per unit)",
        "line 7",
        "line 8",
        "line 9",
        "now",
    ]
    assert lines[0]["logger"] == "ctxlog.sampling"
    assert lines[0]["level"] == "WARNING"
    assert {line["request_id"] for line in lines} == {"big"}


def test_keep_is_decided_from_the_request_id_alone_in_any_process() -> None:
    ids = [f"req-{i}" for i in range(2000)]
    here = [keeps(0.25, rid) for rid in ids]
    assert 0.2 < sum(here) / len(ids) < 0.3
    code = (
        "import json, sys\n"
        "from ctxlog._sampling import keeps\n"
        "print(json.dumps([keeps(0.25, f'req-{i}') for i in range(2000)]))\n"
    )
    there = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    )
    assert there == here
    assert keeps(1.0, None)
    assert not keeps(0.0, "x")


def test_a_kept_unit_writes_everything_as_it_comes(sink: Sink) -> None:
    kept = next(f"id-{i}" for i in range(1000) if keeps(0.5, f"id-{i}"))
    dropped = next(f"id-{i}" for i in range(1000) if not keeps(0.5, f"id-{i}"))
    handler = ctxlog.TailSamplingHandler(sink.handler, keep=0.5)
    with sampled(handler) as logger:
        for rid in (kept, dropped):
            with ctxlog.scope(request_id=rid):
                logger.info("quiet")
    assert [line["request_id"] for line in sink.lines()] == [kept]


def test_a_sampled_traceparent_keeps_the_unit(sink: Sink) -> None:
    handler = ctxlog.TailSamplingHandler(sink.handler)
    with sampled(handler) as logger:
        for flags in ("01", "00"):
            entry = store.open_unit({"request_id": f"flags-{flags}"}, trace_flags=flags)
            try:
                logger.info("quiet")
            finally:
                store.close_unit(entry)
    assert [line["request_id"] for line in sink.lines()] == ["flags-01"]


def test_lines_from_pool_threads_are_held_in_the_unit(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, _ = log
    with ctxlog.ThreadPoolExecutor(4) as pool:
        with ctxlog.scope(request_id="pooled"):
            list(pool.map(lambda i: logger.info("from the pool %d", i), range(8)))
            assert sink.messages() == []
        with pytest.raises(RuntimeError), ctxlog.scope(request_id="pooled-fail"):
            list(pool.map(lambda i: logger.info("failing %d", i), range(8)))
            raise RuntimeError
    lines = sink.lines()
    assert sorted(line["message"] for line in lines) == [f"failing {i}" for i in range(8)]
    assert {line["request_id"] for line in lines} == {"pooled-fail"}


def test_a_unit_ending_while_a_thread_still_logs_loses_nothing(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, _ = log
    go = threading.Event()
    done = threading.Event()

    def late() -> None:
        go.wait(5)
        logger.info("late quiet")
        logger.error("late error")
        done.set()

    with pytest.raises(OSError, match="down"), ctxlog.scope(request_id="ended"):
        thread = ctxlog.Thread(target=late)
        thread.start()
        logger.info("early")
        raise OSError("down")
    go.set()
    assert done.wait(5)
    thread.join(5)
    # The unit failed: its late lines follow that outcome.
    assert sink.messages() == ["early", "late quiet", "late error"]
    assert {line["request_id"] for line in sink.lines()} == {"ended"}


def test_late_quiet_lines_of_a_clean_unit_are_dropped(
    log: tuple[logging.Logger, ctxlog.TailSamplingHandler], sink: Sink
) -> None:
    logger, _ = log
    with ctxlog.scope(request_id="tidy"):
        thread = ctxlog.Thread(target=lambda: None)
        late = ctxlog.wrap(lambda: logger.info("late"))
    late()
    thread.start()
    thread.join()
    assert sink.messages() == []


def test_units_nobody_ends_do_not_keep_their_lines_alive(sink: Sink) -> None:
    handler = ctxlog.TailSamplingHandler(sink.handler)
    with sampled(handler) as logger:

        def leak() -> weakref.ref[Any]:
            entry = store.open_unit({"request_id": "leaked"})
            logger.info("held forever?")
            unit = entry[2]
            store.restore(entry[0])  # left, but the unit is never ended
            return weakref.ref(unit)

        ref = contextvars.copy_context().run(leak)
        gc.collect()
        assert ref() is None


def test_memory_is_bounded_however_many_units_are_open(sink: Sink) -> None:
    handler = ctxlog.TailSamplingHandler(sink.handler, capacity=2)
    entries = []
    with sampled(handler) as logger:
        try:
            for i in range(300):
                entry = store.open_unit({"request_id": f"open-{i}"}, fresh=True)
                entries.append(entry)
                logger.info("one")
                logger.info("two")
            assert handler.sampler.held() <= 2 * 100
            # Past the bound, quiet lines were written rather than held.
            assert len(sink.lines()) == 600 - handler.sampler.held()
        finally:
            for entry in reversed(entries):
                store.close_unit(entry)
    assert handler.sampler.held() == 0


def test_dictconfig_names_the_target(tmp_path: Any) -> None:
    path = tmp_path / "out.jsonl"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"ctx": {"()": "ctxlog.ContextFilter"}},
            "formatters": {"json": {"()": "ctxlog.stdlib.json_formatter"}},
            "handlers": {
                "sampled": {
                    "class": "ctxlog.TailSamplingHandler",
                    "target": "file",
                    "hold_below": "WARNING",
                    "flush_on": "ERROR",
                    "keep": 0.0,
                    "capacity": 10,
                },
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(path),
                    "formatter": "json",
                    "filters": ["ctx"],
                },
            },
            "loggers": {
                "ctxlog.test.dict": {"handlers": ["sampled"], "level": "INFO", "propagate": False}
            },
        }
    )
    logger = logging.getLogger("ctxlog.test.dict")
    try:
        with ctxlog.scope(request_id="quiet"):
            logger.info("dropped")
        with ctxlog.scope(request_id="loud"):
            logger.info("kept")
            logger.error("error")
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            assert isinstance(handler, ctxlog.TailSamplingHandler)
            assert handler.target is not None
            handler.target.close()
            handler.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["message"], line["request_id"]) for line in lines] == [
        ("kept", "loud"),
        ("error", "loud"),
    ]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ctxlog.ContextError, match="keep"):
        ctxlog.TailSamplingHandler(keep=2)
    with pytest.raises(ctxlog.ContextError, match="capacity"):
        ctxlog.TailSamplingHandler(capacity=0)
    with pytest.raises(ctxlog.ContextError, match="hold_below"):
        ctxlog.TailSamplingHandler(hold_below="LOUD")
    with pytest.raises(ctxlog.ContextError, match="target"):
        ctxlog.TailSamplingHandler("file")  # type: ignore[arg-type]


def test_a_thousand_units_under_concurrency(sink: Sink) -> None:
    """1,000 units on 8 threads, a tenth failing, lines also from pool threads:
    every line of a failed unit is written, in order, with its id; none of a
    clean one (keep=0)."""
    handler = ctxlog.TailSamplingHandler(sink.handler, capacity=100)
    pool = ctxlog.ThreadPoolExecutor(4)

    def unit(n: int) -> None:
        failing = n % 10 == 0
        try:
            with ctxlog.scope(request_id=f"u{n}"):
                for step in range(3):
                    logger.info("u%d step %d", n, step)
                pool.submit(logger.info, "u%d from the pool", n).result()
                logger.info("u%d step 3", n)
                if failing:
                    raise RuntimeError(n)
        except RuntimeError:
            pass

    with sampled(handler) as logger, pool, ctxlog.ThreadPoolExecutor(8) as runners:
        list(runners.map(unit, range(1000)))
    lines = sink.lines()
    by_unit: dict[str, list[str]] = {}
    for line in lines:
        by_unit.setdefault(line["request_id"], []).append(line["message"])
    assert sorted(by_unit) == sorted(f"u{n}" for n in range(0, 1000, 10))
    for rid, messages in by_unit.items():
        n = rid[1:]
        assert messages == [
            f"u{n} step 0",
            f"u{n} step 1",
            f"u{n} step 2",
            f"u{n} from the pool",
            f"u{n} step 3",
        ]
    report = ctxlog.testing.check(lines)
    assert report.ok, report.problems
    assert handler.sampler.held() == 0


def test_structlog_tail_sampling() -> None:
    out = io.StringIO()
    structlog.configure(
        processors=[
            merge_context,
            structlog.processors.add_log_level,
            TailSampling(structlog.processors.JSONRenderer(), capacity=2),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger()
        log.info("outside")
        with ctxlog.scope(request_id="clean"):
            log.info("held")
            log.warning("passes")
        with pytest.raises(ZeroDivisionError), ctxlog.scope(request_id="bad"):
            for i in range(3):
                log.info("step", n=i)
            _ = 1 / 0
        with ctxlog.scope(request_id="err"):
            log.debug("first")
            log.error("then")
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e.get("request_id"), e.get("n")) for e in events] == [
        ("outside", None, None),
        ("passes", "clean", None),
        (
            "1 earlier events of this unit of work were not kept (capacity 2 per unit)",
            "bad",
            None,
        ),
        ("step", "bad", 1),
        ("step", "bad", 2),
        ("first", "err", None),
        ("then", "err", None),
    ]
