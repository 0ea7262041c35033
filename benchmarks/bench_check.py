"""``python -m ctxlog check`` at scale: lines per second and peak memory on a
generated log of 600,000 JSON lines (about 170 MB), then peak memory against
the size of one long line, each check in a fresh interpreter.

Run it with ``python benchmarks/run.py check`` (``--quick``: 100,000 lines and
smaller long lines).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from _harness import quick

__all__ = ["main"]

MB = 1 << 20
TARGET_LINES_PER_SECOND = 100_000
TARGET_PEAK_MB = 150
#: One long line may cost this many times its size (at most the limit a line
#: may have, 64 MiB), plus this many MB.
TARGET_TIMES_LINE, TARGET_PLUS_MB = 3, 50
MAX_LINE_BYTES = 64 * MB

#: Checks one file, prints what it found, how long it took and its own peak
#: memory: the process's high-water mark (VmHWM) where Linux gives it, as
#: ru_maxrss also counts the memory of the process that started it.
_CHILD = """
import json, re, resource, sys, time
from pathlib import Path
if sys.argv[1] == "json":
    sys.modules["orjson"] = None  # as on an install without it
from ctxlog._check import check_files
started = time.perf_counter()
report = check_files([sys.argv[2]])
seconds = time.perf_counter() - started
status = Path("/proc/self/status")
if status.exists():
    kib = int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read_text()).group(1))
else:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # bytes on macOS
print(json.dumps({"summary": report.summary(), "seconds": seconds, "peak_mb": kib / 1024}))
"""


def _check(path: Path, parser: str = "orjson") -> dict[str, Any]:
    """The child's report: summary, seconds, peak_mb."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, parser, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _write_log(path: Path, lines: int) -> int:
    """A log of *lines* JSON lines, 10 per request, with SQL-like parameters."""
    rng = random.Random(7)
    size = 0
    with path.open("w", encoding="utf-8") as out:
        for n in range(lines):
            rid = f"{n // 10:032x}"
            record = {
                "time": "2026-12-01T09:30:00.123456Z",
                "level": "INFO",
                "logger": rng.choice(["app.orders", "sqlalchemy.engine.Engine", "uvicorn.access"]),
                "message": f"order {n} step {n % 10} for {rid}",
                "request_id": rid,
                "user_id": n % 977,
                "params": [rid, n, "eu-west"],
            }
            text = json.dumps(record) + "\n"
            size += len(text)
            out.write(text)
    return size


def _throughput(tmp: Path) -> None:
    lines = 100_000 if quick() else 600_000
    path = tmp / "big.jsonl"
    size = _write_log(path, lines)
    parsers = ["json"]
    try:
        import orjson  # noqa: F401, PLC0415 -- only to know whether it is there
    except ImportError:
        print("orjson is not installed: only the json figure")
    else:
        parsers.insert(0, "orjson")
    results = {parser: _check(path, parser) for parser in parsers}
    path.unlink()
    print(next(iter(results.values()))["summary"])
    print(f"{lines:,} lines, {size / 1e6:.0f} MB")
    rates = {parser: lines / result["seconds"] for parser, result in results.items()}
    for parser, rate in rates.items():
        print(f"  parsing with {parser:<7} {rate:>10,.0f} lines/s")
    peak_mb = max(result["peak_mb"] for result in results.values())
    print(f"peak memory of the checking processes: {peak_mb:.0f} MB")
    print("\ntargets")
    for parser, rate in rates.items():
        verdict = "met" if rate >= TARGET_LINES_PER_SECOND else "MISSED"
        print(
            f"  lines per second, {parser:<7} {rate:>10,.0f}  "
            f"(target >= {TARGET_LINES_PER_SECOND:,})  {verdict}"
        )
    print(
        f"  peak memory        {peak_mb:>9.0f} MB  (target <= {TARGET_PEAK_MB} MB)  "
        f"{'met' if peak_mb <= TARGET_PEAK_MB else 'MISSED'}"
    )


def _one_line(write_value: Callable[[IO[bytes], int], None]) -> Callable[[Path, int], None]:
    """A writer of a log whose second line holds one value of about *size* bytes."""

    def write(path: Path, size: int) -> None:
        with path.open("wb") as out:
            out.write(b'{"request_id": "r-1", "message": "start"}\n')
            out.write(b'{"request_id": "r-2", "message": ')
            write_value(out, size)
            out.write(b', "params": ["r-1"]}\n')

    return write


def _repeated(piece: bytes) -> Callable[[IO[bytes], int], None]:
    """A JSON string of *piece* repeated to about *size* bytes."""

    def value(out: IO[bytes], size: int) -> None:
        out.write(b'"')
        block = piece * (MB // len(piece))
        for _ in range(size // MB):
            out.write(block)
        out.write(b'"')

    return value


def _strings(out: IO[bytes], size: int) -> None:
    out.write(b"[")
    block = b'"ab", ' * (MB // 6)
    for _ in range(size // MB):
        out.write(block)
    out.write(b'"ab"]')


def _endless(path: Path, size: int) -> None:
    """No newline at all: one line of *size* bytes that is not JSON."""
    with path.open("wb") as out:
        block = b"x" * MB
        for _ in range(size // MB):
            out.write(block)


def _blank(path: Path, size: int) -> None:
    with path.open("wb") as out:
        block = b"\n" * MB
        for _ in range(size // MB):
            out.write(block)


#: (what, writer, the size of its longest line in MB, or 0 for blank lines)
def _cases() -> list[tuple[str, Callable[[Path, int], None], int]]:
    small = quick()
    words = _one_line(_repeated(b"ab "))
    return [
        ("short words, one string", words, 4 if small else 8),
        ("short words, one string", words, 16 if small else 32),
        ("one token, no space", _one_line(_repeated(b"a")), 16 if small else 32),
        ("escapes (\\n), one string", _one_line(_repeated(b"a\\n")), 16 if small else 32),
        ("a list of short strings", _one_line(_strings), 4 if small else 16),
        ("no newline, not JSON", _endless, 100 if small else 200),
        ("blank lines only", _blank, 5 if small else 30),
    ]


def _long_lines(tmp: Path) -> None:
    print("\npeak memory against the longest line (one check per row, a fresh interpreter)")
    print(f"  {'line':<26} {'size':>7} {'peak':>8} {'time':>7}   target")
    for what, write, size_mb in _cases():
        path = tmp / "line.jsonl"
        write(path, size_mb * MB)
        result = _check(path)
        path.unlink()
        bound: float
        if what.startswith("blank"):
            size_text = f"{size_mb}M lines"
            bound = TARGET_PLUS_MB
        else:
            size_text = f"{size_mb} MB"
            held = min(size_mb * MB, MAX_LINE_BYTES) / MB
            bound = TARGET_TIMES_LINE * held + TARGET_PLUS_MB
        verdict = "met" if result["peak_mb"] <= bound else "MISSED"
        print(
            f"  {what:<26} {size_text:>7} {result['peak_mb']:>5.0f} MB "
            f"{result['seconds']:>6.1f}s   <= {bound:.0f} MB  {verdict}"
        )
    print(
        f"  (target: {TARGET_TIMES_LINE}x the longest line, at most the "
        f"{MAX_LINE_BYTES // MB} MiB a line may have, + {TARGET_PLUS_MB} MB)"
    )


def main() -> None:
    """Generate logs, check each in a child process, print figures and targets."""
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        _throughput(tmp)
        _long_lines(tmp)


if __name__ == "__main__":
    main()
