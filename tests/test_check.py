"""The log checker against hostile and ordinary inputs: it never lies, never
falls over, and holds no more than a few times the longest line."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ctxlog
from ctxlog.__main__ import main
from ctxlog._check import check_files, check_lines, check_records
from ctxlog.stdlib import json_formatter
from ctxlog.testing import check
from tests.conftest import Captured

MB = 1 << 20


def line(request_id: str | None, message: str = "", **extra: object) -> str:
    record: dict[str, object] = {"level": "INFO", "logger": "app", "message": message, **extra}
    if request_id is not None:
        record["request_id"] = request_id
    return json.dumps(record)


#: The three ways a line is read: a small line parsed whole; a mapping already
#: parsed (ctxlog.testing.check); a line over 1 MiB, walked without building it.
Way = Callable[[list[str]], Any]


def as_lines(lines: list[str]) -> Any:
    return check_lines(lines)


def as_records(lines: list[str]) -> Any:
    return check_records([json.loads(text) for text in lines])


def as_long_lines(lines: list[str]) -> Any:
    padded = [text[:-1] + ', "padding": "' + "." * (MB + 10) + '"}' for text in lines]
    return check_lines(padded)


WAYS = pytest.mark.parametrize("way", [as_lines, as_records, as_long_lines])


def crossed(report: Any) -> list[tuple[int, str]]:
    return [(p.lineno, p.detail) for p in report.problems if p.kind == "crossed"]


def run_check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxlog", "check", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def json_lines(captured: Captured) -> Captured:
    """A logger writing ctxlog's JSON lines, with the shipped config's ``"-"`` default."""
    captured.handler.setFormatter(json_formatter())
    captured.handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
    return captured


# --------------------------------------------------------------------------
# 1. bounded memory
# --------------------------------------------------------------------------

#: Checks a file and prints its peak memory in KiB: the process's own high-water
#: mark (VmHWM) where Linux gives it, since ru_maxrss also counts the memory of
#: the process that started it (the pytest process, before exec).
PEAK = """
import re, resource, sys
from pathlib import Path
from ctxlog._check import check_files
report = check_files([sys.argv[1]], max_line_bytes=int(sys.argv[2]))
print(report.summary())
print(report.problems[0].kind if report.problems else "-")
status = Path("/proc/self/status")
if status.exists():
    print(re.search(r"VmHWM:\\s*(\\d+) kB", status.read_text()).group(1))
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # bytes on macOS
"""


def peak(path: Path, max_line_bytes: int = 64 * MB) -> tuple[str, str, float]:
    """(summary, first problem kind, peak MB) of a check of *path* in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK, str(path), str(max_line_bytes)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary, kind, kib = result.stdout.splitlines()
    return summary, kind, int(kib) / 1024


class TestMemory:
    def test_a_long_line_of_short_words_costs_a_few_times_its_size(self, tmp_path: Path) -> None:
        path = tmp_path / "words.jsonl"
        words = " ".join(["ab"] * 3_000_000)  # 9 MB: millions of tokens in one string
        path.write_text(line("r-1", "start") + "\n" + line("r-2", words + " r-1") + "\n", "utf-8")
        summary, kind, peak_mb = peak(path)
        assert "crossed: 1" in summary  # and it was read, to the end
        assert kind == "crossed"
        assert peak_mb <= 3 * 9 + 50

    def test_blank_lines_cost_nothing(self, tmp_path: Path) -> None:
        few, many = tmp_path / "few.txt", tmp_path / "many.txt"
        few.write_bytes(b"\n" * 10)
        many.write_bytes(b"\n" * 2_000_000)
        *_, base_mb = peak(few)
        summary, _, peak_mb = peak(many)
        assert "lines: 0" in summary
        assert peak_mb - base_mb < 8  # not 8 bytes per line

    def test_a_line_over_the_limit_is_reported_not_held(self, tmp_path: Path) -> None:
        path = tmp_path / "endless.jsonl"
        with path.open("wb") as out:
            out.write(line("r-1", "before").encode() + b"\n")
            for _ in range(20):
                out.write(b'{"x": "' + b"y" * MB)  # 20 MB, no newline
        summary, kind, peak_mb = peak(path, max_line_bytes=MB)
        assert "too long: 1" in summary
        assert kind == "too-long"
        assert peak_mb <= 3 * 1 + 50

    def test_the_limit_and_its_report(self) -> None:
        report = check_lines([line("r-1", "x"), line("r-2", "y" * 2000)], max_line_bytes=1000)
        (problem,) = report.problems
        assert problem.kind == "too-long"
        assert "longer than the 1,000 bytes" in problem.detail
        assert not report.ok


