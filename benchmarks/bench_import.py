"""What ``import ctxlog`` costs, against ``import logging``, in fresh interpreters.

Each round starts two fresh interpreters (``python -X importtime -c "import X"``)
one after the other, for ``logging`` and for ``ctxlog``, and reads the
cumulative import time of that one module from its own report: interpreter
start-up is left out, and each module counts what it imports (``ctxlog``
includes ``logging``).  The ratio is the median of the per-round ratios.

Run it with ``python benchmarks/run.py import`` (``--quick`` for fewer rounds) or alone.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from _harness import quick, verdict

__all__ = ["main"]

TARGET = 2.00


def _import_us(module: str) -> int:
    """Microseconds a fresh interpreter spends importing *module* (cumulative)."""
    report = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    for line in reversed(report.splitlines()):
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    msg = f"no import time reported for {module}"
    raise RuntimeError(msg)


def main() -> None:
    """Measure, then print the medians and whether the target is met."""
    rounds = 15 if quick() else 61
    logging_us: list[int] = []
    ctxlog_us: list[int] = []
    ratios: list[float] = []
    for _ in range(rounds):
        a = _import_us("logging")
        b = _import_us("ctxlog")
        logging_us.append(a)
        ctxlog_us.append(b)
        ratios.append(b / a)
    print(f"import time in a fresh interpreter, µs (cumulative); median of {rounds} rounds")
    print(f"  {'import logging':<40}{statistics.median(logging_us):>9,.0f}")
    print(f"  {'import ctxlog (logging included)':<40}{statistics.median(ctxlog_us):>9,.0f}")
    print("\ntargets")
    ratio = statistics.median(ratios)
    print(f"  {'import ctxlog against import logging':<50}{verdict(ratio, TARGET)}")


if __name__ == "__main__":
    main()
