"""Each queue integration without its library: an ImportError naming the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("ctxlog.arq", ["arq"], "arq"),
        ("ctxlog.taskiq", ["taskiq"], "taskiq"),
        ("ctxlog.django_tasks", ["django.tasks", "django_tasks"], "django-tasks"),
    ],
)
def test_a_missing_library_names_the_extra(module: str, missing: list[str], extra: str) -> None:
    code = (
        "import sys\n"
        f"for name in {missing!r}:\n"
        "    sys.modules[name] = None\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert f"pip install 'ctxlog-correlation[{extra}]'" in out
