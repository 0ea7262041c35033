"""Fail unless every test marked `needs_python` ran and passed in a JUnit report.

    python .ci/newer_tests_ran.py REPORT.xml

tests/conftest.py skips a `needs_python((3, 14))` test on an older interpreter
and records the marker on every such test, run or skipped, as the JUnit
property `needs_python`. On the interpreters CI runs for those tests, a skip is
a failure: this proves they ran.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

report = sys.argv[1]
ran, not_run = 0, []
for case in ET.parse(report).iter("testcase"):  # noqa: S314 -- our own pytest's report
    needs = [
        prop.get("value") for prop in case.iter("property") if prop.get("name") == "needs_python"
    ]
    if not needs:
        continue
    name = f"{case.get('classname')}::{case.get('name')} (needs {needs[0]})"
    if case.find("skipped") is not None:
        not_run.append(f"skipped: {name}")
    elif case.find("failure") is not None or case.find("error") is not None:
        not_run.append(f"failed: {name}")
    else:
        ran += 1
print(f"tests that need a newer Python: {ran} passed, {len(not_run)} not")
for line in not_run:
    print(f"  {line}")
sys.exit(1 if not_run or ran == 0 else 0)
