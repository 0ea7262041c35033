"""The real demo: a Starlette service under uvicorn, loaded, its JSON log checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ctxlog import _demo
from ctxlog._check import check_lines


def test_the_demo_runs_clean(tmp_path: Path) -> None:
    output = tmp_path / "demo.jsonl"
    result = _demo.run(60, output, workdir=tmp_path)
    assert result.ok, (result.problems[:5], result.report.problems[:5])
    assert result.report.ids == 60
    assert result.hostile > 0
    assert result.hops > 0
    records = [json.loads(line) for line in output.read_text("utf-8").splitlines()]
    assert len(records) == result.lines > 60 * 10
    loggers = {record["logger"] for record in records}
    assert {"ctxlog.demo", "ctxlog.asgi", "uvicorn.access"} <= loggers
    assert any(name.startswith("sqlalchemy.engine") for name in loggers)
    # Every line has the id; the JSON carries the request fields the demo asked for.
    assert all(record["request_id"] not in ("", "-") for record in records)
    assert all(record["path"].startswith(("/orders/", "/inventory/")) for record in records)
    # A service-to-service hop kept the caller's request id and trace id.
    hops = [r for r in records if r["message"].startswith("inventory of order")]
    assert hops
    for hop in hops:
        assert hop["message"].endswith(f"asked by {hop['request_id']}")
    traced = [r for r in records if "trace_id" in r]
    assert traced


def test_a_wrong_line_in_the_demo_log_is_caught(tmp_path: Path) -> None:
    output = tmp_path / "demo.jsonl"
    assert _demo.run(12, output, workdir=tmp_path).ok
    lines = output.read_text("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    ids = sorted({record["request_id"] for record in records})
    index = next(i for i, r in enumerate(records) if r["message"].startswith("stored order"))
    wrong = dict(records[index], request_id=next(i for i in ids if i not in lines[index]))
    report = check_lines([*lines[:index], json.dumps(wrong), *lines[index + 1 :]])
    assert [problem.kind for problem in report.problems] == ["crossed"]


def test_python_m_ctxlog_demo(tmp_path: Path) -> None:
    output = tmp_path / "demo.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "ctxlog", "demo", "-n", "30", "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uvicorn on 127.0.0.1" in result.stdout
    assert "ids: 30  missing id: 0  crossed: 0" in result.stdout
    assert "OK: every line carries the id" in result.stdout
    assert output.stat().st_size > 0
