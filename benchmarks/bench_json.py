"""One JSON line with 5 context keys: ``configure()``'s line against the anchors.

Measured side by side in one process, each writing into memory:

* python-json-logger's ``JsonFormatter`` with the 5 keys passed as ``extra=``
  (its README's set-up: ``time``/``level``/``logger``/``message``);
* structlog's own JSON chain: ``merge_contextvars``, ``add_log_level``,
  ``TimeStamper(fmt="iso")``, ``JSONRenderer()`` with the keys bound through
  ``structlog.contextvars``;
* ``ctxlog.configure()``'s line (``json_formatter()`` and ``ContextFilter``)
  with the keys bound through ``ctxlog.bind``, written with the standard
  library's ``json`` and, when it is installed, with orjson.

Run it with ``python benchmarks/run.py json`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import uuid
from typing import Any

import structlog
from _harness import CONTEXT, Op, Result, quick, timed_for, verdict
from pythonjsonlogger.json import JsonFormatter

import ctxlog
from ctxlog.stdlib import json_formatter

__all__ = ["main"]

TARGET_PJL = 0.80
TARGET_STRUCTLOG = 1.00
TARGET_STRUCTLOG_ORJSON = 0.80

HAVE_ORJSON = importlib.util.find_spec("orjson") is not None


def _logger(formatter: logging.Formatter, *, context: bool) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    if context:
        handler.addFilter(ctxlog.ContextFilter())
    log = logging.getLogger(f"ctxlog.bench.json.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log, stream


def _race(runs: int, seconds: float) -> tuple[Result, dict[str, io.StringIO]]:
    ctxlog.set(**CONTEXT)
    structlog.contextvars.bind_contextvars(**CONTEXT)
    streams: dict[str, io.StringIO] = {}
    pjl, streams["pjl"] = _logger(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ),
        context=False,
    )
    with_json, streams["json"] = _logger(json_formatter("json"), context=True)
    namespace: dict[str, Any] = {"ctx": dict(CONTEXT), "pjl": pjl, "with_json": with_json}
    streams["structlog"] = io.StringIO()
    namespace["slog"] = structlog.wrap_logger(
        structlog.PrintLogger(streams["structlog"]),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
    )
    statements = {
        "baseline": "pass",
        "pjl": "pjl.info('request handled', extra=ctx)",
        "structlog": "slog.info('request handled')",
        "json": "with_json.info('request handled')",
    }
    if HAVE_ORJSON:
        namespace["with_orjson"], streams["orjson"] = _logger(
            json_formatter("orjson"), context=True
        )
        statements["orjson"] = "with_orjson.info('request handled')"
    ops = [Op(k, timed_for(s, namespace, seconds)) for k, s in statements.items()]
    return Result.race(ops, runs), streams


def main() -> None:
    """Measure, then print the table and whether each target is met."""
    rough = quick()
    runs = 9 if rough else 31
    seconds = 0.005 if rough else 0.01
    result, streams = _race(runs, seconds)
    lines = {name: json.loads(s.getvalue().splitlines()[-1]) for name, s in streams.items()}
    for name in ("json", "orjson"):
        if name in lines:  # the same fields as the anchors' lines: a fair comparison
            assert {k: lines[name][k] for k in CONTEXT} == CONTEXT, lines[name]
    print(
        f"ns per JSON line with 5 context keys, into memory; median of {runs} runs;\n"
        "ratio: median of the per-run ratios, measured side by side (round-robin)"
    )
    rows = [
        ("pjl", "python-json-logger JsonFormatter, 5 keys via extra="),
        ("structlog", "structlog: merge_contextvars, add_log_level, TimeStamper, JSON"),
        ("json", "ctxlog.configure() line, json"),
    ]
    if HAVE_ORJSON:
        rows.append(("orjson", "ctxlog.configure() line, orjson"))
    print(f"  {'':<66}{'ns':>9}  {'/pjl':>6}  {'/structlog':>10}")
    for key, label in rows:
        print(
            f"  {label:<66}{result.ns(key):>9,.0f}  {result.ratio(key, 'pjl'):>5.2f}x"
            f"  {result.ratio(key, 'structlog'):>9.2f}x"
        )
    fastest = "orjson" if HAVE_ORJSON else "json"
    print("\ntargets")
    checks = [
        (
            f"{fastest} against python-json-logger with extra=",
            result.ratio(fastest, "pjl"),
            TARGET_PJL,
        ),
        (
            "json against structlog's own JSON chain",
            result.ratio("json", "structlog"),
            TARGET_STRUCTLOG,
        ),
    ]
    if HAVE_ORJSON:
        checks.append(
            (
                "orjson against structlog's own JSON chain",
                result.ratio("orjson", "structlog"),
                TARGET_STRUCTLOG_ORJSON,
            )
        )
    for label, value, limit in checks:
        print(f"  {label:<50}{verdict(value, limit)}")
    if not HAVE_ORJSON:
        print(
            "  (orjson is not installed: pip install 'ctxlog-correlation[orjson]' for its figures)"
        )


if __name__ == "__main__":
    main()
