"""The pytest plugin, as a user meets it: inner pytest runs in a subprocess (the
plugin loads from the installed package's entry point), alone and beside
pytest-asyncio, anyio, pytest-xdist and pytest-randomly."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

LEAKY = """
import ctxlog


def test_leaks():
    ctxlog.set(request_id="left-over")


def test_starts_clean():
    assert dict(ctxlog.current()) == {}
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # -p no:randomly unless a test asks for it: the order of the inner tests matters.
    plugins = [] if "randomly" in " ".join(args) else ["-p", "no:randomly"]
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *plugins, *args)


def test_isolation_and_warn_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*ctxlog: tests that leaked context*",
            "test_leaky.py::test_leaks: context keys still bound: request_id*",
            "1 test(s) left context behind*",
        ]
    )


@pytest.mark.parametrize("how", ["option", "ini"])
def test_fail_names_what_leaked(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile(
        test_leaky=LEAKY
        + """

def test_registers_and_installs():
    import contextvars
    import ctxlog.otel
    ctxlog.register(contextvars.ContextVar("tenant"))
    ctxlog.install_record_factory()
    ctxlog.otel.install()


def test_unit_left_open():
    ctxlog.scope(job="j").__enter__()
"""
    )
    if how == "ini":
        pytester.makeini("[pytest]\nctxlog_leaks = fail\n")
        result = run(pytester)
    else:
        result = run(pytester, "--ctxlog-leaks=fail")
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "ctxlog: the test leaked context: context keys still bound: request_id*",
            "*ERROR at teardown of test_registers_and_installs*",
            "*still registered: tenant*",
            "*ERROR at teardown of test_unit_left_open*",
            "*a unit of work still open*",
        ]
    )
    out = result.stdout.str()
    assert "ctxlog.otel.install() still in effect" in out
    assert "ctxlog's record factory still installed" in out


def test_ignore_and_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="""
import pytest
import ctxlog


@pytest.mark.ctxlog_leaks("ignore")
def test_sets_on_purpose():
    ctxlog.set(hook="set")


def test_leaks():
    ctxlog.set(request_id="left-over")
"""
    )
    result = run(pytester, "--ctxlog-leaks=fail")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leaks*", "*context keys still bound: request_id*"]
    )
    assert "test_sets_on_purpose - " not in result.stdout.str()
    quiet = run(pytester, "--ctxlog-leaks=ignore")
    quiet.assert_outcomes(passed=2)
    assert "leaked" not in quiet.stdout.str()


def test_a_bad_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nctxlog_leaks = loud\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ctxlog_leaks = 'loud': use one of ignore, warn, fail*"])


def test_capture_fixture_and_caplog(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_logs="""
import logging
import ctxlog

log = logging.getLogger("app")


def test_capture(ctxlog_capture):
    with ctxlog.bind(request_id="r-1"):
        log.warning("hello %s", "you")
    assert ctxlog_capture == [
        {"request_id": "r-1", "message": "hello you", "level": "WARNING", "logger": "app"}
    ]


def test_capture_sees_levels_below_the_root_s(ctxlog_capture):
    # The root logger is at WARNING, as a fresh process has it.
    log.info("info")
    log.debug("debug")
    assert [line["message"] for line in ctxlog_capture] == ["info", "debug"]


def test_caplog_records_carry_the_context(caplog):
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    log.addHandler(Keep())
    with ctxlog.bind(request_id="r-2"):
        log.warning("hi")
    (record,) = caplog.records
    assert record.request_id == "r-2"
    # The records other handlers get are left as they were.
    assert not hasattr(seen[0], "request_id")
"""
    )
    run(pytester).assert_outcomes(passed=3)


def test_beside_pytest_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_async="""
import asyncio
import pytest
import pytest_asyncio
import ctxlog


@pytest_asyncio.fixture
async def request_id():
    with ctxlog.bind(request_id="from-fixture"):
        yield "from-fixture"


@pytest.mark.asyncio
async def test_async_leaks():
    ctxlog.set(async_key="left")
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_async_fixture(request_id, ctxlog_capture):
    import logging
    await asyncio.sleep(0)
    logging.getLogger("a").warning("in the test")
    assert [line["request_id"] for line in ctxlog_capture] == ["from-fixture"]


def test_sync_after():
    assert dict(ctxlog.current()) == {}
"""
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    run(pytester, "-p", "asyncio", "--ctxlog-leaks=fail").assert_outcomes(passed=3)


def test_beside_anyio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_anyio="""
import anyio
import pytest
import ctxlog


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_in_a_unit():
    async with ctxlog.scope(request_id="r"):
        await anyio.to_thread.run_sync(lambda: ctxlog.annotate(user_id="u"))
        assert dict(ctxlog.current()) == {"request_id": "r", "user_id": "u"}


def test_after():
    assert dict(ctxlog.current()) == {}
"""
    )
    run(pytester, "--ctxlog-leaks=fail").assert_outcomes(passed=2)