# --------------------------------------------------------------------------
# 2. never a traceback
# --------------------------------------------------------------------------


class TestNeverATraceback:
    DEEP = "[" * 1000 + "]" * 1000

    def test_ids_and_messages_nested_a_thousand_deep(self, tmp_path: Path) -> None:
        path = tmp_path / "deep.jsonl"
        path.write_text(
            "\n".join(
                [
                    line("r-1", "a"),
                    '{"request_id": "r-2", "message": ' + self.DEEP + "}",
                    '{"request_id": ' + self.DEEP + ', "message": "x"}',
                    '{"message": ' + self.DEEP + "}",
                ]
            ),
            encoding="utf-8",
        )
        result = run_check(str(path))
        assert result.stderr == ""
        assert result.returncode == 1
        assert result.stdout.startswith("lines: 4  ids: 2  missing id: 2")
        assert "line 3: missing: request_id holds no id but [[[[" in result.stdout

    def test_deep_records_too(self) -> None:
        deep: Any = "r-1"
        for _ in range(5000):
            deep = [deep]
        report = check([{"request_id": "r-1"}, {"request_id": "r-2", "x": deep}, {"message": deep}])
        assert [p.kind for p in report.problems] == ["crossed", "missing"]

    def test_captured_values_of_any_shape(self) -> None:
        """Captured records hold Python values: tuples are looked into too."""
        lines: list[dict[str, Any]] = [
            {"request_id": "r-1"},
            {"request_id": "r-2", "pair": ("x", ["r-1"])},
        ]
        assert [p.kind for p in check(lines).problems] == ["crossed"]

    def test_an_id_of_five_thousand_digits_is_an_id(self) -> None:
        digits = "7" * 5000
        lines = [
            '{"request_id": ' + digits + ', "message": "x"}',
            line("r-2", f"about {digits}"),
        ]
        report = check_lines(lines)
        assert report.count("invalid-json") == 0
        assert report.ids == 2
        assert [p.kind for p in report.problems] == ["crossed"]

    def test_the_walker_reads_what_json_reads(self) -> None:
        """Lines over 1 MiB, or that the parsers refuse for their limits, are walked:
        the walk accepts exactly what `json` accepts, on mutated samples."""
        from ctxlog._check import _NotJSONError, _walk  # noqa: PLC0415 -- the private walker

        rng = random.Random(18)
        alphabet = list('{}[],:"\\ abtu0123456789.eE-+nulltruefalseNaNInfinity\n\t\x01x\u00e9')
        samples = [
            '{"a": "b\\\\"}',
            '{"a": "\\u00e9\\n\\ud800"}',
            '{"a": [1, 2.5e3, -0, null, true, false]}',
            '{"a": "x\\"y", "b": {"c": [{}]}}',
            '{"a": NaN, "b": -Infinity, "c": Infinity}',
        ]
        for n in range(4000):
            chars = list(samples[n % len(samples)])
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(chars) + 1)
                if rng.random() < 0.5:
                    chars.insert(at, rng.choice(alphabet))
                elif chars:
                    del chars[min(at, len(chars) - 1)]
            text = "".join(chars)
            try:
                value = json.loads(text)
            except ValueError:
                with pytest.raises(_NotJSONError):
                    _walk(text.encode(), ())
            else:
                top = _walk(text.encode(), ())
                assert (top is not None) == isinstance(value, dict), text

    @pytest.mark.parametrize(
        "text",
        [
            "\x00\x1b[2J\xff",
            "{" * 2000,
            '{"request_id": "r-1", "x": ' + "[" * 3000,
            '{"request_id": "r-1"}{"request_id": "r-2"}',
            '{"request_id": "r-1", "x": "\\x"}',
            '{"request_id": "r-1", "x": "a\\u12"}',
            '"just a string"',
            "123",
            "{\"request_id\": 'r-1'}",
        ],
    )
    def test_any_line_gives_a_report(self, text: str) -> None:
        result = run_check("-", stdin=line("r-1", "ok") + "\n" + text + "\n")
        assert result.stderr == ""
        assert result.returncode == 1
        counts = re.match(
            r"lines: 2  ids: 1  missing id: 0  crossed: 0  invalid JSON: (\d)  truncated: (\d)",
            result.stdout,
        )
        assert counts is not None, result.stdout
        assert int(counts[1]) + int(counts[2]) == 1


# --------------------------------------------------------------------------
# 3. the report cannot be forged
# --------------------------------------------------------------------------


FORGED = "\n  line 1: crossed: all is well\x1b[2J\x1b]0;owned\x07\r"


