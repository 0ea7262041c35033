"""Check log lines: every line carries a correlation id, and no line crosses requests.

Used by ``python -m ctxlog check FILE...``, by the demo to verify its own
output, and by :mod:`ctxlog.testing` on captured lines: one implementation.

It streams: a first pass learns every line's own id (kept as a small int per
line), a second pass looks for other requests' ids in each line (a cheap scan
of the raw bytes first; the line is parsed again only when that scan finds a
suspect).  Memory grows with the number of distinct ids, not with the size
of the log.  Lines are read as bytes; orjson, when installed, parses them
(a line it refuses is parsed again by :mod:`json`, so the verdicts are the
same with or without it).
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

__all__ = [
    "CheckReport",
    "Problem",
    "ProblemKind",
    "check_files",
    "check_lines",
    "check_records",
    "check_stream",
]

ProblemKind = Literal["invalid-json", "truncated", "missing", "crossed"]

#: Values a line may carry when no id was bound (a filter default).
MISSING_VALUES: Final = frozenset({"", "-", "None", "null"})

#: How many problems a report keeps in full (all of them are counted).
KEPT_PROBLEMS: Final = 10_000

_TOKEN: Final = re.compile(r"[A-Za-z0-9._:-]+")
_TOKEN_BYTES: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
)
#: bytes.translate() table: the bytes of a token kept, every other byte a space,
#: so that split() yields what _TOKEN finds, at C speed.
_TOKENS_ONLY: Final = bytes(byte if byte in _TOKEN_BYTES else 0x20 for byte in range(256))
_MAX_DETAIL: Final = 200
_SKIP: Final = -1  # a line without an own id to check against
_PROGRESS_EVERY: Final = 100_000


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
    """What a check found: every line counted, the first problems kept."""

    lines: int = 0
    ids: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when no line is missing its id, crosses requests, or is not JSON."""
        return not sum(self.counts.values())

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(problem)

    def count(self, kind: ProblemKind) -> int:
        """How many problems of *kind* were found."""
        return self.counts[kind]

    def summary(self) -> str:
        """A short human-readable summary."""
        return (
            f"lines: {self.lines}  ids: {self.ids}  "
            f"missing id: {self.count('missing')}  crossed: {self.count('crossed')}  "
            f"invalid JSON: {self.count('invalid-json')}  truncated: {self.count('truncated')}"
        )

    def as_dict(self, limit: int = 20) -> dict[str, Any]:
        """The report as plain data (``--format json``), with the first *limit* problems."""
        return {
            "ok": self.ok,
            "lines": self.lines,
            "ids": self.ids,
            "problems": {kind: self.counts[kind] for kind in sorted(self.counts)},
            "first_problems": [dataclasses.asdict(p) for p in self.problems[:limit]],
        }


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


def _crossing(record: Mapping[str, Any], key: str, own: str, ids: Collection[str]) -> str | None:
    """Which other field of *record* mentions another line's id, if one does."""
    for name, value in record.items():
        if name == key:
            continue
        for text in _strings(value):
            foreign = {t for t in _TOKEN.findall(text) if t in ids and t != own}
            if foreign:
                return f"{key}={own} but {name!s} mentions {', '.join(sorted(foreign))}"
    return None


#: One input line: its number, its raw bytes (``None`` for a parsed record),
#: and the parsed record (``None`` until parsed).
_Line = tuple[int, "bytes | None", "Mapping[str, Any] | None"]


def _text(raw: bytes) -> str:
    """*raw* as text: UTF-8 (lone surrogates kept), bytes that are not replaced."""
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def _fast_loads() -> Callable[[bytes], Any] | None:
    try:
        import orjson  # noqa: PLC0415 -- optional, a faster parse when installed
    except ImportError:
        return None
    return orjson.loads


