"""The real demo: a Starlette service under uvicorn, loaded, its JSON log checked."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import ctxlog
from ctxlog import _demo
from ctxlog._check import check_lines
from tests.conftest import THREADS_INHERIT_CONTEXT


def test_the_demo_runs_clean(tmp_path: Path) -> None:
    output = tmp_path / "demo.jsonl"
    result = _demo.run(60, output, workdir=tmp_path)
    assert result.ok, (result.problems[:5], result.report.problems[:5])
    # The requests' ids, and one fresh id per background job.
    assert result.report.ids == 60 + result.jobs
    assert result.hostile > 0
    assert result.hops > 0
    assert result.failing == 6
    assert result.jobs > 0
    records = [json.loads(line) for line in output.read_text("utf-8").splitlines()]
    assert len(records) == result.lines > 60 * 10
    loggers = {record["logger"] for record in records}
    assert {"demo.orders", "ctxlog.asgi", "uvicorn.access"} <= loggers
    assert any(name.startswith("sqlalchemy.engine") for name in loggers)
    # Every line has the id; the JSON carries the request fields the demo asked for.
    assert all(record["request_id"] not in ("", "-") for record in records)
    in_requests = [record for record in records if "job" not in record]
    assert all(
        record["path"].startswith(("/orders/", "/inventory/", "/fail/")) for record in in_requests
    )
    # A failing request: its 500 traceback line, written by uvicorn, carries its id.
    failed = [r for r in records if r["message"].startswith("Exception in ASGI application")]
    assert len(failed) == 6
    for line in failed:
        assert line["logger"] == "uvicorn.error"
        assert f"failed for {line['request_id']}" in line["exception"]
    # Background work no request started: its own id, also in the thread pool.
    jobs = [r for r in records if r["message"].startswith("background job ")]
    assert jobs
    assert all(r["message"].endswith(f"for {r['request_id']}") for r in jobs)
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
    assert re.search(r"ids: \d+  missing id: 0  crossed: 0", result.stdout)
    assert "OK: every line carries the id" in result.stdout
    assert output.stat().st_size > 0


def test_main_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _demo.main(16, tmp_path / "demo.jsonl") == 0
    out = capsys.readouterr().out
    assert re.search(r"ids: \d+  missing id: 0  crossed: 0", out)
    assert out.rstrip().endswith("OK: every line carries the id of the request that caused it")


def test_the_demo_catches_a_pool_that_loses_the_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the standard library's pool, worker threads lose the request: the demo fails.

    Its threads start from an empty context: the lines miss the id.  Where threads
    inherit the context of whoever started them (3.14+, thread_inherit_context), each
    worker keeps the request that started it, for every later job: wrong ids.
    """
    monkeypatch.setattr(ctxlog, "ThreadPoolExecutor", concurrent.futures.ThreadPoolExecutor)
    assert _demo.main(8, tmp_path / "demo.jsonl", limit=3) == 1
    out = capsys.readouterr().out
    if THREADS_INHERIT_CONTEXT:
        assert "missing id: 0 " in out
        assert "crossed: 0 " not in out
        assert re.search(r"crossed: request_id=\w+ but message mentions \w+", out)
    else:
        assert "missing id: 0 " not in out
        assert ": missing: no request_id" in out
        assert "0 lines 'stored order', expected 1" in out
    assert "FAIL:" in out


def sent(n: int, header: object = None, **fields: object) -> _demo.Sent:
    item = _demo.Sent(n, header, None, status=200, request_id=f"id-{n}", body_id=f"id-{n}")
    for name, value in fields.items():
        setattr(item, name, value)
    return item


def test_the_verifier_reports_every_kind_of_mismatch() -> None:
    good = Counter({**_demo._EXPECTED, _demo._ACCESS: 1})
    assert _demo._check_request(sent(1), good, sql=4) == []
    assert _demo._check_request(sent(1, status=500), good, sql=4) == [
        "request 1: HTTP 500, header id 'id-1', body id 'id-1'"
    ]
    assert _demo._check_request(sent(1, "has space"), good, sql=4) == [
        "request 1: hostile header, but the id is 'id-1'",
        "request 1: 0 lines 'Rejected the', expected 1",
    ]
    assert _demo._check_request(sent(1, "demo-1"), good, sql=4) == [
        "request 1: sent 'demo-1', got 'id-1'"
    ]
    assert _demo._check_request(sent(1), good, sql=1) == ["request 1: only 1 SQLAlchemy lines"]
    # The server's own line is expected too.
    assert _demo._check_request(sent(1), good - Counter({_demo._ACCESS: 1}), sql=4) == [
        "request 1: 0 lines 'uvicorn.access', expected 1"
    ]
    # A failing request: a 500 with the id, and the server's traceback line.
    failed = Counter({"failing order ": 1, _demo._ACCESS: 1})
    assert _demo._check_request(sent(5, status=500), failed, sql=0) == [
        "request 5: 0 lines 'Exception in ASGI application', expected 1"
    ]
    assert (
        _demo._check_request(
            sent(5, status=500), failed + Counter({"Exception in ASGI application": 1}), sql=0
        )
        == []
    )
    # Background jobs: each its own id, on both of its lines.
    jobs = {"j-1": Counter({"background job ": 2}), "j-2": Counter({"background job ": 1})}
    assert _demo._check_jobs(["j-1", "j-2", "j-2"], jobs) == [
        "two background jobs shared an id",
        "background job j-2: 1 lines, expected 2",
        "background job j-2: 1 lines, expected 2",
    ]
    assert _demo._check_jobs([], {}) == ["no background job ran"]
    records = [{"request_id": "stranger", "logger": "x", "message": "order 1 received"}]
    raw_log = b"has space"
    problems = _demo._verify(
        [sent(1, "has space"), sent(2, request_id="id-1")], records, raw_log, []
    )
    assert "a line carries the id 'stranger', which no response had" in problems
    assert "2 requests and 0 jobs got 1 ids" in problems
    assert "request 1: the hostile value b'has space' is in the log" in problems
    assert _demo._records(["{}", "not json", "[1]", '{"a": 1}']) == [{}, {"a": 1}]
