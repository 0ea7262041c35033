"""Check log lines: every line carries a correlation id, and no line crosses requests.

Used by ``python -m ctxlog check FILE...``, by the demo to verify its own
output, and by `ctxlog.testing` on captured lines: one implementation.

It streams: a first pass learns the distinct ids, a second pass looks for
other requests' ids in each line (a cheap scan of the raw bytes first; the
line is parsed again only when that scan finds a suspect).  Memory grows with
the number of distinct ids, not with the number of lines, and one line costs
at most about three times its size: a line of up to 1 MiB is parsed whole
(orjson when installed, else `json`; a line orjson refuses is parsed again by
`json`, so the verdicts are the same with or without it), a longer one is
walked through without building it, one string at a time, and a line longer
than *max_line_bytes* is reported as too long without being held.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
import reprlib
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, NamedTuple

from ctxlog._projection import LINE_FIELDS
from ctxlog.stdlib import RESERVED_ATTRS

__all__ = [
    "MAX_LINE_BYTES",
    "OUTSIDE_LOGGERS",
    "SYSTEM_FIELDS",
    "CheckReport",
    "Problem",
    "ProblemKind",
    "check_files",
    "check_lines",
    "check_records",
    "check_stream",
]

ProblemKind = Literal["invalid-json", "truncated", "too-long", "missing", "crossed"]

#: Values a line may carry when no id was bound (a filter default).
MISSING_VALUES: Final = frozenset({"", "-", "None", "null"})

#: The servers' own loggers: their lines without an id (start-up, shutdown,
#: "Waiting for connections") belong to no request and are counted as
#: *outside*; their lines that carry a traceback must carry an id.
OUTSIDE_LOGGERS: Final = ("uvicorn.error", "gunicorn.error", "hypercorn.error")

#: Fields whose values the logging system writes, never the application (the
#: level, the logger's name, the time, the process, the thread, the source
#: file...): a line is never *crossed* by what they hold, so a client that
#: sends ``X-Request-ID: INFO`` does not make every ``"level": "INFO"`` a
#: crossing.  The message, the traceback and the values the application adds
#: are looked at.
SYSTEM_FIELDS: Final = (
    RESERVED_ATTRS | frozenset(LINE_FIELDS) | {"timestamp", "logger_name", "color_message"}
) - {"message", "msg", "args", "exception", "exc_info", "exc_text", "stack", "stack_info"}

#: How many problems a report keeps in full (all of them are counted).
KEPT_PROBLEMS: Final = 10_000

#: The longest line checked by default (64 MiB); a longer one is reported as
#: ``too-long``, read through without being held.
MAX_LINE_BYTES: Final = 64 << 20

_ALPHABET: Final = "A-Za-z0-9._:-"
_TOKEN: Final = re.compile(f"[{_ALPHABET}]+")
_TOKEN_BYTES_RE: Final = re.compile(f"[{_ALPHABET}]+".encode())
_TOKEN_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
)
_TOKEN_BYTES: Final = frozenset("".join(sorted(_TOKEN_CHARS)).encode())
#: bytes.translate() table: the bytes of a token kept, every other byte a space,
#: so that split() yields what _TOKEN finds, at C speed.
_TOKENS_ONLY: Final = bytes(byte if byte in _TOKEN_BYTES else 0x20 for byte in range(256))
_MAX_DETAIL: Final = 200
_MAX_NAMED: Final = 10  # ids a "crossed" detail lists
_PROGRESS_EVERY: Final = 100_000
#: Lines up to this size are parsed whole: what orjson or json builds from one
#: stays within a few tens of MB whatever the line holds.
_SMALL_LINE: Final = 1 << 20
#: A longer text is scanned for tokens in windows of about this many characters.
_WINDOW: Final = 1 << 18
_READ_CHUNK: Final = 1 << 20
#: A string value longer than this is only previewed, in a "missing" detail.
_PREVIEW_BYTES: Final = 4 * _MAX_DETAIL

_repr: Final = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 80, 80


@dataclass(frozen=True)
class Problem:
    """One line that failed the check: its number (in *source*, when given).

    *detail* holds only escaped text: whatever the line held, printing it
    cannot add report lines or reach the terminal as control sequences.
    """

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
    """What a check found: every line counted, the first problems kept.

    *lines* counts every line checked (blank lines and ignored loggers'
    lines are not), *outside* how many of them are a server's own lines
    outside any request.
    """

    lines: int = 0
    ids: int = 0
    outside: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def empty(self) -> bool:
        """True when there was no line to check (an empty log, or the wrong stream)."""
        return self.lines == 0

    @property
    def ok(self) -> bool:
        """True when there were lines and none is missing its id, crosses
        requests, or could not be read."""
        return not self.empty and not sum(self.counts.values())

    def add(self, problem: Problem) -> None:
        """Count *problem*; keep it while fewer than 10,000 are kept."""
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
            f"invalid JSON: {self.count('invalid-json')}  truncated: {self.count('truncated')}  "
            f"too long: {self.count('too-long')}  outside requests: {self.outside}"
        )

    def as_dict(self, limit: int = 20) -> dict[str, Any]:
        """The report as plain data (``--format json``), with the first *limit* problems."""
        return {
            "ok": self.ok,
            "empty": self.empty,
            "lines": self.lines,
            "ids": self.ids,
            "outside": self.outside,
            "problems": {kind: self.counts[kind] for kind in sorted(self.counts)},
            "first_problems": [dataclasses.asdict(p) for p in self.problems[:limit]],
        }


# --------------------------------------------------------------------------
# showing values from the log: always escaped, always short
# --------------------------------------------------------------------------


def _short(text: str) -> str:
    """*text* with every control, non-ASCII and backslash character escaped, cut short."""
    text = text[: _MAX_DETAIL * 2].encode("unicode_escape").decode("ascii")
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _int_text(number: int) -> str:
    try:
        return str(number)
    except ValueError:  # longer than sys.get_int_max_str_digits(): hex has no limit
        return hex(number)


class _Raw(str):
    """The start of a value as it stands in the line (a long or nested one)."""


def _raw_text(raw: bytes | memoryview) -> str:
    """The first bytes of *raw*, as text (unescaped: `_short` escapes it)."""
    return bytes(raw[:_PREVIEW_BYTES]).decode("utf-8", "replace")


def _preview(value: Any) -> str:
    """A short, escaped picture of a value read from a line (never recursive:
    a line nested a thousand deep cannot exhaust the stack)."""
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return _short(_int_text(value))
    try:
        return _short(_repr.repr(value))
    except (ValueError, RecursionError):  # an int too long to print, deep in it
        return f"<{type(value).__name__}>"


_NOT_AN_ID: Final = object()


def _id_text(value: Any) -> str | object | None:
    """The id a line carries: a string or a whole number, as text; ``None`` when
    it carries none (or a placeholder); ``_NOT_AN_ID`` for any other value."""
    if value is None:
        return None
    if isinstance(value, str):
        return None if value in MISSING_VALUES else str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_text(value)
    return _NOT_AN_ID


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
        elif isinstance(item, list | tuple):  # a tuple: a captured record's value
            stack.extend(reversed(item))


# --------------------------------------------------------------------------
# finding ids in text
# --------------------------------------------------------------------------


def _window_tokens(text: str | bytes, longest: int) -> Iterator[list[bytes]]:
    """The tokens of *text* (as UTF-8 bytes), one window of about `_WINDOW`
    characters at a time, never cutting a token; a token longer than
    *longest* (no id is that long) that a window would end in is left out,
    so a line of one endless token is never copied whole."""
    size = len(text)
    start = 0
    while start < size:
        end = min(start + _WINDOW, size)
        resume = end
        if end < size:
            run = (
                _TOKEN.match(text, end)
                if isinstance(text, str)
                else _TOKEN_BYTES_RE.match(text, end)
            )
            if run is not None and run.end() - end > longest:
                resume = run.end()
            elif run is not None:
                end = resume = run.end()
        piece = text[start:end]
        chunk = piece.encode("utf-8", "surrogatepass") if isinstance(piece, str) else piece
        chunk = chunk.translate(_TOKENS_ONLY)
        if resume > end:  # the window ends in that long token: leave it out
            chunk = chunk[: chunk.rfind(b" ") + 1]
        yield chunk.split()
        start = resume


class _Known:
    """The ids the first pass learnt, and where a text names one of them.

    A text *names* an id when the id appears in it whole, not glued to a
    letter, digit or one of ``._:-`` on either side, and not as part of a
    longer known id that appears there.  Ids made of those characters only
    are found as tokens (a set lookup); any other id is found from its
    longest token (its *anchor*), or, with no token at all, by searching.
    """

    def __init__(self, ids: Iterable[str]) -> None:
        self.tokens: set[str] = set()
        self.anchors: dict[str, list[str]] = {}
        self.bare: list[str] = []
        pieces: dict[str, list[tuple[str, int]]] = {}  # token -> (other id, offset in it)
        anchor_of: dict[str, str] = {}
        longest = 1
        for ident in ids:
            longest = max(longest, len(ident))
            if _TOKEN.fullmatch(ident):
                self.tokens.add(ident)
                continue
            runs = list(_TOKEN.finditer(ident))
            if not runs:
                self.bare.append(ident)
                continue
            anchor = max((run.group() for run in runs), key=len)
            self.anchors.setdefault(anchor, []).append(ident)
            anchor_of[ident] = anchor
            for run in runs:
                pieces.setdefault(run.group(), []).append((ident, run.start()))
        self.interesting = self.tokens | self.anchors.keys()
        self.longest = longest
        self.interesting_bytes = {name.encode() for name in self.interesting}
        self.piece_bytes = {name.encode() for name in pieces}
        self.bare_bytes = [name.encode("utf-8", "surrogatepass") for name in self.bare]
        self.enclosers = self._enclosers(pieces, anchor_of)

    def _enclosers(
        self, pieces: Mapping[str, list[tuple[str, int]]], anchor_of: Mapping[str, str]
    ) -> dict[str, list[tuple[str, int]]]:
        """For each id that can appear inside a longer known id: (that id, offset).

        Where an id appears whole inside a longer one, its tokens are tokens of
        the longer one: the candidates are the ids that share its anchor.
        """
        enclosers: dict[str, list[tuple[str, int]]] = {}
        for token in self.tokens & pieces.keys():
            enclosers[token] = list(pieces[token])
        others = [*anchor_of, *self.bare]
        for inner in others:
            anchor = anchor_of.get(inner)
            candidates = others if anchor is None else {outer for outer, _ in pieces[anchor]}
            for outer in candidates:
                if outer == inner or len(outer) <= len(inner):
                    continue
                at = outer.find(inner)
                while at >= 0:
                    if _clear(outer, at, at + len(inner)):
                        enclosers.setdefault(inner, []).append((outer, at))
                    at = outer.find(inner, at + 1)
        return enclosers

    def _free(self, text: str, ident: str) -> bool:
        """Whether *text* names *ident* at least once (whole, not inside a longer id)."""
        outer = self.enclosers.get(ident, ())
        size = len(ident)
        at = text.find(ident)
        while at >= 0:
            if _clear(text, at, at + size) and not any(
                at >= offset
                and text.startswith(bigger, at - offset)
                and _clear(text, at - offset, at - offset + len(bigger))
                for bigger, offset in outer
            ):
                return True
            at = text.find(ident, at + 1)
        return False

    def named(self, text: str) -> set[str]:
        """The known ids *text* names."""
        if len(text) <= _WINDOW:
            found = self.interesting.intersection(_TOKEN.findall(text))
        else:
            found = set()
            for tokens in _window_tokens(text, self.longest):
                found.update(t.decode() for t in self.interesting_bytes.intersection(tokens))
        named = set()
        for token in found:
            if token in self.tokens and (token not in self.enclosers or self._free(text, token)):
                named.add(token)
            named.update(ident for ident in self.anchors.get(token, ()) if self._free(text, ident))
        named.update(ident for ident in self.bare if ident in text and self._free(text, ident))
        return named

    def suspect(self, raw: bytes) -> bool:
        """False only when *raw* certainly names no id but its own.

        A line names its own id (in its id field).  When the only known name
        in its bytes is one id made of token characters alone, that is its own
        id, and nothing else is named; an escape (a backslash) could hide a
        name from the bytes, and a line with a piece of a longer id or an id
        without any token character is looked at in full.
        """
        if b"\\" in raw or (self.bare_bytes and any(name in raw for name in self.bare_bytes)):
            return True
        if len(raw) <= _SMALL_LINE:
            found = self.interesting_bytes.intersection(raw.translate(_TOKENS_ONLY).split())
        else:
            found = set()
            for tokens in _window_tokens(raw, self.longest):
                found.update(self.interesting_bytes.intersection(tokens))
                if len(found) > 1:
                    return True
        return len(found) > 1 or not found.isdisjoint(self.piece_bytes)


def _clear(text: str, start: int, end: int) -> bool:
    """Whether *text* [start:end] is not glued to a token character on either side."""
    return (start == 0 or text[start - 1] not in _TOKEN_CHARS) and (
        end == len(text) or text[end] not in _TOKEN_CHARS
    )


# --------------------------------------------------------------------------
# reading a line without building it
# --------------------------------------------------------------------------


class _NotJSONError(ValueError):
    """A line that is not JSON: what and where."""


_WS: Final = re.compile(rb"[ \t\n\r]*")
_WS_BYTES: Final = frozenset(b" \t\n\r")
_SCALAR: Final = re.compile(
    rb"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?|true|false|null|NaN|-?Infinity"
)
_CONTROL: Final = re.compile(rb"[\x00-\x1f]")
_PLAIN_STRING: Final = re.compile(rb'[^"\\\x00-\x1f]*"')
#: A backslash that starts an escape (after an even run of them) and what
#: follows it is no JSON escape.
_BAD_ESCAPE: Final = re.compile(rb'(?<!\\)(?:\\\\)*\\(?!["\\/bfnrt]|u[0-9a-fA-F]{4})')
_OPEN_OBJECT, _OPEN_ARRAY, _COMMA, _COLON, _QUOTE = b'{[,:"'
_CLOSE: Final = {_OPEN_OBJECT: ord("}"), _OPEN_ARRAY: ord("]")}

_STRING, _NUMBER, _LITERAL, _CONTAINER = range(4)
_LITERALS: Final[dict[str, bool | None]] = {"true": True, "false": False, "null": None}


def _skip(raw: bytes, pos: int) -> int:
    """The index of the first byte at or after *pos* that is not JSON whitespace."""
    if pos >= len(raw) or raw[pos] not in _WS_BYTES:
        return pos
    match = _WS.match(raw, pos)
    return pos if match is None else match.end()


class _Span(NamedTuple):
    """Where a top-level value stands in the line."""

    kind: int
    start: int
    end: int
    escaped: bool


def _backslashes_before(raw: bytes, start: int, end: int) -> int:
    """How many backslashes stand right before *end* (not before *start*)."""
    width = 64
    while True:
        tail = raw[max(start, end - width) : end]
        count = len(tail) - len(tail.rstrip(b"\\"))
        if count < len(tail) or end - width <= start:
            return count
        width *= 4


def _string_end(raw: bytes, pos: int) -> tuple[int, bool]:
    """The index of the quote that closes the string whose text starts at *pos*,
    and whether the string holds escapes (each step a search at C speed: a
    string of a million escapes costs no more than a plain one)."""
    plain = _PLAIN_STRING.match(raw, pos)
    if plain is not None:  # the common case: no escape, one search
        return plain.end() - 1, False
    start = pos
    while True:
        quote = raw.find(b'"', pos)
        if quote < 0:
            msg = f"a string not closed, from byte {start - 1}"
            raise _NotJSONError(msg)
        if _backslashes_before(raw, start, quote) % 2 == 0:
            break
        pos = quote + 1
    control = _CONTROL.search(raw, start, quote)
    if control is not None:
        msg = f"a control character in a string at byte {control.start()}"
        raise _NotJSONError(msg)
    escaped = raw.find(b"\\", start, quote) >= 0
    if escaped:
        bad = _BAD_ESCAPE.search(raw, start, quote)
        if bad is not None:
            msg = f"an invalid escape at byte {bad.end() - 1}"
            raise _NotJSONError(msg)
    return quote, escaped


def _decode(raw: bytes, start: int, end: int, escaped: bool) -> str:
    """The string whose text is *raw* [start:end] (the bytes between its quotes)."""
    if escaped:
        start, end = start - 1, end + 1  # with its quotes: json reads the escapes
    view = memoryview(raw)[start:end]
    try:
        text = str(view, "utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = str(view, "utf-8", "replace")
    if escaped:
        decoded: str = json.loads(text)
        return decoded
    return text


def _key(raw: bytes, pos: int, decode: bool) -> tuple[int, str | None]:
    """Read an object's key and its colon at *pos*: (where its value starts, the key)."""
    if pos >= len(raw) or raw[pos] != _QUOTE:
        msg = f"a key (a string) expected at byte {pos}"
        raise _NotJSONError(msg)
    end, escaped = _string_end(raw, pos + 1)
    key = _decode(raw, pos + 1, end, escaped) if decode else None
    pos = _skip(raw, end + 1)
    if pos >= len(raw) or raw[pos] != _COLON:
        msg = f"':' expected at byte {pos}"
        raise _NotJSONError(msg)
    return _skip(raw, pos + 1), key