class _Check:
    """The two passes over one stream of lines."""

    def __init__(self, key: str, ignore_loggers: Collection[str], logger_key: str) -> None:
        self.key = key
        self.ignore_loggers = ignore_loggers
        self.logger_key = logger_key
        self.report = CheckReport()
        self.index: dict[str, int] = {}
        self.own = array.array("l")
        self.progress: IO[str] | None = None
        self.fast_loads = _fast_loads()

    def _loads(self, raw: bytes) -> Any:
        """Parse *raw*; orjson first when installed, :mod:`json` for what it refuses."""
        if self.fast_loads is not None:
            try:
                return self.fast_loads(raw)
            except ValueError:  # orjson.JSONDecodeError: NaN, huge numbers, deep nesting...
                pass
        return json.loads(_text(raw))

    def _parse(self, lineno: int, raw: bytes) -> Mapping[str, Any] | None:
        try:
            record = self._loads(raw)
        except (ValueError, RecursionError) as exc:
            text = _text(raw)
            stripped = text.strip()
            if stripped.startswith("{") and not stripped.endswith("}"):
                self.report.add(Problem(lineno, "truncated", f"cut short: {_short(stripped)}"))
            else:
                self.report.add(Problem(lineno, "invalid-json", f"{exc}: {_short(text)}"))
            return None
        if not isinstance(record, dict):
            detail = f"not an object: {_short(_text(raw))}"
            self.report.add(Problem(lineno, "invalid-json", detail))
            return None
        return record

    def first(self, lines: Iterable[_Line]) -> None:
        """Count the lines, report invalid and missing ones, learn each own id."""
        report, own, index = self.report, self.own, self.index
        for lineno, raw, parsed in lines:
            record = parsed
            if record is None:
                if raw is None or not raw.strip():
                    own.append(_SKIP)
                    continue
                if self.progress is not None and lineno % _PROGRESS_EVERY == 0:
                    self.progress.write(f"\rchecked {lineno:,} lines (first pass)")
                    self.progress.flush()
                report.lines += 1
                record = self._parse(lineno, raw)
                if record is None:
                    own.append(_SKIP)
                    continue
            else:
                report.lines += 1
            if record.get(self.logger_key) in self.ignore_loggers:
                report.lines -= 1
                own.append(_SKIP)
                continue
            value = record.get(self.key)
            if value is None or str(value) in MISSING_VALUES:
                message = record.get("message", record.get("event", ""))
                detail = f"no {self.key}: {_short(str(message))}"
                report.add(Problem(lineno, "missing", detail))
                own.append(_SKIP)
                continue
            own.append(index.setdefault(str(value), len(index)))
        report.ids = len(index)

    def second(self, lines: Iterable[_Line]) -> None:
        """Report the lines that mention another line's id."""
        ids = set(self.index)  # a set: intersection() with a list needs no set of it
        names = list(self.index)
        # The same ids as bytes, for the scan of the raw lines.  An id with
        # bytes outside the token alphabet can never be a whole token: left out.
        encoded = [name.encode("utf-8", "surrogatepass") for name in names]
        id_bytes = {name for name in encoded if not name.translate(_TOKENS_ONLY).count(b" ")}
        table = _TOKENS_ONLY
        own = self.own
        for lineno, raw, parsed in lines:
            slot = own[lineno - 1]
            if slot == _SKIP:
                continue
            mine = names[slot]
            record = parsed
            if record is None:
                assert raw is not None  # a line with an own id had text
                # The raw bytes first: an escape (a backslash) can hide an id from
                # them, so such a line, and any suspect, is looked at in full.
                if b"\\" not in raw:
                    found = id_bytes.intersection(raw.translate(table).split())
                    if not found or (len(found) == 1 and encoded[slot] in found):
                        continue
                record = self._loads(raw)
            detail = _crossing(record, self.key, mine, ids)
            if detail is not None:
                self.report.add(Problem(lineno, "crossed", detail))

    def done(self) -> CheckReport:
        if self.progress is not None:
            self.progress.write("\r" + " " * 40 + "\r")
            self.progress.flush()
        self.report.problems.sort(key=lambda problem: problem.lineno)
        return self.report