class TestEscaped:
    def test_nothing_from_a_line_reaches_the_report_raw(self, tmp_path: Path) -> None:
        path = tmp_path / "forged.jsonl"
        lines = [
            line("r-1", "a"),
            line("a" + FORGED, "b"),  # an id that holds a forged report line
            line("r-2" + FORGED, "names r-1"),  # the own id printed in the detail
            line("r-3", "c", **{"field" + FORGED: "r-1"}),  # a field name
            line("r-4", "names a" + FORGED),  # a foreign id, named whole
            line(None, "no id" + FORGED),  # a message in a "missing" detail
            '{"request_id": "r-5", "message": "cut' + FORGED.replace("\n", "\\n"),
            "not json" + FORGED.replace("\n", " "),
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for form in ("text", "json"):
            result = run_check("--format", form, "--limit", "100", str(path))
            assert result.returncode == 1
            assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", result.stdout), form
            printed = result.stdout.splitlines()
            if form == "text":
                problems = 6
                assert len(printed) == 1 + problems, printed
                assert all(p.startswith("  line ") for p in printed[1:])
                assert r"\x1b[2J" in result.stdout
            else:
                assert len(printed) == 1

    def test_the_details_say_what_was_there(self) -> None:
        report = check_lines([line("r-1", "a"), line("r-2" + FORGED, "names r-1")])
        ((_, detail),) = crossed(report)
        assert detail == (
            r"request_id=r-2\n  line 1: crossed: all is well\x1b[2J\x1b]0;owned\x07\r"
            " but message mentions r-1"
        )


# --------------------------------------------------------------------------
# 4. no false crossings
# --------------------------------------------------------------------------


class TestSchemaValues:
    @pytest.mark.parametrize("request_id", ["INFO", "ERROR", "WARNING"])
    def test_an_id_that_is_a_level_name(self, json_lines: Captured, request_id: str) -> None:
        log = json_lines.logger
        with ctxlog.bind(request_id=request_id):
            log.info("the client sent this id")
        with ctxlog.bind(request_id="r-2"):
            log.info("an ordinary request")
            log.warning("another line")
            log.error("and another")
        log.info("outside any request")
        report = check_lines(json_lines.lines(), outside_loggers=[json_lines.logger.name])
        assert report.ok, report.problems
        assert (report.ids, report.outside) == (2, 1)

    def test_an_id_that_is_a_logger_name_or_a_time(self, json_lines: Captured) -> None:
        log = json_lines.logger
        with ctxlog.bind(request_id=log.name):
            log.info("a")
        with ctxlog.bind(request_id="r-2"):
            log.info("b")
        lines = json_lines.lines()
        when = json.loads(lines[1])["time"]
        lines.append(line(when, "c"))
        lines.append(line("r-3", "d", time=when, process=when, threadName=log.name))
        assert check_lines(lines).ok

    @WAYS
    def test_the_message_and_added_values_are_still_evidence(self, way: Way) -> None:
        report = way([line("INFO", "a"), line("r-2", "saw INFO"), line("r-3", "", x={"y": "INFO"})])
        assert [n for n, _ in crossed(report)] == [2, 3]


# --------------------------------------------------------------------------
# 5. no blind spots: ids of any characters
# --------------------------------------------------------------------------

AWS = "Root=1-5759e988-bd862e3fe1be46a994272793"
BASE64 = "q83vEjRWeJA+/wA=="


class TestAnyId:
    @WAYS
    @pytest.mark.parametrize("ident", [AWS, BASE64, "+/=", "a b", "caf\u00e9-1", "x\ny"])
    def test_a_line_naming_an_id_whole_is_crossed(self, way: Way, ident: str) -> None:
        report = way(
            [
                line(ident, f"my own id is {ident}, said twice: ({ident})"),
                line("r-2", f"header was {ident};Parent=53995c3f42cd8ad8"),
                line("r-3", "", params=[1, {"trace": f"{ident}"}]),
            ]
        )
        assert [n for n, _ in crossed(report)] == [2, 3]

    @WAYS
    def test_part_of_an_id_is_not_the_id(self, way: Way) -> None:
        report = way(
            [
                line(AWS, "a"),
                line(BASE64, "b"),
                line("r-3", "Root=1-5759e988 and x" + AWS + " and " + BASE64 + "x"),
                line("r-4", AWS[:-1] + " q83vEjRWeJA+"),
            ]
        )
        assert crossed(report) == []

    @WAYS
    def test_an_id_inside_a_longer_id_is_not_named(self, way: Way) -> None:
        inner = AWS.removeprefix("Root=")  # a token id, and a piece of AWS
        report = way(
            [
                line(inner, "x"),
                line(AWS, f"my own {AWS}"),  # names only itself, not inner
                line("r-3", f"saw {AWS}"),  # names AWS, not inner
                line("r-4", f"saw {inner}"),
            ]
        )
        assert crossed(report) == [
            (3, f"request_id=r-3 but message mentions {AWS}"),
            (4, f"request_id=r-4 but message mentions {inner}"),
        ]

    def test_escapes_cannot_hide_an_id(self) -> None:
        hidden = json.dumps({"request_id": "r-2", "message": "x"})[:-1] + ', "m": "r\\u002d1"}'
        report = check_lines([line("r-1"), hidden, hidden[:-1] + ', "p": "' + "." * MB + '"}'])
        assert [n for n, _ in crossed(report)] == [2, 3]


# --------------------------------------------------------------------------
# 6. a correct server log passes; an empty one does not
# --------------------------------------------------------------------------

SERVER_LINES = [
    line("-", "Started server process [4242]", logger="uvicorn.error"),
    line("-", "Waiting for application startup.", logger="uvicorn.error"),
    line("r-1", "GET / 200", logger="uvicorn.access"),
    line("r-2", "Exception in ASGI application", logger="uvicorn.error", exception="Trace..."),
    line(None, "Booting worker with pid: 4243", logger="gunicorn.error"),
    line("-", "Shutting down", logger="uvicorn.error"),
]


class TestServerLogs:
    def test_the_servers_own_lines_are_outside_requests(self, tmp_path: Path) -> None:
        path = tmp_path / "server.jsonl"
        path.write_text("\n".join(SERVER_LINES) + "\n", encoding="utf-8")
        report = check_files([path])
        assert report.ok
        assert (report.lines, report.ids, report.outside) == (6, 2, 4)
        result = run_check(str(path))
        assert result.returncode == 0
        assert "outside requests: 4" in result.stdout

    def test_their_tracebacks_must_carry_an_id(self) -> None:
        lost = line("-", "Exception in ASGI application", logger="uvicorn.error", exception="T")
        report = check_lines([*SERVER_LINES, lost])
        assert [(p.lineno, p.kind) for p in report.problems] == [(7, "missing")]

    def test_an_application_line_without_its_id_is_missing(self) -> None:
        report = check_lines([*SERVER_LINES, line("-", "lost its context")])
        assert [(p.lineno, p.kind) for p in report.problems] == [(7, "missing")]

    def test_other_outside_loggers_and_none(self, tmp_path: Path) -> None:
        path = tmp_path / "server.jsonl"
        path.write_text(
            "\n".join([*SERVER_LINES, line("-", "ready", logger="granian")]) + "\n", "utf-8"
        )
        assert run_check(str(path)).returncode == 1
        assert run_check("--outside-logger", "granian", str(path)).returncode == 0
        strict = run_check("--no-outside", "--outside-logger", "granian", str(path))
        assert strict.returncode == 1
        assert "missing id: 4" in strict.stdout

    @pytest.mark.parametrize("content", ["", "\n\n  \n", line("-", "x", logger="skip") + "\n"])
    def test_an_empty_log_is_not_a_clean_one(self, tmp_path: Path, content: str) -> None:
        path = tmp_path / "empty.jsonl"
        path.write_text(content, encoding="utf-8")
        report = check_files([path], ignore_loggers=["skip"])
        assert report.empty
        assert not report.ok
        result = run_check("--ignore-logger", "skip", str(path))
        assert result.returncode == 3
        assert "no log line to check" in result.stdout
        as_json = json.loads(
            run_check("--format", "json", "--ignore-logger", "skip", str(path)).stdout
        )
        assert (as_json["ok"], as_json["empty"]) == (False, True)

    def test_an_empty_capture_is_not_a_clean_one(self) -> None:
        assert not check([]).ok


def test_sizes_on_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(line("r-1", "x" * 3000) + "\n", encoding="utf-8")
    assert main(["check", "--max-line-bytes", "2K", str(path)]) == 1
    assert "too long: 1" in capsys.readouterr().out
    assert main(["check", "--max-line-bytes", "1M", str(path)]) == 0
    for bad in ("0", "-1", "2X", "M"):
        with pytest.raises(SystemExit):
            main(["check", "--max-line-bytes", bad, str(path)])
        assert "expected a size in bytes" in capsys.readouterr().err


def test_the_report_of_records_is_the_report_of_lines() -> None:
    lines = [
        line("r-1", "a"),
        line(AWS, "b"),
        line("r-3", f"about r-1 and {AWS}"),
        line(None, "d"),
        line("-", "e", logger="uvicorn.error"),
    ]
    by_lines, by_records = as_lines(lines), as_records(lines)
    assert by_lines == by_records
    assert by_lines == as_long_lines(lines)