def _walk(  # noqa: PLR0912, PLR0915 -- one loop over the grammar reads best whole
    raw: bytes,
    wanted: Collection[str],
    on_string: Callable[[str, int, int, bool], None] | None = None,
) -> dict[str, _Span] | None:
    """Check that *raw* is one JSON value, to any depth, building nothing.

    Returns where the top-level values of the *wanted* keys stand (the last one
    of a key given twice, as a parser keeps), or ``None`` when the value is not
    an object; *on_string* gets each string value at any depth (with the
    top-level key it is under).  Raises `_NotJSONError`.  The grammar is
    `json`'s (``NaN`` and ``Infinity`` too); numbers of any length are read.
    """
    size = len(raw)
    top: dict[str, _Span] = {}
    stack = bytearray()
    field: str = ""
    pos = _skip(raw, 0)
    is_object = pos < size and raw[pos] == _OPEN_OBJECT
    while True:
        if pos >= size:
            msg = f"a value expected at byte {pos}"
            raise _NotJSONError(msg)
        char = raw[pos]
        at_top = len(stack) == 1 and field in wanted
        if char in _CLOSE:
            if at_top:
                top[field] = _Span(_CONTAINER, pos, pos, escaped=False)
            stack.append(char)
            pos = _skip(raw, pos + 1)
            if pos < size and raw[pos] == _CLOSE[char]:
                stack.pop()
                pos += 1
            elif char == _OPEN_OBJECT:
                pos, key = _key(raw, pos, decode=len(stack) == 1)
                if key is not None:
                    field = key
                continue
            else:
                continue
        elif char == _QUOTE:
            end, escaped = _string_end(raw, pos + 1)
            if at_top:
                top[field] = _Span(_STRING, pos + 1, end, escaped)
            if on_string is not None and stack:
                on_string(field, pos + 1, end, escaped)
            pos = end + 1
        else:
            scalar = _SCALAR.match(raw, pos)
            if scalar is None:
                msg = f"a value expected at byte {pos}"
                raise _NotJSONError(msg)
            if at_top:
                kind = _NUMBER if scalar.group(1) else _LITERAL
                top[field] = _Span(kind, pos, scalar.end(), escaped=False)
            pos = scalar.end()
        # After a value: commas and closing brackets, until the next value.
        while True:
            pos = _skip(raw, pos)
            if not stack:
                if pos != size:
                    msg = f"more after the end of the value, at byte {pos}"
                    raise _NotJSONError(msg)
                return top if is_object else None
            if pos >= size:
                msg = "cut short"
                raise _NotJSONError(msg)
            char = raw[pos]
            if char == _COMMA:
                pos = _skip(raw, pos + 1)
                if stack[-1] == _OPEN_OBJECT:
                    pos, key = _key(raw, pos, decode=len(stack) == 1)
                    if key is not None:
                        field = key
                break
            if char != _CLOSE[stack[-1]]:
                msg = f"',' or '{chr(_CLOSE[stack[-1]])}' expected at byte {pos}"
                raise _NotJSONError(msg)
            stack.pop()
            pos += 1