def _numbered(lines: Iterable[str | bytes]) -> Iterator[_Line]:
    return (
        (n, raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"), None)
        for n, raw in enumerate(lines, start=1)
    )


def check_stream(
    open_lines: Callable[[], Iterable[str | bytes]],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    logger_key: str = "logger",
    progress: IO[str] | None = None,
) -> CheckReport:
    """Check JSON log lines (``str``, or UTF-8 ``bytes``) in two streaming
    passes; *open_lines* is called once per pass and must give the same lines
    each time.  *progress*, when given,
    gets a line count every 100,000 lines.

    A line is *missing* when *key* is absent or empty (or ``"-"``, ``None``); it
    is *crossed* when any of its other string values mentions, as a whole token
    of ``[A-Za-z0-9._:-]+``, an id that other lines carry under *key* but that is
    not the line's own; a line that is not a JSON object is *invalid-json*, or
    *truncated* when it is an object cut short.  Lines whose *logger_key* is in
    *ignore_loggers* are skipped; blank lines are ignored.  Structlog lines that
    name their message ``event`` are read as such.
    """
    check = _Check(key, ignore_loggers, logger_key)
    check.progress = progress
    check.first(_numbered(open_lines()))
    if check.index:
        check.second(_numbered(open_lines()))
    return check.done()


def check_lines(
    lines: Iterable[str],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    logger_key: str = "logger",
) -> CheckReport:
    """:func:`check_stream` over *lines* held in memory."""
    held = lines if isinstance(lines, list | tuple) else list(lines)
    return check_stream(lambda: held, key=key, ignore_loggers=ignore_loggers, logger_key=logger_key)


def check_records(
    records: Iterable[Mapping[str, Any]],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    logger_key: str = "logger",
) -> CheckReport:
    """The same check over lines already parsed into mappings (numbered from 1)."""
    held = list(records)
    check = _Check(key, ignore_loggers, logger_key)
    check.first((n, None, record) for n, record in enumerate(held, start=1))
    check.second((n, None, record) for n, record in enumerate(held, start=1))
    return check.done()


def _file_lines(paths: list[Path], starts: list[int]) -> Iterator[bytes]:
    count = 0
    starts.clear()
    for path in paths:
        starts.append(count + 1)
        with path.open("rb") as fh:
            for raw in fh:
                count += 1
                yield raw


def check_files(
    paths: Iterable[str | Path],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    logger_key: str = "logger",
    progress: IO[str] | None = None,
) -> CheckReport:
    """:func:`check_stream` over the lines of every file in *paths*, as one stream
    (an id crossing from one file to another counts); ``-`` is standard input,
    spooled to a temporary file for the second pass.  With several files, each
    problem names its file and its line number in that file.

    :raises OSError: a file cannot be read.
    """
    import shutil  # noqa: PLC0415 -- the command line only
    import tempfile  # noqa: PLC0415 -- same

    files = [Path(path) for path in paths]
    starts: list[int] = []
    with tempfile.TemporaryDirectory() as spool:
        if any(str(path) == "-" for path in files):
            stdin_copy = Path(spool) / "stdin.jsonl"
            with stdin_copy.open("wb") as out:
                shutil.copyfileobj(sys.stdin.buffer, out)
            read = [stdin_copy if str(path) == "-" else path for path in files]
        else:
            read = files
        report = check_stream(
            lambda: _file_lines(read, starts),
            key=key,
            ignore_loggers=ignore_loggers,
            logger_key=logger_key,
            progress=progress,
        )
    if len(files) > 1:
        located = []
        for problem in report.problems:
            index = bisect.bisect_right(starts, problem.lineno) - 1
            line = problem.lineno - starts[index] + 1
            located.append(dataclasses.replace(problem, lineno=line, source=str(files[index])))
        report.problems = located
    return report
