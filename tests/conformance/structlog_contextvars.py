"""Run structlog's own ``tests/test_contextvars.py`` against ``ctxlog.structlog``.

Usage::

    python tests/conformance/structlog_contextvars.py [--sdist PATH]

Downloads the sdist of the structlog version that is installed (``pip
download --no-deps --no-binary :all:``) into a temporary directory, or takes
the one given with ``--sdist``; extracts its ``tests/test_contextvars.py`` and
the ``conftest.py`` beside it; changes only the import of
``structlog.contextvars`` so that the public names come from
``ctxlog.structlog``; and runs pytest on it.  The one test that reads
structlog's private registry (``_CONTEXT_VARS``) is deselected; every other
test must pass, none may be skipped.  Exits non-zero otherwise.

structlog's tests are ``async def`` functions written for pytest-asyncio's
auto mode; a ten-line plugin written next to them runs each one with
``asyncio.run()`` instead, so no extra package is needed.  Nothing of
structlog's code is kept: the temporary directory is removed at exit.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_FILE = "test_contextvars.py"
NEEDED = ("__init__.py", "conftest.py", TEST_FILE)
OLD_MODULE = "structlog.contextvars"
NEW_MODULE = "ctxlog.structlog"

ASYNC_PLUGIN = '''\
"""Run ``async def`` tests with asyncio.run() (what pytest-asyncio's auto mode does)."""
import asyncio
import inspect


def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True
'''

PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider
filterwarnings =
    once::Warning
"""


class ConformanceError(Exception):
    """The sdist is not what this runner expects; it needs an update."""


def fetch_sdist(version: str, work: Path) -> Path:
    """Download structlog's sdist for *version* into ``work/download``; return its path."""
    into = work / "download"
    into.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"structlog=={version}",
            "-d",
            str(into),
        ],
        check=True,
        timeout=600,
    )
    found = sorted(into.glob("structlog-*.tar.gz"))
    if len(found) != 1:
        msg = f"expected one structlog sdist in {into}, found {[p.name for p in found]}"
        raise ConformanceError(msg)
    return found[0]


def extract_tests(sdist: Path, into: Path) -> Path:
    """Write the files of ``tests/`` this run needs into ``into/tests``; return that dir."""
    tests = into / "tests"
    tests.mkdir()
    with tarfile.open(sdist, "r:gz") as tar:
        members = {
            Path(member.name).name: member
            for member in tar.getmembers()
            if member.isfile()
            and Path(member.name).parent.name == "tests"
            and len(Path(member.name).parts) == 3  # structlog-X.Y.Z/tests/<file>
        }
        for name in NEEDED:
            member = members.get(name)
            if member is None:
                msg = f"{sdist.name} has no tests/{name}"
                raise ConformanceError(msg)
            handle = tar.extractfile(member)
            if handle is None:  # isfile() members always have data; kept for the type checker
                msg = f"cannot read tests/{name} from {sdist.name}"
                raise ConformanceError(msg)
            (tests / name).write_bytes(handle.read())
    return tests


def rewrite_import(source: str) -> tuple[str, set[str]]:
    """Point the ``from structlog.contextvars import ...`` at ctxlog.structlog.

    Public names come from ctxlog.structlog; private ones (structlog's
    registry) still come from structlog, for the one test that reads it.
    Returns the new source and the private names.
    """
    tree = ast.parse(source)
    imports = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == OLD_MODULE
    ]
    if len(imports) != 1:
        msg = f"expected one 'from {OLD_MODULE} import ...', found {len(imports)}"
        raise ConformanceError(msg)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "contextvars"
            and isinstance(node.value, ast.Name)
            and node.value.id == "structlog"
        ):
            msg = f"line {node.lineno} uses {OLD_MODULE} by attribute; the rewrite misses it"
            raise ConformanceError(msg)
    (node,) = imports
    names = [
        alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
        for alias in node.names
    ]
    public = [name for name in names if not name.startswith("_")]
    private = [name for name in names if name.startswith("_")]
    lines = source.splitlines(keepends=True)
    new = [f"from {NEW_MODULE} import ({', '.join(public)})\n"]
    if private:
        new.append(f"from {OLD_MODULE} import {', '.join(private)}\n")
    assert node.end_lineno is not None
    lines[node.lineno - 1 : node.end_lineno] = new
    return "".join(lines), {name.split(" as ")[-1] for name in private}


def tests_in(source: str, reading: set[str]) -> tuple[list[str], list[str]]:
    """All test node ids of the file, and those that use a name in *reading*."""
    tree = ast.parse(source)
    every: list[str] = []
    using: list[str] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                visit(node.body, f"{prefix}{node.name}::")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test"
            ):
                node_id = f"tests/{TEST_FILE}::{prefix}{node.name}"
                every.append(node_id)
                if any(isinstance(n, ast.Name) and n.id in reading for n in ast.walk(node)):
                    using.append(node_id)

    visit(tree.body, "")
    return every, using


def run(sdist: Path | None) -> int:
    """Fetch, rewrite and run; return the exit status."""
    version = importlib.metadata.version("structlog")
    with tempfile.TemporaryDirectory(prefix="ctxlog-conformance-") as tmp:
        work = Path(tmp)
        sdist = sdist or fetch_sdist(version, work)
        tests = extract_tests(sdist, work)
        original = (tests / TEST_FILE).read_text(encoding="utf-8")
        rewritten, private = rewrite_import(original)
        (tests / TEST_FILE).write_text(rewritten, encoding="utf-8")
        every, private_readers = tests_in(rewritten, private)
        if len(private_readers) != 1:
            msg = f"expected exactly one test reading {sorted(private)}, found {private_readers}"
            raise ConformanceError(msg)
        (work / "_ctxlog_async_plugin.py").write_text(ASYNC_PLUGIN, encoding="utf-8")
        (work / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
        report = work / "report.xml"
        print(
            f"structlog {version} ({sdist.name}): {len(every)} tests in tests/{TEST_FILE}, "
            f"imports rewritten to {NEW_MODULE}; deselected: {private_readers[0]}",
            flush=True,
        )
        env_path = os.pathsep.join([str(work), str(REPO)])
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-c",
                str(work / "pytest.ini"),
                "--rootdir",
                str(work),
                "-p",
                "_ctxlog_async_plugin",
                "-q",
                f"--junitxml={report}",
                "--deselect",
                private_readers[0],
                f"tests/{TEST_FILE}",
            ],
            cwd=work,
            env={**os.environ, "PYTHONPATH": env_path},
            check=False,
            timeout=600,
        )
        if result.returncode != 0:
            print(f"FAILED: pytest exited with {result.returncode}", file=sys.stderr)
            return 1
        suite = ET.parse(report).getroot()  # noqa: S314 -- our own pytest's report
        if suite.tag == "testsuites":
            suite = suite[0]
        counts = {
            key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")
        }
        expected = len(every) - 1
        if counts != {"tests": expected, "failures": 0, "errors": 0, "skipped": 0}:
            print(f"FAILED: expected {expected} passing tests, got {counts}", file=sys.stderr)
            return 1
        print(f"OK: {expected} of structlog's contextvars tests pass against {NEW_MODULE}")
        return 0


def command_line(
    run: Callable[[Path | None], int], description: str | None, argv: list[str] | None
) -> int:
    """The command line of a conformance runner: ``[--sdist PATH]``, then *run*."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--sdist", type=Path, help="use this structlog sdist instead of downloading"
    )
    args = parser.parse_args(argv)
    try:
        return run(args.sdist.resolve() if args.sdist else None)
    except (ConformanceError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run; return the exit status."""
    return command_line(run, __doc__.splitlines()[0] if __doc__ else None, argv)


if __name__ == "__main__":
    sys.exit(main())
