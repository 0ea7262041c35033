"""Run structlog's *whole* test suite with ``structlog.contextvars`` swapped for ctxlog's.

Usage::

    python tests/conformance/structlog_suite.py [--sdist PATH]

Takes the sdist of the installed structlog (downloaded, or ``--sdist``),
extracts its ``tests/`` and runs them twice with the interpreter running this
script:

1. as they are, for the baseline: which tests pass here (a few skip by design:
   Windows-only ones, "without Rich" ones when Rich is installed);
2. with ``structlog.contextvars`` replaced before any test module is imported:
   ``sys.modules["structlog.contextvars"]`` and ``structlog.contextvars`` become
   a module whose public API (``bind_contextvars``, ``merge_contextvars``, the
   ``STRUCTLOG_KEY_PREFIX`` constants, ...) is ``ctxlog.structlog``'s and whose
   private names (the registry, the async calling stack that structlog's other
   modules import) stay structlog's; and ``ctxlog.structlog.install()``
   replaces the references to structlog's ``merge_contextvars`` that its
   default chain copied at import.

The swapped run must pass every test the baseline passes, and fail none.
Exits non-zero otherwise.  Nothing of structlog's code is kept.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conformance.structlog_contextvars import (
    ConformanceError,
    command_line,
    fetch_sdist,
)

REPO = Path(__file__).resolve().parents[2]

#: The public API of structlog.contextvars the drop-in provides.
DROP_IN = (
    "STRUCTLOG_KEY_PREFIX",
    "STRUCTLOG_KEY_PREFIX_LEN",
    "bind_contextvars",
    "bound_contextvars",
    "clear_contextvars",
    "get_contextvars",
    "get_merged_contextvars",
    "merge_contextvars",
    "reset_contextvars",
    "unbind_contextvars",
)

SWAP_PLUGIN = f'''\
"""Swap structlog.contextvars for ctxlog.structlog before any test imports it.

In pytest_configure, after output capture has started: structlog keeps
``sys.stdout`` as it finds it at import, and so do the test modules.
"""
import sys
import types

DROP_IN = {DROP_IN!r}


def pytest_configure(config):
    import structlog
    import structlog.contextvars as real

    import ctxlog.structlog as dropin

    defined = {{
        name
        for name, value in vars(real).items()
        if not name.startswith("_")
        and (getattr(value, "__module__", None) == real.__name__ or name.isupper())
    }}
    unknown = defined - set(DROP_IN)
    if unknown:
        raise RuntimeError(f"structlog.contextvars has public names the drop-in lacks: {{unknown}}")
    swapped = types.ModuleType(real.__name__, real.__doc__)
    swapped.__dict__.update(vars(real))
    for name in DROP_IN:
        swapped.__dict__[name] = getattr(dropin, name)
    sys.modules[real.__name__] = swapped
    structlog.contextvars = swapped
    dropin.install()
    assert dropin.installed()
'''

PYTEST_INI = """\
[pytest]
addopts = --strict-markers --import-mode=importlib -p no:cacheprovider -p no:randomly
testpaths = tests
xfail_strict = true
filterwarnings =
    once::Warning
    ignore:unclosed event loop:ResourceWarning
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def extract_suite(sdist: Path, into: Path) -> Path:
    """Write the sdist's ``tests/`` tree into ``into/tests``; return that dir."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = [
            member
            for member in tar.getmembers()
            if member.isfile()
            and len(Path(member.name).parts) > 2
            and Path(member.name).parts[1] == "tests"
        ]
        if not members:
            msg = f"{sdist.name} has no tests/"
            raise ConformanceError(msg)
        for member in members:
            relative = Path(*Path(member.name).parts[1:])
            if ".." in relative.parts:
                msg = f"{sdist.name}: unexpected path {member.name}"
                raise ConformanceError(msg)
            handle = tar.extractfile(member)
            if handle is None:  # isfile() members always have data; kept for the type checker
                msg = f"cannot read {member.name} from {sdist.name}"
                raise ConformanceError(msg)
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(handle.read())
    return into / "tests"


def outcomes(report: Path) -> dict[str, str]:
    """``{test id: passed|failed|error|skipped}`` from a junit report."""
    root = ET.parse(report).getroot()  # noqa: S314 -- our own pytest's report
    found = {}
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            found[test_id] = "failed"
        elif "error" in kinds:
            found[test_id] = "error"
        elif "skipped" in kinds:
            found[test_id] = "skipped"
        else:
            found[test_id] = "passed"
    return found


def run_suite(work: Path, name: str, plugins: list[str]) -> dict[str, str]:
    report = work / f"{name}.xml"
    command = [sys.executable, "-m", "pytest", "-c", str(work / "pytest.ini")]
    command += ["--rootdir", str(work), "-q", "-p", "no:ctxlog", f"--junitxml={report}"]
    for plugin in plugins:
        command += ["-p", plugin]
    result = subprocess.run(
        command,
        cwd=work,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(work), str(REPO)])},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if not report.exists():
        msg = f"the {name} run wrote no report:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        raise ConformanceError(msg)
    found = outcomes(report)
    if result.returncode not in (0, 1):  # 1: some tests failed, reported below
        msg = f"the {name} run exited {result.returncode}:\n{result.stdout[-4000:]}"
        raise ConformanceError(msg)
    if result.returncode == 1 and name == "swapped":
        print(result.stdout[-6000:], file=sys.stderr)
    return found


def run(sdist: Path | None) -> int:
    """Fetch, extract and run both ways; return the exit status."""
    version = importlib.metadata.version("structlog")
    with tempfile.TemporaryDirectory(prefix="ctxlog-structlog-suite-") as tmp:
        work = Path(tmp)
        sdist = sdist or fetch_sdist(version, work)
        extract_suite(sdist, work)
        (work / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
        (work / "_ctxlog_swap.py").write_text(SWAP_PLUGIN, encoding="utf-8")
        baseline = run_suite(work, "baseline", [])
        swapped = run_suite(work, "swapped", ["_ctxlog_swap"])
        passing = {test for test, outcome in baseline.items() if outcome == "passed"}
        broken = sorted(
            test for test, outcome in baseline.items() if outcome in {"failed", "error"}
        )
        if broken:
            print(f"FAILED: structlog's suite fails here even unswapped: {broken[:20]}")
            return 1
        lost = sorted(test for test in passing if swapped.get(test) != "passed")
        failing = sorted(t for t, outcome in swapped.items() if outcome in {"failed", "error"})
        counts = {
            kind: sum(1 for outcome in swapped.values() if outcome == kind)
            for kind in ("passed", "failed", "error", "skipped")
        }
        print(
            f"structlog {version} ({sdist.name}), whole suite, structlog.contextvars -> "
            f"ctxlog.structlog: {counts['passed']}/{len(passing)} passed "
            f"(failed {counts['failed']}, errors {counts['error']}, "
            f"skipped {counts['skipped']} as unswapped: platform and optional-package checks)"
        )
        if lost or failing:
            for test in sorted({*lost, *failing})[:50]:
                print(f"  {swapped.get(test, 'missing')}: {test}", file=sys.stderr)
            return 1
        print("OK")
        return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run; return the exit status."""
    return command_line(run, __doc__.splitlines()[0] if __doc__ else None, argv)


if __name__ == "__main__":
    sys.exit(main())
