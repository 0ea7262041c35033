"""python -m ctxlog: the demo runs clean, and the checker catches wrong lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ctxlog
from ctxlog import _demo_sim
from ctxlog.__main__ import main
from ctxlog._check import check_files, check_lines
from tests.conftest import THREADS_INHERIT_CONTEXT


def line(request_id: str | None, message: str, **extra: object) -> str:
    record: dict[str, object] = {"logger": "app", "message": message, **extra}
    if request_id is not None:
        record["request_id"] = request_id
    return json.dumps(record)


class TestCheck:
    def test_clean(self) -> None:
        report = check_lines(
            [line("r1", "start r1"), "", line("r2", "start r2"), line("r1", "end r1")]
        )
        assert report.ok
        assert (report.lines, report.ids) == (3, 2)
        assert "crossed: 0" in report.summary()

    def test_detects_a_line_carrying_another_requests_id(self) -> None:
        report = check_lines(
            [line("r1", "start r1"), line("r2", "start r2"), line("r2", "SELECT r1 params")]
        )
        assert not report.ok
        (problem,) = report.problems
        assert (problem.lineno, problem.kind) == (3, "crossed")
        assert "mentions r1" in problem.detail

    def test_detects_crossing_in_nested_fields(self) -> None:
        report = check_lines([line("a-1", "x"), line("b-2", "y", params={"ids": ["a-1"]})])
        assert [p.kind for p in report.problems] == ["crossed"]

    def test_detects_missing_and_invalid(self) -> None:
        report = check_lines(
            [line(None, "no id"), line("-", "default"), "not json", "[1]", line("r", "ok")]
        )
        assert [p.kind for p in report.problems] == [
            "missing",
            "missing",
            "invalid-json",
            "invalid-json",
        ]
        assert report.count("missing") == 2

    def test_ignored_loggers(self) -> None:
        lines = [json.dumps({"logger": "uvicorn.error", "message": "startup"}), line("r", "x")]
        assert check_lines(lines, ignore_loggers={"uvicorn.error"}).ok

    def test_command_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        good = tmp_path / "good.jsonl"
        good.write_text(line("r1", "m r1") + "\n", encoding="utf-8")
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line("r1", "m r1") + "\n" + line("r2", "leaked r1") + "\n", "utf-8")
        assert main(["check", str(good)]) == 0
        assert main(["check", str(good), str(bad)]) == 1
        out = capsys.readouterr().out
        assert "crossed: 1" in out
        assert f"  {bad} line 2: crossed: request_id=r2 but message mentions r1" in out

    def test_problems_name_their_file_and_line(self, tmp_path: Path) -> None:
        paths = [tmp_path / name for name in ("a.jsonl", "empty.jsonl", "b.jsonl")]
        paths[0].write_text(line("r1", "x") + "\n\n" + line(None, "no id") + "\n", "utf-8")
        paths[1].write_text("", "utf-8")
        paths[2].write_text(line("r2", "y") + "\n" + line("r2", "about r1") + "\n", "utf-8")
        report = check_files(paths)
        assert [(p.where, p.kind) for p in report.problems] == [
            (f"{paths[0]} line 3", "missing"),
            (f"{paths[2]} line 2", "crossed"),  # crossing between files counts
        ]
        assert check_files(paths[2:]).ok  # r1 is no known id in b.jsonl alone
        (alone,) = check_files(paths[:1]).problems
        assert (alone.where, alone.kind) == ("line 3", "missing")

    def test_command_line_errors(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "missing.jsonl"
        assert main(["check", str(missing)]) == 2
        assert f"cannot read {missing}: No such file or directory" in capsys.readouterr().err
        for argv in (["demo", "-n", "0"], ["demo", "-n", "x"], ["check", "--limit", "-1", "f"]):
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            assert exit_info.value.code == 2
            assert "expected a whole number >=" in capsys.readouterr().err


class TestSimulatedDemo:
    def test_every_line_carries_its_request_id(self, tmp_path: Path) -> None:
        output = tmp_path / "demo.jsonl"
        report = _demo_sim.run(60, output)
        assert report.ok, report.problems
        assert report.ids == 60
        assert report.lines == 60 * 4
        records = [json.loads(x) for x in output.read_text("utf-8").splitlines()]
        assert all(r["request_id"] in r["message"] for r in records)

    def test_command_line_prints_the_summary(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output = tmp_path / "demo.jsonl"
        assert main(["demo", "--simulated", "-n", "25", "-o", str(output)]) == 0
        out = capsys.readouterr().out
        assert f"ctxlog demo (simulated): 25 requests, log: {output}" in out
        assert re.search(r"lines: 100  ids: 25  missing id: 0  crossed: 0  .* time: \d", out)
        assert out.rstrip().endswith("OK: every line carries the id of its request")
        assert len(output.read_text("utf-8").splitlines()) == 100

    def test_command_line_fails_when_a_hop_loses_the_context(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The pool hop without ctxlog.wrap: a plain executor loses the context.  Where
        # threads inherit the context of whoever started them (3.14+,
        # thread_inherit_context), its 8 threads keep the requests that started them
        # instead: the other requests' lines carry a wrong id.
        monkeypatch.setattr(ctxlog, "wrap", lambda fn: fn)
        output = tmp_path / "demo.jsonl"
        assert main(["demo", "--simulated", "-n", "10", "-o", str(output)]) == 1
        out = capsys.readouterr().out
        if THREADS_INHERIT_CONTEXT:
            assert "missing id: 0 " in out
            assert "crossed: request_id=req-0000" in out
            assert "FAIL: " in out
        else:
            assert "missing id: 10" in out
            assert "no request_id: worker step 2 for req-0000" in out
            assert out.rstrip().endswith("FAIL: 10")

    def test_a_deliberately_wrong_line_is_caught(self, tmp_path: Path) -> None:
        output = tmp_path / "demo.jsonl"
        assert _demo_sim.run(10, output).ok
        records = output.read_text("utf-8").splitlines()
        wrong = json.loads(records[-1])
        wrong["request_id"] = "req-00000" if wrong["request_id"] != "req-00000" else "req-00001"
        output.write_text("\n".join([*records[:-1], json.dumps(wrong)]) + "\n", "utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "ctxlog", "check", str(output)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1
        assert "crossed: 1" in result.stdout


def test_check_reads_a_deeply_nested_line_and_goes_on(tmp_path: Path) -> None:
    """Nesting 100,000 deep is still JSON: checked, a crossing deep inside found."""
    deep = "[" * 100_000 + "]" * 100_000
    nested = json.dumps({"request_id": "r-1", "x": json.loads("[" * 500 + "]" * 500)})
    crossing = '{"request_id": "r-3", "v": ' + "[" * 5_000 + '"r-1"' + "]" * 5_000 + "}"
    path = tmp_path / "deep.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"request_id": "r-1", "message": "a"}),
                f'{{"request_id": "r-2", "v": {deep}}}',
                nested,
                crossing,
            ]
        ),
        encoding="utf-8",
    )
    report = check_files([path])
    assert (report.lines, report.ids) == (4, 3)
    assert [(p.lineno, p.kind) for p in report.problems] == [(4, "crossed")]


#: Makes *name* unimportable as a package that is not installed is (sys.modules[name] =
#: None would not do: SQLAlchemy imports greenlet under its own ImportError).
HIDE = """
import sys
class Hide:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] == {name!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Hide)
from ctxlog.__main__ import main
sys.exit(main(["demo", "-n", "1"]))
"""


@pytest.mark.parametrize("missing", ["httpx", "greenlet", "aiosqlite", "uvicorn"])
def test_the_demo_without_its_extra_says_so_in_one_line(missing: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", HIDE.format(name=missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"The demo needs {missing}, which is not installed" in line
    assert "pip install 'ctxlog-correlation[demo]'" in line


@pytest.mark.parametrize("command", [[], ["demo"], ["check"], ["config"]])
def test_help_is_plain_text(command: list[str]) -> None:
    """--help prints no reStructuredText or Markdown markup."""
    result = subprocess.run(
        [sys.executable, "-m", "ctxlog", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("usage: python -m ctxlog")
    assert not re.search(r"``|`|:func:|:class:|:mod:|\.\. ", result.stdout), result.stdout


class TestCheckAtScale:
    def test_stdin_truncated_structlog_and_json_format(self) -> None:
        text = "\n".join(
            [
                line("r1", "start r1"),
                json.dumps({"logger": "sl", "event": "a structlog line"}),  # no id
                line("r2", "about r1"),
                '{"request_id": "r3", "message": "cut sho',  # the last line, cut
            ]
        )
        result = subprocess.run(
            [sys.executable, "-m", "ctxlog", "check", "--format", "json", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1
        assert result.stderr == ""  # no progress: stderr is not a terminal
        report = json.loads(result.stdout)
        assert (report["ok"], report["lines"], report["ids"]) == (False, 4, 2)
        assert report["problems"] == {"crossed": 1, "missing": 1, "truncated": 1}
        kinds = [(p["lineno"], p["kind"]) for p in report["first_problems"]]
        assert kinds == [(2, "missing"), (3, "crossed"), (4, "truncated")]
        assert "a structlog line" in report["first_problems"][0]["detail"]

    def test_version(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "ctxlog", "--version"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == f"ctxlog {ctxlog.__version__}"

    def test_an_escaped_id_is_still_found(self) -> None:
        """The raw-text scan cannot see an id behind an escape: the line is parsed."""
        report = check_lines([line("r-1", "a"), line("r-2", "trace\nr-1 again")])
        assert [p.kind for p in report.problems] == ["crossed"]

    def test_every_problem_is_counted_the_first_are_kept(self) -> None:
        lines = [line(None, f"no id {i}") for i in range(12_000)]
        report = check_lines(lines)
        assert report.count("missing") == 12_000
        assert len(report.problems) == 10_000


#: Lines json and orjson read differently (or one of them refuses), lines that
#: are not UTF-8, and ids the raw scan can and cannot see.
AWKWARD_LINES = [
    b'{"request_id": "r-1", "message": "plain"}\n',
    b'{"request_id": "r-2", "message": "NaN here", "x": NaN}\n',  # json only
    b'{"request_id": "r-3", "n": 123456789012345678901234567890, "message": "r-1"}\n',
    b'{"request_id": "r-4", "message": "lone \\ud800 surrogate mentions r-2"}\n',
    b'{"request_id": "r-5", "message": "bad utf-8 \xff\xfe r-3"}\n',
    b'{"request_id": "r\\u002d6", "message": "escaped own id"}\n',
    b'{"request_id": "id with space", "message": "mentions r-4"}\n',
    b'{"request_id": "r-7", "message": "caf\xc3\xa9 r-7 only"}\n',
    b'{"request_id": "r-8", "deep": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n",
    b"[1, 2]\n",
    b'{"request_id": "r-9", "message": "cut\n',
]


def _report_of(path: Path, *, orjson: bool) -> dict[str, Any]:
    hide = "" if orjson else "sys.modules['orjson'] = None; "
    code = (
        f"import json, sys; {hide}from ctxlog._check import check_files; "
        "r = check_files([sys.argv[1]]); d = r.as_dict(limit=100); "
        "d['first_problems'] = [(p['lineno'], p['kind']) for p in d['first_problems']]; "
        "print(json.dumps(d))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_the_verdicts_are_the_same_with_and_without_orjson(tmp_path: Path) -> None:
    path = tmp_path / "awkward.jsonl"
    path.write_bytes(b"".join(AWKWARD_LINES))
    with_orjson = _report_of(path, orjson=True)
    without = _report_of(path, orjson=False)
    assert with_orjson == without
    assert without["problems"] == {"crossed": 4, "invalid-json": 1, "truncated": 1}
    assert [kind for _, kind in without["first_problems"]] == [
        "crossed",  # line 3: r-1 in the message
        "crossed",  # line 4: r-2 beside a lone surrogate escape
        "crossed",  # line 5: r-3 after bytes that are not UTF-8
        "crossed",  # line 7: an id no token can be, mentioning r-4
        # line 9, nested deeper than either parser goes, is read all the same
        "invalid-json",  # line 10: not an object
        "truncated",  # line 11
    ]
    assert [n for n, _ in without["first_problems"]] == [3, 4, 5, 7, 10, 11]


@pytest.mark.parametrize("command", [["config", "--list"], ["config", "logging-json.json"]])
def test_output_cut_short_by_its_reader_is_not_an_error(command: list[str]) -> None:
    """``python -m ctxlog config --list | head -1``: no BrokenPipeError traceback
    when the reader has gone (here before the first write, so it is certain)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctxlog", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(60) == 141
    assert stderr == b""
