"""Every file in config/ loads through logging.config.dictConfig and writes what it promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parent.parent / "config"

# Loads the config, logs one line outside any binding and one inside, on stderr.
SCRIPT = """
import json, logging, logging.config, sys
import yaml
import ctxlog
path = sys.argv[1]
with open(path, encoding="utf-8") as fh:
    config = yaml.safe_load(fh) if path.endswith((".yaml", ".yml")) else json.load(fh)
logging.config.dictConfig(config)
log = logging.getLogger("app.orders")
log.info("outside any request")
with ctxlog.bind(request_id="r-42", user_id="u-7"):
    log.warning("order %s placed", 1001)
"""


def run_config(path: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=path.parent,
    )
    assert result.stdout == ""
    return result.stderr.splitlines()


def test_every_config_file_is_tested() -> None:
    names = sorted(p.name for p in CONFIG.iterdir() if p.suffix in {".json", ".yaml"})
    tested = sorted({*JSON_LINES, *TEXT, *(p for p in names if p.startswith("structlog"))})
    assert names == tested


JSON_LINES = ["logging-json.json", "logging-json.yaml"]
TEXT = ["logging-text.json", "logging-text.yaml"]


@pytest.mark.parametrize("name", JSON_LINES)
def test_json_lines(name: str) -> None:
    outside, inside = (json.loads(line) for line in run_config(CONFIG / name))
    assert outside == {
        "time": outside["time"],
        "level": "INFO",
        "logger": "app.orders",
        "message": "outside any request",
        "request_id": "-",
    }
    assert inside == {
        "time": inside["time"],
        "level": "WARNING",
        "logger": "app.orders",
        "message": "order 1001 placed",
        "request_id": "r-42",
        "user_id": "u-7",
    }
    # RFC 3339, UTC, microseconds
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", inside["time"])


@pytest.mark.parametrize("name", JSON_LINES)
def test_json_lines_stay_strict_json_whatever_is_bound(name: str) -> None:
    script = SCRIPT + (
        "with ctxlog.bind(request_id='r-43', tags={(1, 2): float('nan')}, city='Zürich'):\n"
        "    log.info('kept')\n"
    )
    path = CONFIG / name
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        check=True,
        cwd=path.parent,
    )
    last = result.stderr.decode("utf-8").splitlines()[-1]

    def refuse(constant: str) -> object:
        raise AssertionError(constant)

    assert json.loads(last, parse_constant=refuse) == {
        "time": json.loads(last)["time"],
        "level": "INFO",
        "logger": "app.orders",
        "message": "kept",
        "request_id": "r-43",
        "tags": {"(1, 2)": None},  # JSON has no NaN
        "city": "Zürich",
    }


@pytest.mark.parametrize("name", TEXT)
def test_plain_text(name: str) -> None:
    outside, inside = run_config(CONFIG / name)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(stamp + r" INFO     \[- -\] app\.orders: outside any request", outside)
    assert re.fullmatch(stamp + r" WARNING  \[r-42 u-7\] app\.orders: order 1001 placed", inside)
