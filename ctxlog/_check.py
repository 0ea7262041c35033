"""Check JSON log lines: every line carries a correlation id, and no line crosses requests.

Used by ``python -m ctxlog check FILE...`` and by the demo to verify its own output.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "CheckReport",
    "Problem",
    "ProblemKind",
    "check_files",
    "check_lines",
    "check_records",
]

ProblemKind = Literal["invalid-json", "missing", "crossed"]

#: Values a line may carry when no id was bound (a filter default).
MISSING_VALUES: Final = frozenset({"", "-", "None", "null"})

_TOKEN: Final = re.compile(r"[A-Za-z0-9._:-]+")
_MAX_DETAIL: Final = 200


@dataclass(frozen=True)
class Problem:
    """One line that failed the check: its number (in *source*, when given)."""

    lineno: int
    kind: ProblemKind
    detail: str
    source: str = ""

    @property
    def where(self) -> str:
        """``line N``, or ``FILE line N`` when checked among several files."""
        return f"{self.source} line {self.lineno}" if self.source else f"line {self.lineno}"


@dataclass
class CheckReport:
    """What :func:`check_lines` found."""

    lines: int = 0
    ids: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no line is missing its id, crosses requests, or is not JSON."""
        return not self.problems

    def count(self, kind: ProblemKind) -> int:
        """How many problems of *kind* were found."""
        return sum(1 for p in self.problems if p.kind == kind)

    def summary(self) -> str:
        """A short human-readable summary."""
        return (
            f"lines: {self.lines}  ids: {self.ids}  "
            f"missing id: {self.count('missing')}  crossed: {self.count('crossed')}  "
            f"invalid JSON: {self.count('invalid-json')}"
        )


def _strings(value: Any) -> Iterable[str]:
    """Every string in *value*, at any depth (iteratively: a deep line cannot
    exhaust the stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _short(text: str) -> str:
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def check_lines(
    lines: Iterable[str],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    logger_key: str = "logger",
) -> CheckReport:
    """Check JSON log *lines* (see :func:`check_records`); a line that is not a
    JSON object is an ``invalid-json`` problem.  Blank lines are ignored."""
    invalid: list[Problem] = []

    def parsed() -> Iterable[tuple[int, Mapping[str, Any]]]:
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                invalid.append(Problem(lineno, "invalid-json", f"{exc}: {_short(raw)}"))
                continue
            if not isinstance(record, dict):
                invalid.append(Problem(lineno, "invalid-json", f"not an object: {_short(raw)}"))
                continue
            yield lineno, record

    report = _check(parsed(), key=key, ignore_loggers=ignore_loggers, logger_key=logger_key)
    report.problems.extend(invalid)
    report.problems.sort(key=lambda problem: problem.lineno)
    return report


def check_records(
    records: Iterable[Mapping[str, Any]],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    logger_key: str = "logger",
) -> CheckReport:
    """Check log lines already parsed into mappings (numbered from 1).

    A line is *missing* when *key* is absent or empty (or ``"-"``, ``None``); it
    is *crossed* when any of its other string values mentions, as a whole token
    of ``[A-Za-z0-9._:-]+``, an id that other lines carry under *key* but that is
    not the line's own.  Lines whose *logger_key* is in *ignore_loggers* are
    skipped (startup lines outside any request, for example).
    """
    return _check(
        enumerate(records, start=1), key=key, ignore_loggers=ignore_loggers, logger_key=logger_key
    )


def _check(
    numbered: Iterable[tuple[int, Mapping[str, Any]]],
    *,
    key: str,
    ignore_loggers: Collection[str],
    logger_key: str,
) -> CheckReport:
    """The one implementation behind :func:`check_lines` and :func:`check_records`."""
    report = CheckReport()
    records = [(n, rec) for n, rec in numbered if rec.get(logger_key) not in ignore_loggers]
    report.lines = len(records)
    ids = {
        str(rec[key]) for _, rec in records if key in rec and str(rec[key]) not in MISSING_VALUES
    }
    report.ids = len(ids)
    for lineno, record in records:
        own = record.get(key)
        if own is None or str(own) in MISSING_VALUES:
            message = record.get("message", "")
            report.problems.append(Problem(lineno, "missing", f"no {key}: {_short(str(message))}"))
            continue
        own = str(own)
        for name, value in record.items():
            if name == key:
                continue
            for text in _strings(value):
                foreign = {t for t in _TOKEN.findall(text) if t in ids and t != own}
                if foreign:
                    report.problems.append(
                        Problem(
                            lineno,
                            "crossed",
                            f"{key}={own} but {name!s} mentions {', '.join(sorted(foreign))}",
                        )
                    )
                    break
            else:
                continue
            break
    report.problems.sort(key=lambda problem: problem.lineno)
    return report


def check_files(
    paths: Iterable[str | Path],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    logger_key: str = "logger",
) -> CheckReport:
    """:func:`check_lines` over the lines of every file in *paths*, as one stream
    (an id crossing from one file to another counts).  With several files, each
    problem names its file and its line number in that file.

    :raises OSError: a file cannot be read.
    """
    files = [Path(path) for path in paths]
    starts: list[int] = []  # the stream's line number of each file's first line

    def lines() -> Iterable[str]:
        count = 0
        for path in files:
            starts.append(count + 1)
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    count += 1
                    yield line

    report = check_lines(lines(), key=key, ignore_loggers=ignore_loggers, logger_key=logger_key)
    if len(files) > 1:
        located = []
        for problem in report.problems:
            index = bisect.bisect_right(starts, problem.lineno) - 1
            line = problem.lineno - starts[index] + 1
            located.append(dataclasses.replace(problem, lineno=line, source=str(files[index])))
        report.problems = located
    return report
