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


def main() -> None:
    """Generate, check in a child process, print throughput and peak memory."""
    lines = 100_000 if quick() else 600_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        size = _write_log(path, lines)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "ctxlog", "check", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rate = lines / seconds
    print(result.stdout.strip().splitlines()[0])
    print(f"{lines:,} lines, {size / 1e6:.0f} MB: {seconds:.2f} s, {rate:,.0f} lines/s")
    print(f"peak memory of the checking process: {peak_mb:.0f} MB")
    print("\ntargets")
    print(
        f"  lines per second   {rate:>12,.0f}  (target >= {TARGET_LINES_PER_SECOND:,})  "
        f"{'met' if rate >= TARGET_LINES_PER_SECOND else 'MISSED'}"
    )
    print(
        f"  peak memory        {peak_mb:>9.0f} MB  (target <= {TARGET_PEAK_MB} MB)  "
        f"{'met' if peak_mb <= TARGET_PEAK_MB else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
