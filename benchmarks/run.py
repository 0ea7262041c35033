"""Run the benchmarks: every ``benchmarks/bench_*.py``, in name order.

Usage::

    python benchmarks/run.py              # all of them
    python benchmarks/run.py --quick      # fewer repetitions: a smoke run, rougher figures
    python benchmarks/run.py core json    # only those whose name contains "core" or "json"
    python benchmarks/run.py --list       # the names, without running anything

Each benchmark is a module with a ``main()`` that prints its own table of
medians and ratios against the anchors measured in the same process.
``--quick`` is passed to them as the environment variable
``CTXLOG_BENCH_QUICK=1`` (:func:`quick_requested` reads it), so that every
``main()`` keeps the same signature and also runs alone
(``python benchmarks/bench_core.py``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from _harness import QUICK_ENV
from _harness import quick as quick_requested

__all__ = ["QUICK_ENV", "discover", "main", "quick_requested"]

HERE = Path(__file__).resolve().parent


def discover(patterns: Sequence[str] = ()) -> list[str]:
    """Module names of the benchmarks, in name order, filtered by *patterns*.

    A benchmark is kept when its name (with or without the ``bench_`` prefix)
    contains any of *patterns*; no pattern keeps them all.
    """
    names = sorted(path.stem for path in HERE.glob("bench_*.py"))
    if not patterns:
        return names
    return [name for name in names if any(pattern in name for pattern in patterns)]


def _header() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{datetime.date.today().isoformat()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "patterns", nargs="*", help="run only benchmarks whose name contains one of these"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (rougher)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    names = discover(args.patterns)
    if args.list:
        print("\n".join(names))
        return 0
    if not names:
        print(f"no benchmark matches {args.patterns!r}; try --list", file=sys.stderr)
        return 2
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    # Benchmarks import each other's helpers (and this module) by plain name.
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))

    print(f"ctxlog benchmarks: {_header()}{' (quick)' if args.quick else ''}")
    failed: list[str] = []
    for name in names:
        print(f"\n=== {name}")
        started = time.perf_counter()
        try:
            importlib.import_module(name).main()
        except Exception:  # noqa: BLE001 -- report it, run the other benchmarks, exit non-zero
            sys.stdout.flush()
            traceback.print_exc()
            sys.stderr.flush()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
