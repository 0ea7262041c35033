"""``python -m ctxlog``: the demo, the log checker and the ready configurations."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ctxlog._check import MAX_LINE_BYTES, OUTSIDE_LOGGERS, CheckReport, check_files

#: Exit statuses of ``python -m ctxlog check``.
EXIT_OK, EXIT_PROBLEMS, EXIT_UNREADABLE, EXIT_EMPTY = 0, 1, 2, 3


def _print_problems(report: CheckReport, limit: int) -> None:
    for problem in report.problems[:limit]:
        print(f"  {problem.where}: {problem.kind}: {problem.detail}")
    if len(report.problems) > limit:
        print(f"  ... and {len(report.problems) - limit} more")


def _demo(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp()) / "demo.jsonl"
    if not args.simulated:
        try:
            from ctxlog import _demo  # noqa: PLC0415 -- needs the demo extra
        except ImportError as exc:
            # One line, not a traceback: the message names the extra to install.
            print(f"python -m ctxlog demo: {exc}", file=sys.stderr)
            return 2
        return _demo.main(args.requests, output)
    started = time.perf_counter()
    from ctxlog import _demo_sim  # noqa: PLC0415 -- needs python-json-logger

    report = _demo_sim.run(args.requests, output)
    elapsed = time.perf_counter() - started
    print(f"ctxlog demo (simulated): {args.requests} requests, log: {output}")
    print(f"{report.summary()}  time: {elapsed:.2f}s")
    _print_problems(report, 20)
    mismatches = len(report.problems)
    print("OK: every line carries the id of its request" if report.ok else f"FAIL: {mismatches}")
    return 0 if report.ok else 1


def _check(args: argparse.Namespace) -> int:
    outside = [] if args.no_outside else list(OUTSIDE_LOGGERS)
    try:
        report = check_files(
            args.files,
            key=args.key,
            ignore_loggers=args.ignore_logger,
            outside_loggers=[*outside, *args.outside_logger],
            # Progress only for a person watching: never into a file or a pipe.
            progress=sys.stderr if sys.stderr.isatty() else None,
            max_line_bytes=args.max_line_bytes,
        )
    except OSError as exc:
        print(
            f"python -m ctxlog check: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_UNREADABLE
    if args.format == "json":
        print(json.dumps(report.as_dict(args.limit)))
    else:
        print(report.summary())
        _print_problems(report, args.limit)
        if report.empty:
            print("  no log line to check: is this the stream the service logs to?")
    if report.empty:
        return EXIT_EMPTY
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _config(args: argparse.Namespace) -> int:
    from ctxlog._configs import config_names, config_text  # noqa: PLC0415 -- this command only
    from ctxlog._errors import ContextError  # noqa: PLC0415 -- same

    if args.list or args.name is None:
        print("\n".join(config_names()))
        return 0
    try:
        sys.stdout.write(config_text(args.name))
    except ContextError as exc:
        print(f"python -m ctxlog config: {exc}", file=sys.stderr)
        return 2
    return 0


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int of at least *minimum*."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            msg = f"expected a whole number >= {minimum}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _size(text: str) -> int:
    """An argparse type: a number of bytes, ``64M`` or ``512K`` or ``1G`` too."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    unit = units.get(text[-1:].upper(), 1)
    digits = text[:-1] if unit != 1 else text
    if not digits.isdigit() or int(digits) < 1:
        msg = f"expected a size in bytes such as 1048576, 512K or 64M, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(digits) * unit


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ctxlog``."""
    from ctxlog import __version__  # noqa: PLC0415 -- the package, once the CLI runs

    parser = argparse.ArgumentParser(
        prog="python -m ctxlog",
        description="The demo, the log checker and the ready logging configurations.",
    )
    parser.add_argument("--version", action="version", version=f"ctxlog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a service under load and check its log lines")
    demo.add_argument(
        "-n", "--requests", type=_count(1), default=300, help="requests (default 300)"
    )
    demo.add_argument("-o", "--output", help="JSON lines file (default: a temporary file)")
    demo.add_argument(
        "--simulated",
        action="store_true",
        help="asyncio tasks and threads only, no server (needs python-json-logger only)",
    )
    demo.set_defaults(func=_demo)

    check = sub.add_parser(
        "check",
        help="check JSON log lines for missing or crossed ids",
        description="Check JSON log lines: each carries its request's id, none names another's.",
        epilog=(
            "exit status: 0 every line is right, 1 problems found, 2 a file cannot be read "
            "(or the command line is wrong), 3 no line to check (an empty log)"
        ),
    )
    check.add_argument("files", nargs="+", help="JSON lines files; - reads standard input")
    check.add_argument("--key", default="request_id", help="the id field (default request_id)")
    check.add_argument(
        "--ignore-logger",
        action="append",
        default=[],
        metavar="NAME",
        help="skip every line of this logger (repeatable)",
    )
    check.add_argument(
        "--outside-logger",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            "a logger whose lines without an id (and without a traceback) belong to no "
            "request: counted as outside requests, not as missing (repeatable; added to "
            f"{', '.join(OUTSIDE_LOGGERS)})"
        ),
    )
    check.add_argument(
        "--no-outside",
        action="store_true",
        help="no default outside loggers: every line without an id is missing",
    )
    check.add_argument(
        "--max-line-bytes",
        type=_size,
        default=MAX_LINE_BYTES,
        metavar="SIZE",
        help="a longer line is reported as too long, not read into memory (default 64M)",
    )
    check.add_argument("--limit", type=_count(0), default=20, help="problems to print (default 20)")
    check.add_argument(
        "--format", choices=("text", "json"), default="text", help="the report's form"
    )
    check.set_defaults(func=_check)

    config = sub.add_parser(
        "config",
        help="print a ready logging configuration (for uvicorn --log-config, gunicorn, ...)",
    )
    config.add_argument("name", nargs="?", help="e.g. logging-json.json (--list for all)")
    config.add_argument("--list", action="store_true", help="list the names")
    config.set_defaults(func=_config)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def _run() -> int:
    """`main`, quiet when the reader of its output goes away (``| head``)."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE
    except KeyboardInterrupt:
        print("python -m ctxlog: interrupted", file=sys.stderr)
        return 130  # what a shell reports for a command ended by SIGINT
    return status


if __name__ == "__main__":
    sys.exit(_run())
