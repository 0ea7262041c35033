"""stdlib logging: ContextFilter, the record factory, configure()."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import logging.handlers
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import ctxlog
from ctxlog import ContextError, ContextFilter
from ctxlog.stdlib import RESERVED_ATTRS
from tests.conftest import Captured


def fmt(captured: Captured, fmt: str, **filter_options: Any) -> ContextFilter:
    captured.handler.setFormatter(logging.Formatter(fmt))
    filt = ContextFilter(**filter_options)
    captured.handler.addFilter(filt)
    return filt


class TestContextFilter:
    def test_adds_bound_values(self, captured: Captured) -> None:
        fmt(captured, "%(request_id)s %(user_id)s %(message)s")
        with ctxlog.bind(request_id="r1", user_id=42):
            captured.logger.info("hello")
        assert captured.lines() == ["r1 42 hello"]

    def test_defaults_keep_formats_working(self, captured: Captured) -> None:
        fmt(captured, "[%(request_id)s] %(message)s", defaults={"request_id": "-"})
        captured.logger.info("outside")
        with ctxlog.bind(request_id="r1"):
            captured.logger.info("inside")
        assert captured.lines() == ["[-] outside", "[r1] inside"]

    def test_fields_allow_list(self, captured: Captured) -> None:
        captured.handler.setFormatter(logging.Formatter("%(message)s"))
        filt = ContextFilter(fields=["request_id", "tenant"], defaults={"tenant": "t0"})
        captured.handler.addFilter(filt)
        records: list[logging.LogRecord] = []

        def keep(record: logging.LogRecord) -> bool:
            records.append(record)
            return True

        captured.handler.addFilter(keep)
        with ctxlog.bind(request_id="r1", secret="s"):
            captured.logger.info("m")
        assert records[0].request_id == "r1"  # type: ignore[attr-defined]  # added by the filter
        assert records[0].tenant == "t0"  # type: ignore[attr-defined]  # a default
        assert not hasattr(records[0], "secret")

    def test_nest_under(self, captured: Captured) -> None:
        fmt(captured, "%(context)s %(message)s", nest_under="context", defaults={"tenant": "-"})
        with ctxlog.bind(request_id="r1"):
            captured.logger.info("m")
        captured.logger.info("m2", extra={"context": "explicit"})
        assert captured.lines() == [
            "{'request_id': 'r1', 'tenant': '-'} m",
            "explicit m2",
        ]

    @pytest.mark.parametrize(
        "key", ["name", "msg", "args", "levelname", "message", "asctime", "taskName", "exc_info"]
    )
    def test_conflicting_keys_are_renamed(self, captured: Captured, key: str) -> None:
        fmt(captured, f"%(name)s|%(levelname)s|%(message)s|%(ctx_{key})s")
        with ctxlog.bind(**{key: "ctx-value"}):
            captured.logger.warning("text %s", "arg")
        (line,) = captured.lines()
        assert line == f"{captured.logger.name}|WARNING|text arg|ctx-value"

    def test_conflicting_keys_dropped(self, captured: Captured) -> None:
        fmt(captured, "%(name)s %(message)s %(request_id)s", on_conflict="drop")
        with ctxlog.bind(name="evil", msg="evil", request_id="r1"):
            captured.logger.info("real")
        assert captured.lines() == [f"{captured.logger.name} real r1"]

    def test_rename_does_not_beat_an_explicit_ctx_key(self, captured: Captured) -> None:
        fmt(captured, "%(ctx_name)s")
        with ctxlog.bind(name="renamed", ctx_name="explicit"):
            captured.logger.info("m")
        assert captured.lines() == ["explicit"]

    def test_default_for_reserved_key_is_renamed(self, captured: Captured) -> None:
        fmt(captured, "%(name)s %(ctx_name)s", defaults={"name": "-"})
        captured.logger.info("m")
        assert captured.lines() == [f"{captured.logger.name} -"]

    def test_extra_wins_over_context(self, captured: Captured) -> None:
        fmt(captured, "%(request_id)s %(user_id)s")
        with ctxlog.bind(request_id="bound", user_id="u"):
            captured.logger.info("m", extra={"request_id": "explicit"})
        assert captured.lines() == ["explicit u"]

    def test_never_raises_and_never_drops(self, captured: Captured) -> None:
        class Hostile:
            def __eq__(self, other: object) -> bool:
                raise RuntimeError

            def __hash__(self) -> int:
                raise RuntimeError

        fmt(captured, "%(message)s %(ok)s")
        hostile = Hostile()
        with ctxlog.bind(ok="yes", hostile=hostile):
            captured.logger.info("m")
        assert captured.lines() == ["m yes"]

        class BrokenFilter(ContextFilter):
            def attributes(self) -> dict[str, Any]:
                raise RuntimeError("broken")

        captured.handler.filters.clear()
        captured.handler.addFilter(BrokenFilter())
        captured.handler.setFormatter(logging.Formatter("%(message)s"))
        captured.logger.info("still logged")
        assert captured.lines()[-1] == "still logged"

    @pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
    def test_registered_vars_reach_records(self, captured: Captured) -> None:
        import contextvars  # noqa: PLC0415 -- local to the one test that needs it

        var: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id")
        ctxlog.register(var, "request_id")
        fmt(captured, "%(request_id)s", defaults={"request_id": "-"})
        captured.logger.info("a")
        token = var.set("from-var")
        captured.logger.info("b")
        var.reset(token)
        assert captured.lines() == ["-", "from-var"]

    def test_cache_follows_context_changes(self, captured: Captured) -> None:
        fmt(captured, "%(n)s", defaults={"n": "-"})
        for n in range(5):
            with ctxlog.bind(n=n):
                captured.logger.info("m")
                captured.logger.info("m")
        captured.logger.info("m")
        assert captured.lines() == [str(n) for n in range(5) for _ in range(2)] + ["-"]

    def test_handler_filter_sees_child_logger_records(self) -> None:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(name)s %(request_id)s"))
        handler.addFilter(ContextFilter(defaults={"request_id": "-"}))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        with ctxlog.bind(request_id="r1"):
            logging.getLogger("some.library.deep").info("from a library")
        assert stream.getvalue().splitlines() == ["some.library.deep r1"]

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"on_conflict": "overwrite"}, "use 'rename' or 'drop'"),
            ({"fields": "request_id"}, "not a string"),
            ({"fields": [""]}, "non-empty strings"),
            ({"defaults": {"": 1}}, "non-empty strings"),
            ({"nest_under": ""}, "non-empty attribute name"),
            ({"nest_under": "msg"}, "standard LogRecord attributes"),
        ],
    )
    def test_invalid_options(self, options: dict[str, Any], match: str) -> None:
        with pytest.raises(ContextError, match=match):
            ContextFilter(**options)

    def test_repr(self) -> None:
        assert "ContextFilter(fields=None" in repr(ContextFilter())

    def test_dict_config(self) -> None:
        stream = io.StringIO()
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "filters": {"ctx": {"()": "ctxlog.ContextFilter", "defaults": {"request_id": "-"}}},
                "formatters": {"f": {"format": "%(request_id)s %(message)s"}},
                "handlers": {
                    "h": {
                        "class": "logging.StreamHandler",
                        "stream": stream,
                        "formatter": "f",
                        "filters": ["ctx"],
                    }
                },
                "loggers": {"dictconf": {"handlers": ["h"], "level": "INFO", "propagate": False}},
            }
        )
        log = logging.getLogger("dictconf")
        log.info("a")
        with ctxlog.bind(request_id="r1"):
            log.info("b")
        assert stream.getvalue().splitlines() == ["- a", "r1 b"]

    def test_reserved_attrs_cover_a_real_record(self) -> None:
        record = logging.LogRecord("n", logging.INFO, "p", 1, "m", (), None)
        assert set(vars(record)) <= RESERVED_ATTRS
        assert {"message", "asctime", "taskName"} <= RESERVED_ATTRS

    def test_queue_handler_filter_runs_on_logging_thread(self) -> None:
        q: queue.Queue[logging.LogRecord] = queue.Queue()
        qh = logging.handlers.QueueHandler(q)
        qh.addFilter(ContextFilter())
        stream = io.StringIO()
        out = logging.StreamHandler(stream)
        out.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
        listener = logging.handlers.QueueListener(q, out)
        log = logging.getLogger("ctxlog.test.queue")
        log.propagate = False
        log.addHandler(qh)
        log.setLevel(logging.INFO)
        listener.start()
        try:
            with ctxlog.bind(request_id="r-q"):
                log.info("through the queue")
        finally:
            listener.stop()
            log.removeHandler(qh)
        assert stream.getvalue().splitlines() == ["r-q through the queue"]


class TestRecordFactory:
    def test_enriches_every_record(self, captured: Captured) -> None:
        captured.handler.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
        ctxlog.install_record_factory(defaults={"request_id": "-"})
        captured.logger.info("a")
        with ctxlog.bind(request_id="r1"):
            captured.logger.info("b")
        ctxlog.uninstall_record_factory()
        assert captured.lines() == ["- a", "r1 b"]

    def test_extra_with_the_same_key_wins_and_never_raises(self, captured: Captured) -> None:
        captured.handler.setFormatter(logging.Formatter("%(request_id)s %(user_id)s"))
        captured.handler.addFilter(ContextFilter())  # both mechanisms at once
        ctxlog.install_record_factory()
        with ctxlog.bind(request_id="bound", user_id="u"):
            captured.logger.info("m", extra={"request_id": "explicit"})
            captured.logger.info("m")
        assert captured.lines() == ["explicit u", "bound u"]

    def test_extra_still_cannot_overwrite_record_attributes(self, captured: Captured) -> None:
        ctxlog.install_record_factory()
        with pytest.raises(KeyError, match="Attempt to overwrite 'msg'"):
            captured.logger.info("m", extra={"msg": "x"})

    def test_idempotent_and_chains_the_previous_factory(self, captured: Captured) -> None:
        previous = logging.getLogRecordFactory()

        def tagging_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            record.tag = "t"
            return record

        logging.setLogRecordFactory(tagging_factory)
        ctxlog.install_record_factory()
        first = logging.getLogRecordFactory()
        ctxlog.install_record_factory(defaults={"request_id": "-"})  # updates, never re-wraps
        assert logging.getLogRecordFactory() is first
        captured.handler.setFormatter(logging.Formatter("%(tag)s %(request_id)s"))
        captured.logger.info("m")
        assert captured.lines() == ["t -"]
        ctxlog.uninstall_record_factory()
        assert logging.getLogRecordFactory() is tagging_factory
        ctxlog.uninstall_record_factory()  # not installed: nothing to do
        assert logging.getLogRecordFactory() is tagging_factory

    def test_uninstall_refuses_to_break_a_chain(self) -> None:
        ctxlog.install_record_factory()
        ours = logging.getLogRecordFactory()

        class OnTop:
            def __init__(self) -> None:
                self.previous = ours

            def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
                record: logging.LogRecord = self.previous(*args, **kwargs)
                return record

        logging.setLogRecordFactory(OnTop())
        with pytest.raises(ContextError, match="installed after ctxlog's"):
            ctxlog.uninstall_record_factory()

    def test_context_captured_on_the_logging_thread_through_a_queue(self) -> None:
        ctxlog.install_record_factory(defaults={"request_id": "-"})
        q: queue.Queue[logging.LogRecord] = queue.Queue()
        qh = logging.handlers.QueueHandler(q)
        stream = io.StringIO()
        out = logging.StreamHandler(stream)
        out.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
        listener = logging.handlers.QueueListener(q, out)
        log = logging.getLogger("ctxlog.test.factory-queue")
        log.propagate = False
        log.addHandler(qh)
        log.setLevel(logging.INFO)
        listener.start()
        try:

            def worker(n: int) -> None:
                with ctxlog.bind(request_id=f"t{n}"):
                    log.info("from t%d", n)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            listener.stop()
            log.removeHandler(qh)
        lines = sorted(stream.getvalue().splitlines())
        assert lines == sorted(f"t{n} from t{n}" for n in range(20))

    @pytest.mark.parametrize("nest_under", [None, "context"])
    def test_a_filter_later_keeps_what_the_factory_captured(
        self, captured: Captured, nest_under: str | None
    ) -> None:
        # A MemoryHandler flushes request r1's records while r2 is bound: the
        # target's filter (configure() adds one) must not replace r1's values.
        fmt = "%(request_id)s %(message)s" if nest_under is None else "%(context)s %(message)s"
        captured.handler.setFormatter(logging.Formatter(fmt))
        captured.handler.addFilter(
            ContextFilter(defaults={"request_id": "-"}, nest_under=nest_under)
        )
        memory = logging.handlers.MemoryHandler(capacity=100, target=captured.handler)
        captured.logger.removeHandler(captured.handler)
        captured.logger.addHandler(memory)
        ctxlog.install_record_factory(defaults={"request_id": "-"}, nest_under=nest_under)
        try:
            with ctxlog.bind(request_id="r1"):
                captured.logger.info("one")
            with ctxlog.bind(request_id="r2"):
                memory.flush()
                captured.logger.info("two")
            memory.flush()
        finally:
            captured.logger.removeHandler(memory)
            captured.logger.addHandler(captured.handler)
        if nest_under is None:
            assert captured.lines() == ["r1 one", "r2 two"]
        else:
            assert captured.lines() == [
                "{'request_id': 'r1'} one",
                "{'request_id': 'r2'} two",
            ]

    def test_nest_under_and_pickling(self) -> None:
        ctxlog.install_record_factory(nest_under="context")
        with ctxlog.bind(request_id="r1"):
            record = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
        assert record.context == {"request_id": "r1"}  # type: ignore[attr-defined]  # added
        clone = pickle.loads(pickle.dumps(record))  # noqa: S301 -- our own record
        assert type(clone.__dict__) is dict
        assert clone.context == {"request_id": "r1"}


class TestConfigure:
    def test_json_lines_with_context(self) -> None:
        stream = io.StringIO()
        handler = ctxlog.configure(stream=stream, defaults={"request_id": "-"})
        log = logging.getLogger("app.configure")
        log.info("outside")
        with ctxlog.bind(request_id="r1", user_id=3):
            log.info("inside %s", "x")
        log.debug("filtered by level")
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["message"] == "outside"
        assert first["request_id"] == "-"
        assert second == {
            "time": second["time"],
            "level": "INFO",
            "logger": "app.configure",
            "message": "inside x",
            "request_id": "r1",
            "user_id": 3,
        }
        assert handler in logging.getLogger().handlers

    def test_second_call_replaces_only_its_own_handler(self) -> None:
        other = logging.NullHandler()
        logging.getLogger().addHandler(other)
        first = ctxlog.configure(stream=io.StringIO())
        stream = io.StringIO()
        second = ctxlog.configure("DEBUG", stream=stream, fields=["request_id"])
        root = logging.getLogger()
        assert first not in root.handlers
        assert second in root.handlers
        assert other in root.handlers
        assert root.level == logging.DEBUG
        with ctxlog.bind(request_id="r", hidden="h"):
            logging.getLogger("app").debug("d")
        line = json.loads(stream.getvalue())
        assert line["request_id"] == "r"
        assert "hidden" not in line

    def test_every_line_is_strict_json_whatever_is_bound(self, tmp_path: Path) -> None:
        class Unprintable:
            def __str__(self) -> str:
                raise ValueError("no")

            __repr__ = __str__

        circular: list[Any] = []
        circular.append(circular)
        deep: list[Any] = []
        for _ in range(5000):
            deep = [deep]
        hostile: dict[str, Any] = {
            "tuple_keys": {(1, 2): "a", b"raw": "b"},
            "nan": float("nan"),
            "inf": [float("-inf")],
            "huge": 10**5000,
            "circular": circular,
            "deep": deep,
            "surrogate": "caf\udce9",
            "unprintable": Unprintable(),
        }
        path = tmp_path / "out.jsonl"
        with path.open("w", encoding="utf-8") as stream:  # strict: a surrogate cannot pass
            ctxlog.configure(stream=stream)
            log = logging.getLogger("app.hostile")
            for key, value in hostile.items():
                with ctxlog.bind(request_id=key, value=value):
                    log.info("kept %s", key)
        lines = path.read_text(encoding="utf-8").splitlines()

        def refuse(constant: str) -> Any:
            raise AssertionError(constant)

        parsed = [json.loads(line, parse_constant=refuse) for line in lines]
        assert [(p["request_id"], p["message"]) for p in parsed] == [
            (key, f"kept {key}") for key in hostile
        ]
        values = {p["request_id"]: p["value"] for p in parsed}
        assert values["tuple_keys"] == {"(1, 2)": "a", "b'raw'": "b"}
        assert values["nan"] is None  # JSON has no NaN: null, whichever serializer
        assert values["inf"] == [None]
        assert values["huge"] == f"<int of {(10**5000).bit_length()} bits>"
        assert values["surrogate"] == "caf\udce9"

    def test_level_names_in_any_case_and_a_bad_one_changes_nothing(self) -> None:
        stream = io.StringIO()
        handler = ctxlog.configure("debug", stream=stream)
        root = logging.getLogger()
        assert root.level == logging.DEBUG
        with pytest.raises(ValueError, match="VERBOSE"):
            ctxlog.configure("verbose", stream=io.StringIO())
        with pytest.raises(ContextError, match="on_conflict"):
            ctxlog.configure(stream=io.StringIO(), on_conflict="keep")  # type: ignore[arg-type]  # misuse
        assert root.level == logging.DEBUG
        assert [h for h in root.handlers if hasattr(h, "_ctxlog_configured")] == [handler]
        logging.getLogger("app").debug("still here")
        assert json.loads(stream.getvalue())["message"] == "still here"

    def test_custom_formatter(self) -> None:
        stream = io.StringIO()
        ctxlog.configure(stream=stream, formatter=logging.Formatter("%(request_id)s"))
        with ctxlog.bind(request_id="r1"):
            logging.getLogger("app").info("m")
        assert stream.getvalue() == "r1\n"

    def test_missing_python_json_logger_names_the_extra(self) -> None:
        code = (
            "import sys; sys.modules['pythonjsonlogger'] = None\n"
            "import ctxlog\n"
            "try:\n"
            "    ctxlog.configure()\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert "pip install 'ctxlog-correlation[json]'" in out


def test_configure_after_basicconfig_writes_each_line_once_with_replace_handlers() -> None:
    basic = io.StringIO()
    logging.basicConfig(stream=basic, force=True)
    ours = io.StringIO()
    ctxlog.configure(stream=ours)
    logging.getLogger("app.twice").warning("x")
    # The surprise: two handlers write it.
    assert basic.getvalue()
    assert ours.getvalue()
    basic.truncate(0)
    ours.truncate(0)
    ours.seek(0)
    ctxlog.configure(stream=ours, replace_handlers=True)
    logging.getLogger("app.twice").warning("once")
    assert basic.getvalue() == ""
    assert json.loads(ours.getvalue())["message"] == "once"
    with pytest.raises(ContextError, match="replace_handlers"):
        ctxlog.configure(replace_handlers="yes")  # type: ignore[arg-type]


class TestTyposInDictConfig:
    """dictConfig wraps a factory's error in its own "Unable to configure
    filter": the cause it chains is ctxlog's, naming the option meant."""

    def test_a_filter_option(self) -> None:
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"context": {"()": "ctxlog.ContextFilter", "defualts": {"request_id": "-"}}},
        }
        with pytest.raises(ValueError, match="Unable to configure filter 'context'") as raised:
            logging.config.dictConfig(config)
        cause = raised.value.__cause__
        assert isinstance(cause, ContextError)
        assert "unknown options: 'defualts' (did you mean 'defaults' for 'defualts'?)" in str(cause)

    def test_a_formatter_option(self) -> None:
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "ctxlog.stdlib.json_formatter", "serialiser": "json"}},
        }
        with pytest.raises(ValueError, match="Unable to configure formatter 'json'") as raised:
            logging.config.dictConfig(config)
        assert isinstance(raised.value.__cause__, ContextError)
        assert "did you mean 'serializer'" in str(raised.value.__cause__)

    def test_what_a_server_prints(self) -> None:
        """Uncaught, as under ``uvicorn --log-config``: ctxlog's message is printed."""
        config = {
            "version": 1,
            "filters": {"context": {"()": "ctxlog.ContextFilter", "on_conflit": "drop"}},
        }
        code = f"import logging.config; logging.config.dictConfig({config!r})"
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert result.returncode == 1
        assert "ContextError: ContextFilter() got unknown options: 'on_conflit'" in result.stderr
        assert "did you mean 'on_conflict' for 'on_conflit'?" in result.stderr
