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
    run(pytester).assert_outcomes(passed=2)


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