def test_beside_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=2)
    # The workers' leaks reach the controller's summary.
    result.stdout.fnmatch_lines(["*test_leaky.py::test_leaks: context keys still bound*"])


def test_beside_randomly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    for seed in ("1", "2", "3"):
        run(pytester, "-p", "randomly", f"--randomly-seed={seed}").assert_outcomes(passed=2)


# Which of ctxlog.celery, ctxlog.otel and ctxlog.structlog are in effect, seen on
# the lines they write: a Celery task's line has task_id, a line in a span has
# trace_id, structlog's default chain writes the bound request_id.
IN_EFFECT = """
import logging

import structlog
from celery import Celery
from opentelemetry.sdk.trace import TracerProvider

import ctxlog
import ctxlog.celery
import ctxlog.otel
import ctxlog.structlog

HOOKS = {"celery": ctxlog.celery, "otel": ctxlog.otel, "structlog": ctxlog.structlog}
tracer = TracerProvider().get_tracer("plugin-test")
app = Celery("plugin-test", task_always_eager=True)


@app.task(name="job")
def job():
    logging.getLogger("job").warning("in the task")


def in_effect(capsys, captured):
    captured.clear()
    capsys.readouterr()
    with ctxlog.bind(request_id="r-1"):
        with tracer.start_as_current_span("span"):
            logging.getLogger("app").warning("in a span")
        job.delay()
        structlog.get_logger().warning("from structlog")
    lines = {line["message"]: line for line in captured}
    seen = set()
    if "trace_id" in lines["in a span"]:
        seen.add("otel")
    if "task_id" in lines["in the task"]:
        seen.add("celery")
    if "r-1" in capsys.readouterr().out:
        seen.add("structlog")
    return seen
"""


def test_hooks_a_test_uninstalls_are_back_for_the_next(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        IN_EFFECT
        + """
ctxlog.celery.install()
ctxlog.otel.install()
ctxlog.structlog.install()
"""
    )
    pytester.makepyfile(
        test_order="""
import ctxlog.celery
import ctxlog.otel
from conftest import HOOKS, in_effect


def test_1_uninstalls(capsys, ctxlog_capture):
    assert in_effect(capsys, ctxlog_capture) == set(HOOKS)
    for hook in HOOKS.values():
        hook.uninstall()
    assert in_effect(capsys, ctxlog_capture) == set()


def test_2_finds_them_installed(capsys, ctxlog_capture):
    assert all(hook.installed() for hook in HOOKS.values())
    assert in_effect(capsys, ctxlog_capture) == set(HOOKS)
    for hook in HOOKS.values():
        hook.install()  # again: as in a fixture that installs what a test needs
    assert in_effect(capsys, ctxlog_capture) == set(HOOKS)


def test_3_installs_them_otherwise(capsys, ctxlog_capture):
    ctxlog.celery.install(task_id_key="job_id")
    ctxlog.otel.install(trace_key="otel_trace_id")
    assert in_effect(capsys, ctxlog_capture) == {"structlog"}


def test_4_finds_them_as_before(capsys, ctxlog_capture):
    assert in_effect(capsys, ctxlog_capture) == set(HOOKS)
"""
    )
    run(pytester, "--ctxlog-leaks=fail").assert_outcomes(passed=4)


def test_hooks_a_test_installs_are_gone_for_the_next(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(IN_EFFECT)
    pytester.makepyfile(
        test_order="""
from conftest import HOOKS, in_effect


def test_1_installs(capsys, ctxlog_capture):
    for hook in HOOKS.values():
        hook.install()
    assert in_effect(capsys, ctxlog_capture) == set(HOOKS)


def test_2_finds_none(capsys, ctxlog_capture):
    assert not any(hook.installed() for hook in HOOKS.values())
    assert in_effect(capsys, ctxlog_capture) == set()
    for hook in HOOKS.values():
        hook.install()
    assert in_effect(capsys, ctxlog_capture) == set(HOOKS)
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=2)
    for name in ("celery", "otel", "structlog"):
        result.stdout.fnmatch_lines([f"*test_1_installs*ctxlog.{name}.install() still in effect*"])


def test_the_structlog_chain_warning_comes_in_every_test_that_earns_it(
    pytester: pytest.Pytester,
) -> None:
    # Once per structlog configuration, and every test starts afresh: the
    # second test is warned too, whichever ran first.
    pytester.makepyfile(
        test_warned="""
import pytest
from ctxlog.structlog import UnmergedContextWarning, bound_contextvars


def test_1():
    with pytest.warns(UnmergedContextWarning), bound_contextvars(request_id="r-1"):
        pass


def test_2():
    with pytest.warns(UnmergedContextWarning), bound_contextvars(request_id="r-2"):
        pass
"""
    )
    run(pytester, "--ctxlog-leaks=fail").assert_outcomes(passed=2)