def _top_values(raw: bytes, top: Mapping[str, _Span], full: Collection[str]) -> dict[str, Any]:
    """The top-level values of a walked line: the strings under *full* keys
    whole, other strings and nested values as the start of their text."""
    values: dict[str, Any] = {}
    for name, span in top.items():
        if span.kind == _STRING:
            if name in full or span.end - span.start <= _PREVIEW_BYTES:
                values[name] = _decode(raw, span.start, span.end, span.escaped)
            else:
                values[name] = _Raw(_raw_text(memoryview(raw)[span.start : span.end]))
        elif span.kind == _NUMBER:
            text = raw[span.start : span.end].decode("ascii")
            whole = text.lstrip("-").isdigit()
            values[name] = text if whole else float(text)
        elif span.kind == _LITERAL:
            text = raw[span.start : span.end].decode("ascii")
            values[name] = _LITERALS[text] if text in _LITERALS else float(text)  # NaN...
        else:
            values[name] = _Raw(_raw_text(memoryview(raw)[span.start :]))
    return values


# --------------------------------------------------------------------------
# the two passes
# --------------------------------------------------------------------------


class _TooLong(NamedTuple):
    """A line longer than the limit, read through but not held: its size."""

    size: int


#: One input line: its number, and its raw bytes, a parsed record, or `_TooLong`.
_Line = tuple[int, "bytes | Mapping[str, Any] | _TooLong"]


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


