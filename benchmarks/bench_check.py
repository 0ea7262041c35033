"""``python -m ctxlog check`` at scale: lines per second and peak memory on a
generated log of 600,000 JSON lines (about 150 MB), in a fresh interpreter.

Run it with ``python benchmarks/run.py check`` (``--quick``: 100,000 lines).
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import quick

__all__ = ["main"]

TARGET_LINES_PER_SECOND = 100_000
TARGET_PEAK_MB = 150


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


#: Runs ``python -m ctxlog check`` with orjson hidden, as on an install without it.
_WITHOUT_ORJSON = (
    "import runpy, sys; sys.modules['orjson'] = None; "
    "sys.argv = ['ctxlog', 'check', sys.argv[1]]; runpy.run_module('ctxlog', run_name='__main__')"
)


def _measure(command: list[str], lines: int) -> tuple[str, float, float]:
    """(the report's first line, lines per second, peak MB) of one checking process."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    # ru_maxrss of the children: the largest child so far, so measure the
    # leaner run (without orjson loaded) second.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result.stdout.strip().splitlines()[0], lines / seconds, peak_mb


def main() -> None:
    """Generate, check in a child process (with and without orjson), print figures."""
    lines = 100_000 if quick() else 600_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        size = _write_log(path, lines)
        runs = [("json (no orjson)", [sys.executable, "-c", _WITHOUT_ORJSON, str(path)])]
        try:
            import orjson  # noqa: F401, PLC0415 -- only to know whether it is there
        except ImportError:
            print("orjson is not installed: only the json figure")
        else:
            runs.insert(0, ("orjson", [sys.executable, "-m", "ctxlog", "check", str(path)]))
        results = {name: _measure(command, lines) for name, command in runs}
    first_line = next(iter(results.values()))[0]
    print(first_line)
    print(f"{lines:,} lines, {size / 1e6:.0f} MB")
    for name, (_, rate, _) in results.items():
        print(f"  parsing with {name:<17} {rate:>10,.0f} lines/s")
    peak_mb = max(peak for _, _, peak in results.values())
    print(f"peak memory of the checking processes: {peak_mb:.0f} MB")
    print("\ntargets")
    for name, (_, rate, _) in results.items():
        verdict = "met" if rate >= TARGET_LINES_PER_SECOND else "MISSED"
        print(
            f"  lines per second, {name:<17} {rate:>10,.0f}  "
            f"(target >= {TARGET_LINES_PER_SECOND:,})  {verdict}"
        )
    print(
        f"  peak memory        {peak_mb:>9.0f} MB  (target <= {TARGET_PEAK_MB} MB)  "
        f"{'met' if peak_mb <= TARGET_PEAK_MB else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