def _last_byte(raw: bytes) -> bytes:
    """The last byte of *raw* that is not whitespace (without copying a long line)."""
    tail = raw[-64:].rstrip()
    return tail[-1:] if tail or len(raw) <= 64 else raw.rstrip()[-1:]


class _Check:
    """The two passes over one stream of lines."""

    def __init__(
        self,
        key: str,
        ignore_loggers: Collection[str],
        outside_loggers: Collection[str],
        logger_key: str,
        max_line_bytes: int,
    ) -> None:
        self.key = key
        self.ignore_loggers = frozenset(ignore_loggers)
        self.outside_loggers = frozenset(outside_loggers)
        self.logger_key = logger_key
        self.max_line_bytes = max_line_bytes
        self.wanted = frozenset({key, logger_key, "message", "event", "exception", "stack"})
        self.skip = SYSTEM_FIELDS | {key, logger_key}
        self.report = CheckReport()
        self.ids: set[str] = set()
        self.progress: IO[str] | None = None
        self.fast_loads = _fast_loads()

    def _loads(self, raw: bytes) -> Any:
        """Parse *raw*; orjson first when installed, `json` for what it refuses.

        Raises ValueError or RecursionError (nesting deeper than they go).
        """
        if self.fast_loads is not None:
            try:
                return self.fast_loads(raw)
            except ValueError:  # orjson.JSONDecodeError: NaN, huge numbers, deep nesting...
                pass
        return json.loads(_text(raw))

    def _view(self, raw: bytes, parsed: Any) -> Mapping[str, Any] | str:
        """A line that did not parse whole as a JSON object (*parsed*: what the
        parsers made of it, or None): its top-level values for a line too long
        (or too deep, or with numbers too long) to parse whole; or why it is
        not a JSON object."""
        if parsed is not None:
            return "not an object"
        try:
            top = _walk(raw, self.wanted)
        except _NotJSONError as exc:
            return str(exc)
        if top is None:
            return "not an object"
        return _top_values(raw, top, (self.key, self.logger_key))

    def _logger(self, record: Mapping[str, Any]) -> str | None:
        logger = record.get(self.logger_key)
        return logger if isinstance(logger, str) else None

    def first(self, lines: Iterable[_Line]) -> None:
        """Count the lines, report the unreadable and missing ones, learn the ids."""
        report, ids, key, ignore = self.report, self.ids, self.key, self.ignore_loggers
        loads = self._loads
        for lineno, item in lines:
            if type(item) is bytes:
                if not item or item.isspace():
                    continue
                if self.progress is not None and lineno % _PROGRESS_EVERY == 0:
                    self.progress.write(f"\rchecked {lineno:,} lines (first pass)")
                    self.progress.flush()
                report.lines += 1
                record: Any = None
                if len(item) <= _SMALL_LINE:
                    try:
                        record = loads(item)
                    except (ValueError, RecursionError):
                        pass  # deep nesting, an int of 5,000 digits, or not JSON: walked
                    else:
                        value = record.get(key) if type(record) is dict else None
                        # The common line, at the cost of a dict lookup and a set insert.
                        if type(value) is str and value not in MISSING_VALUES and not ignore:
                            ids.add(value)
                            continue
                if type(record) is not dict:
                    record = self._view(item, record)
                    if isinstance(record, str):
                        self._unreadable(lineno, item, record)
                        continue
            elif isinstance(item, _TooLong):
                report.lines += 1
                detail = (
                    f"{item.size:,} bytes, longer than the {self.max_line_bytes:,} bytes "
                    "a line may have (max_line_bytes): not checked"
                )
                report.add(Problem(lineno, "too-long", detail))
                continue
            else:
                report.lines += 1
                record = item
            self._learn(lineno, record)
        report.ids = len(ids)

    def _unreadable(self, lineno: int, raw: bytes, why: str) -> None:
        first = _skip(raw, 0)
        if raw[first : first + 1] == b"{" and _last_byte(raw) != b"}":
            detail = f"cut short: {_short(_raw_text(memoryview(raw)[first:]))}"
            self.report.add(Problem(lineno, "truncated", detail))
        else:
            detail = f"{_short(why)}: {_short(_raw_text(raw))}"
            self.report.add(Problem(lineno, "invalid-json", detail))

    def _learn(self, lineno: int, record: Mapping[str, Any]) -> None:
        """One readable line: ignored, outside any request, missing its id, or its id learnt."""
        report = self.report
        logger = self._logger(record)
        if logger in self.ignore_loggers:
            report.lines -= 1
            return
        value = record.get(self.key)
        ident = _id_text(value)
        if isinstance(ident, str):
            self.ids.add(ident)
            return
        if ident is _NOT_AN_ID:
            detail = f"{_short(self.key)} holds no id but {_preview(value)}"
        elif logger in self.outside_loggers and not (
            record.get("exception") or record.get("stack")
        ):
            report.outside += 1
            return
        else:
            message = record.get("message", record.get("event", ""))
            detail = f"no {_short(self.key)}: {_preview(message)}"
        report.add(Problem(lineno, "missing", detail))

    def second(self, lines: Iterable[_Line]) -> None:
        """Report the lines that name another line's id."""
        known = _Known(self.ids)
        suspect = known.suspect
        for lineno, item in lines:
            if isinstance(item, bytes):
                if not item or item.isspace() or not suspect(item):
                    continue
                detail = self._crossing_in_raw(item, known)
            elif isinstance(item, _TooLong):
                continue
            else:
                detail = self._crossing(item, known)
            if detail is not None:
                self.report.add(Problem(lineno, "crossed", detail))

    def _own(self, record: Mapping[str, Any]) -> str | None:
        """The id of a line that is checked for crossing, else None."""
        if self._logger(record) in self.ignore_loggers:
            return None
        ident = _id_text(record.get(self.key))
        return ident if isinstance(ident, str) else None

    def _detail(self, own: str, name: str, named: set[str]) -> str:
        shown = sorted(named)
        listed = ", ".join(_short(ident) for ident in shown[:_MAX_NAMED])
        more = f" and {len(shown) - _MAX_NAMED} more" if len(shown) > _MAX_NAMED else ""
        return f"{_short(self.key)}={_short(own)} but {_short(name)} mentions {listed}{more}"

    def _crossing(self, record: Mapping[str, Any], known: _Known) -> str | None:
        """Which field of *record* names another line's id, if one does."""
        own = self._own(record)
        if own is None:
            return None
        for name, value in record.items():
            if name in self.skip:
                continue
            for text in _strings(value):
                foreign = known.named(text)
                foreign.discard(own)
                if foreign:
                    return self._detail(own, str(name), foreign)
        return None

    def _crossing_in_raw(self, raw: bytes, known: _Known) -> str | None:
        if len(raw) <= _SMALL_LINE:
            try:
                record = self._loads(raw)
            except (ValueError, RecursionError):
                pass  # walked below
            else:
                return self._crossing(record, known) if isinstance(record, dict) else None
        named: dict[str, set[str]] = {}

        def on_string(name: str, start: int, end: int, escaped: bool) -> None:
            if name in self.skip:
                return
            seen = named.setdefault(name, set())
            if len(seen) <= _MAX_NAMED:  # one may be the line's own id
                seen.update(known.named(_decode(raw, start, end, escaped)))

        try:
            top = _walk(raw, (self.key, self.logger_key), on_string)
        except _NotJSONError:
            return None  # reported by the first pass
        if top is None:
            return None
        own = self._own(_top_values(raw, top, (self.key, self.logger_key)))
        if own is None:
            return None
        for name, ids in named.items():
            ids.discard(own)
            if ids:
                return self._detail(own, name, ids)
        return None

    def done(self) -> CheckReport:
        if self.progress is not None:
            self.progress.write("\r" + " " * 40 + "\r")
            self.progress.flush()
        self.report.problems.sort(key=lambda problem: problem.lineno)
        return self.report


def _capped(lines: Iterable[str | bytes], max_line_bytes: int) -> Iterator[_Line]:
    """Number *lines*, as bytes; one longer than *max_line_bytes* as its size."""
    for lineno, line in enumerate(lines, start=1):
        raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
        size = len(raw) - raw.endswith(b"\n")
        yield lineno, (_TooLong(size) if size > max_line_bytes else raw)


def check_stream(
    open_lines: Callable[[], Iterable[str | bytes]],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    outside_loggers: Collection[str] = OUTSIDE_LOGGERS,
    logger_key: str = "logger",
    progress: IO[str] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> CheckReport:
    """Check JSON log lines (``str``, or UTF-8 ``bytes``) in two streaming
    passes; *open_lines* is called once per pass and must give the same lines
    each time.  *progress*, when given, gets a line count every 100,000 lines.

    A line is *missing* when *key* is absent or holds no id (``""``, ``"-"``,
    ``"None"``, ``null``, or a value that is neither a string nor a whole
    number), unless its *logger_key* is one of *outside_loggers* (a server's
    own loggers) and it carries no traceback (``exception``, ``stack``): such
    a line is counted as outside any request.  A line is *crossed* when one of
    its other values (at any depth; not the fields in `SYSTEM_FIELDS`, which
    the logging system writes) names an id that other lines carry under *key*:
    the whole id, whatever characters it holds, not glued to a letter, digit
    or ``._:-``.  A line that is not a JSON object is *invalid-json*, or
    *truncated* when it is an object cut short; a line longer than
    *max_line_bytes* is *too-long* and not checked.  Lines whose *logger_key*
    is in *ignore_loggers* are skipped; blank lines are ignored.  Structlog
    lines that name their message ``event`` are read as such.
    """
    check = _Check(key, ignore_loggers, outside_loggers, logger_key, max_line_bytes)
    check.progress = progress
    check.first(_capped(open_lines(), max_line_bytes))
    if check.ids:
        check.second(_capped(open_lines(), max_line_bytes))
    return check.done()


def check_lines(
    lines: Iterable[str],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    outside_loggers: Collection[str] = OUTSIDE_LOGGERS,
    logger_key: str = "logger",
    max_line_bytes: int = MAX_LINE_BYTES,
) -> CheckReport:
    """`check_stream` over *lines* held in memory."""
    held = lines if isinstance(lines, list | tuple) else list(lines)
    return check_stream(
        lambda: held,
        key=key,
        ignore_loggers=ignore_loggers,
        outside_loggers=outside_loggers,
        logger_key=logger_key,
        max_line_bytes=max_line_bytes,
    )


def check_records(
    records: Iterable[Mapping[str, Any]],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    outside_loggers: Collection[str] = OUTSIDE_LOGGERS,
    logger_key: str = "logger",
) -> CheckReport:
    """The same check over lines already parsed into mappings (numbered from 1)."""
    held = list(records)
    check = _Check(key, ignore_loggers, outside_loggers, logger_key, MAX_LINE_BYTES)
    check.first(enumerate(held, start=1))
    if check.ids:
        check.second(enumerate(held, start=1))
    return check.done()


def _file_lines(paths: list[Path], starts: list[int], max_line_bytes: int) -> Iterator[_Line]:
    """The lines of every file in *paths*, numbered as one stream (where each file
    starts goes to *starts*); a line longer than *max_line_bytes* is read
    through in chunks and given as its size."""
    count = 0
    starts.clear()
    limit = max_line_bytes + 1
    for path in paths:
        starts.append(count + 1)
        with path.open("rb") as fh:
            readline = fh.readline
            while raw := readline(limit):
                count += 1
                if len(raw) < limit or raw[-1] == 0x0A:  # a newline
                    yield count, raw
                    continue
                size = len(raw)
                raw = b""  # not held while the rest is read through
                while chunk := readline(_READ_CHUNK):
                    if chunk[-1] == 0x0A:
                        size += len(chunk) - 1
                        break
                    size += len(chunk)
                yield count, _TooLong(size)


def check_files(
    paths: Iterable[str | Path],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    outside_loggers: Collection[str] = OUTSIDE_LOGGERS,
    logger_key: str = "logger",
    progress: IO[str] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> CheckReport:
    """`check_stream` over the lines of every file in *paths*, as one stream
    (an id crossing from one file to another counts); ``-`` is standard input,
    spooled to a temporary file for the second pass.  With several files, each
    problem names its file and its line number in that file.  A line longer
    than *max_line_bytes* is never held in memory.

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
        check = _Check(key, ignore_loggers, outside_loggers, logger_key, max_line_bytes)
        check.progress = progress
        check.first(_file_lines(read, starts, max_line_bytes))
        if check.ids:
            check.second(_file_lines(read, starts, max_line_bytes))
        report = check.done()
    if len(files) > 1:
        located = []
        for problem in report.problems:
            index = bisect.bisect_right(starts, problem.lineno) - 1
            line = problem.lineno - starts[index] + 1
            located.append(dataclasses.replace(problem, lineno=line, source=str(files[index])))
        report.problems = located
    return report
