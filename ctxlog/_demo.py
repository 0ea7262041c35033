"""The real demo: a Starlette service under uvicorn on 127.0.0.1, under concurrent load.

Each request to ``/orders/{n}`` goes through
[`ctxlog.asgi.RequestContextMiddleware`][ctxlog.asgi.RequestContextMiddleware],
then fans out: asyncio tasks, a ``@ctxlog.memoize`` lookup shared by those tasks
(one call per request thanks to the per-request ``cache_scope``), a
``ctxlog.ThreadPoolExecutor`` thread writing to SQLite through SQLAlchemy, an
async SQLAlchemy query (aiosqlite), a background task, sometimes a streamed
body, and sometimes a call to another endpoint of the service with
[`ctxlog.outgoing_headers`][ctxlog.outgoing_headers].  Every message names the request it belongs
to (the id is passed along explicitly, not read from the context), and SQL
parameters hold it too, so a line that carries another request's id shows up.

A few hundred httpx requests run concurrently, some with hostile
``X-Request-ID`` headers.  Then every JSON line is checked: by
`ctxlog._check.check_lines` (no line without an id, none mentioning
another request's id) and against what each request must have written.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import random
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ctxlog
from ctxlog._check import CheckReport, check_lines
from ctxlog.asgi import RequestContextMiddleware
from ctxlog.headers import is_valid_request_id, new_request_id
from ctxlog.stdlib import json_formatter


def _missing(exc: ImportError) -> str:
    """The package an ImportError is about: its own name, or the name of the import
    that caused it (SQLAlchemy raises its own ImportError, without a name, for a
    missing greenlet)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ImportError) and cause.name:
            return cause.name.partition(".")[0]
        cause = cause.__cause__ or cause.__context__
    return str(exc)


try:
    # The async SQLite driver and what SQLAlchemy's asyncio engine runs on: only
    # SQLAlchemy loads them, late; imported here so that a missing one is named
    # now, not in a traceback from the middle of the demo.
    for _needed in ("aiosqlite", "greenlet"):
        importlib.import_module(_needed)
    import httpx
    import sqlalchemy as sa
    import uvicorn
    from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover -- the dev extras install all of it
    _name = _missing(exc)
    msg = (
        f"The demo needs {_name}, which is not installed: "
        "pip install 'ctxlog-correlation[demo]' (or run `python -m ctxlog demo --simulated`, "
        "which needs python-json-logger only)."
    )
    raise ImportError(msg, name=_name) from exc


__all__ = ["DemoResult", "main", "run"]

LOGGER = "demo.orders"
log = logging.getLogger(LOGGER)

#: Header values the load generator sends to some requests; each must be replaced.
HOSTILE: tuple[Any, ...] = (
    "has space",
    "tab\tinside",
    "x" * 300,
    b"caf\xc3\xa9",
    b"\xff\xfe",
    "quote\"and'",
    "semi;colon=1",
    [("X-Request-ID", "first-1"), ("X-Request-ID", "second-2")],
)
_HEX32 = re.compile(r"[0-9a-f]{32}")


# --------------------------------------------------------------------------
# the service
# --------------------------------------------------------------------------

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
)


@ctxlog.memoize
async def load_customer(customer: int) -> dict[str, Any]:
    """A lookup every task of a request needs: memoized once per request."""
    log.info("loading customer %d", customer)
    await asyncio.sleep(0.002)
    return {"customer": customer, "tier": ("gold", "silver", "bronze")[customer % 3]}


class Service:
    """The demo service's state: its engines, thread pool and HTTP client."""

    def __init__(self, db: Path) -> None:
        url = f"sqlite:///{db}"
        self.engine = sa.create_engine(url, connect_args={"timeout": 30})
        self.async_engine: AsyncEngine = create_async_engine(
            f"sqlite+aiosqlite:///{db}", connect_args={"timeout": 30}
        )
        self.pool = ctxlog.ThreadPoolExecutor(max_workers=8, thread_name_prefix="demo-db")
        self.base_url = ""
        self.client: httpx.AsyncClient | None = None
        #: The ids of the background jobs that ran: work no request started.
        self.job_ids: list[str] = []
        self.stopping = False

    def create_schema(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            metadata.create_all(conn)

    def store(self, rid: str, n: int) -> int:
        """Runs in the thread pool: one write, one read, through the sync engine."""
        with self.engine.begin() as conn:
            conn.execute(orders.insert().values(request_id=rid, n=n))
            count = conn.execute(
                sa.select(sa.func.count()).select_from(orders).where(orders.c.request_id == rid)
            ).scalar_one()
        log.info("stored order %d for %s", n, rid)
        return int(count)

    async def count(self, rid: str) -> int:
        async with self.async_engine.connect() as conn:
            result = await conn.execute(
                sa.select(sa.func.count()).select_from(orders).where(orders.c.request_id == rid)
            )
            return int(result.scalar_one())

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            jobs = asyncio.create_task(self.jobs())
            async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
                self.client = client
                yield
            # A job stops between two jobs, never halfway through one.
            self.stopping = True
            await jobs
            await self.async_engine.dispose()

        routes = [
            Route("/orders/{n:int}", self.order),
            Route("/inventory/{n:int}", self.inventory),
            Route("/fail/{n:int}", self.fail),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    async def order(self, request: Request) -> Response:
        n: int = request.path_params["n"]
        rid = str(ctxlog.get("request_id"))  # read once; passed along explicitly from here
        log.info("order %d received for %s", n, rid)

        async def price(item: int) -> float:
            customer = await load_customer(n % 5)
            await asyncio.sleep(random.random() / 200)
            log.info("pricing item %d of order %d for %s", item, n, rid)
            return (item + 1) * (0.9 if customer["tier"] == "gold" else 1.0)

        prices = await asyncio.gather(*(price(item) for item in range(3)))
        stored = await asyncio.wrap_future(self.pool.submit(self.store, rid, n))
        counted = await self.count(rid)
        if n % 4 == 0 and self.client is not None:
            log.info("asking inventory about order %d for %s", n, rid)
            hop = await self.client.get(
                f"/inventory/{n}", params={"for": rid}, headers=ctxlog.outgoing_headers()
            )
            hop.raise_for_status()
        body = {"n": n, "request_id": rid, "total": sum(prices), "rows": [stored, counted]}
        audit = BackgroundTask(self.audit, n, rid)
        log.info("order %d done for %s", n, rid)
        if n % 5 == 0:
            return StreamingResponse(self.stream(n, rid, body), background=audit)
        return JSONResponse(body, background=audit)

    async def fail(self, request: Request) -> Response:
        """A request that fails: uvicorn's traceback line must carry its id."""
        n: int = request.path_params["n"]
        rid = str(ctxlog.get("request_id"))
        log.info("failing order %d for %s", n, rid)
        msg = f"order {n} failed for {rid}"
        raise RuntimeError(msg)

    async def jobs(self) -> None:
        """Background work no request started: each job is a unit of work of its
        own, with a fresh id (as ctxlog.celery gives a task published outside a
        request), and work it hands to the thread pool keeps it."""
        job = 0
        while not self.stopping:
            async with ctxlog.scope(request_id=new_request_id(), job=job):
                rid = str(ctxlog.get("request_id"))
                self.job_ids.append(rid)
                log.info("background job %d for %s", job, rid)
                await asyncio.wrap_future(
                    self.pool.submit(log.info, "background job %d in the pool for %s", job, rid)
                )
            job += 1
            await asyncio.sleep(0.01)

    async def stream(self, n: int, rid: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        text = json.dumps(body).encode()
        for part in range(3):
            await asyncio.sleep(0.001)
            log.info("streaming part %d of order %d for %s", part, n, rid)
            yield text[part * len(text) // 3 : (part + 1) * len(text) // 3]

    async def audit(self, n: int, rid: str) -> None:
        await asyncio.sleep(0.001)
        log.info("audit of order %d for %s", n, rid)

    async def inventory(self, request: Request) -> Response:
        n: int = request.path_params["n"]
        asked_by = request.query_params.get("for", "?")
        log.info("inventory of order %d asked by %s", n, asked_by)
        return JSONResponse({"n": n, "in_stock": True})


# --------------------------------------------------------------------------
# the load
# --------------------------------------------------------------------------


@dataclass
class Sent:
    """One request of the load, and what came back."""

    n: int
    header: Any
    traceparent: str | None
    status: int = 0
    request_id: str = ""
    body_id: str = ""

    @property
    def failing(self) -> bool:
        """Every 10th request (from the 5th on) goes to the failing endpoint."""
        return self.n % 10 == 5

    @property
    def hostile(self) -> bool:
        return self.header is not None and not (
            isinstance(self.header, str) and is_valid_request_id(self.header)
        )


def _plan(requests: int) -> list[Sent]:
    plan = []
    for n in range(requests):
        header: Any = None
        if n % 7 == 3:
            header = HOSTILE[(n // 7) % len(HOSTILE)]
        elif n % 3 == 0:
            header = f"demo-{n:05d}"
        traceparent = None
        if n % 6 == 1:
            traceparent = (
                f"00-{random.getrandbits(128) | 1:032x}-{random.getrandbits(64) | 1:016x}-01"
            )
        plan.append(Sent(n, header, traceparent))
    return plan


async def _send_all(base_url: str, plan: list[Sent]) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def one(sent: Sent) -> None:
            headers: list[tuple[bytes, bytes]] = []
            if isinstance(sent.header, list):
                headers.extend((k.encode(), v.encode()) for k, v in sent.header)
            elif sent.header is not None:
                value = sent.header if isinstance(sent.header, bytes) else sent.header.encode()
                headers.append((b"X-Request-ID", value))
            if sent.traceparent:
                headers.append((b"traceparent", sent.traceparent.encode()))
            path = f"/fail/{sent.n}" if sent.failing else f"/orders/{sent.n}"
            if sent.failing:
                # uvicorn closes a connection whose application raised: not one to reuse.
                headers.append((b"Connection", b"close"))
            response = await client.get(path, headers=headers)
            sent.status = response.status_code
            sent.request_id = response.headers.get("x-request-id", "")
            if response.status_code == 200:
                sent.body_id = json.loads(response.content).get("request_id", "")

        await asyncio.gather(*(one(sent) for sent in plan))


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Server:
    """uvicorn serving the demo on 127.0.0.1, in a thread of its own."""

    def __init__(self, app: Any) -> None:
        self.sock = _free_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_config=None, http="h11", lifespan="on", timeout_graceful_shutdown=30
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                msg = "the demo server did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        # A graceful stop waits for the background tasks still running.
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


# --------------------------------------------------------------------------
# the check
# --------------------------------------------------------------------------

#: What each request writes, by the start of its messages.
_EXPECTED = {
    "order ": 2,  # received, done
    "loading customer ": 1,  # memoized: once per request, though three tasks ask
    "pricing item ": 3,
    "stored order ": 1,
    "audit of order ": 1,
}


@dataclass
class DemoResult:
    """What the demo did and found."""

    requests: int = 0
    hostile: int = 0
    hops: int = 0
    failing: int = 0
    jobs: int = 0
    lines: int = 0
    report: CheckReport = field(default_factory=CheckReport)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.problems

    def summary(self) -> str:
        return (
            f"requests: {self.requests} (hostile headers: {self.hostile}, service-to-service "
            f"hops: {self.hops}, failing: {self.failing}), background jobs: {self.jobs}  "
            f"{self.report.summary()}  "
            f"other mismatches: {len(self.problems)}  time: {self.seconds:.1f}s"
        )


_KINDS = (
    *_EXPECTED,
    "streaming part ",
    "asking inventory ",
    "inventory of order ",
    "Rejected the ",
    "failing order ",
    "Exception in ASGI application",
    "background job ",
)

#: The lines of the server itself: its access line, one per request served.
_ACCESS = "uvicorn.access"


def _tally(records: list[dict[str, Any]]) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """Lines per request id and kind of message; SQLAlchemy lines per request id."""
    by_id: dict[str, Counter[str]] = {}
    sql: Counter[str] = Counter()
    for record in records:
        rid = str(record.get("request_id", "-"))
        message = str(record.get("message", ""))
        if str(record.get("logger", "")).startswith("sqlalchemy"):
            sql[rid] += 1
        kind = next((k for k in _KINDS if message.startswith(k)), "")
        if record.get("logger") == _ACCESS:
            kind = _ACCESS
        by_id.setdefault(rid, Counter())[kind] += 1
    return by_id, sql


def _check_request(sent: Sent, counts: Counter[str], sql: int) -> list[str]:
    """What is wrong with one request's response and lines."""
    where = f"request {sent.n}"
    if sent.failing:
        # A 500 that carries the id, and the server's traceback line with it.
        expected_failing = {
            "failing order ": 1,
            "Exception in ASGI application": 1,
            _ACCESS: 1,
            "Rejected the ": int(sent.hostile),
        }
        problems = (
            []
            if sent.status == 500 and sent.request_id
            else [f"{where}: a failing request got HTTP {sent.status}, id {sent.request_id!r}"]
        )
        problems.extend(
            f"{where}: {counts[kind]} lines {kind.strip()!r}, expected {count}"
            for kind, count in expected_failing.items()
            if counts[kind] != count
        )
        return problems
    if sent.status != 200 or sent.body_id != sent.request_id:
        return [
            f"{where}: HTTP {sent.status}, header id {sent.request_id!r}, body id {sent.body_id!r}"
        ]
    problems = []
    if sent.hostile:
        if not _HEX32.fullmatch(sent.request_id):
            problems.append(f"{where}: hostile header, but the id is {sent.request_id!r}")
    elif sent.header is not None and sent.request_id != sent.header:
        problems.append(f"{where}: sent {sent.header!r}, got {sent.request_id!r}")
    expected = dict(_EXPECTED)
    expected["streaming part "] = 3 if sent.n % 5 == 0 else 0
    expected["asking inventory "] = expected["inventory of order "] = int(sent.n % 4 == 0)
    expected["Rejected the "] = int(sent.hostile)
    expected[_ACCESS] = 1 + int(sent.n % 4 == 0)  # its own and the inventory hop's
    problems.extend(
        f"{where}: {counts[kind]} lines {kind.strip()!r}, expected {count}"
        for kind, count in expected.items()
        if counts[kind] != count
    )
    if sql < 4:  # BEGIN, INSERT, its parameters, SELECT, ... COMMIT
        problems.append(f"{where}: only {sql} SQLAlchemy lines")
    return problems


def _check_jobs(job_ids: list[str], by_id: dict[str, Counter[str]]) -> list[str]:
    """Each background job: its own fresh id, on its two lines."""
    problems = [] if job_ids else ["no background job ran"]
    if len(set(job_ids)) != len(job_ids):
        problems.append("two background jobs shared an id")
    for rid in job_ids:
        count = by_id.get(rid, Counter())["background job "]
        if count != 2:
            problems.append(f"background job {rid}: {count} lines, expected 2")
    return problems


def _raw_values(sent: Sent) -> list[bytes]:
    values = sent.header if isinstance(sent.header, list) else [("", sent.header)]
    return [v if isinstance(v, bytes) else str(v).encode() for _, v in values]


def _verify(
    plan: list[Sent], records: list[dict[str, Any]], raw_log: bytes, job_ids: list[str]
) -> list[str]:
    """Every response and line against what each request (and each background
    job) must have produced."""
    by_id, sql = _tally(records)
    known = {sent.request_id for sent in plan} | set(job_ids)
    problems = [
        f"a line carries the id {rid!r}, which no response had" for rid in by_id if rid not in known
    ]
    if len(known) != len(plan) + len(job_ids):
        problems.append(f"{len(plan)} requests and {len(job_ids)} jobs got {len(known)} ids")
    for sent in plan:
        counts = by_id.get(sent.request_id, Counter())
        problems += _check_request(sent, counts, sql[sent.request_id])
        if sent.hostile:
            problems.extend(
                f"request {sent.n}: the hostile value {raw[:40]!r} is in the log"
                for raw in _raw_values(sent)
                if raw and raw in raw_log
            )
    return problems + _check_jobs(job_ids, by_id)


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None  # check_lines reports it


def _records(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON objects among *lines*."""
    return [record for record in map(_loads, lines) if isinstance(record, dict)]


# --------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------


@contextmanager
def _json_log(path: Path) -> Iterator[None]:
    """Every line of the service, as JSON with the context, into *path*."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(json_formatter())
    handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
    root = logging.getLogger()
    quiet = {name: logging.getLogger(name) for name in ("httpx", "httpcore", "uvicorn.error")}
    saved = (root.level, {name: logger.level for name, logger in quiet.items()})
    engine_logger = logging.getLogger("sqlalchemy.engine")
    engine_level = engine_logger.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    engine_logger.setLevel(logging.INFO)
    # The load generator's own client lines and the server's start-up lines
    # belong to no request: keep them out of the file.
    for logger in quiet.values():
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved[0])
        engine_logger.setLevel(engine_level)
        for name, level in saved[1].items():
            quiet[name].setLevel(level)


def run(requests: int, output: Path, *, workdir: Path | None = None) -> DemoResult:
    """Serve, load, log to *output* (JSON lines) and check; SQLite lives in *workdir*."""
    started = time.perf_counter()
    result = DemoResult(requests=requests)
    plan = _plan(requests)
    result.hostile = sum(sent.hostile for sent in plan)
    result.hops = sum(1 for sent in plan if sent.n % 4 == 0 and not sent.failing)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        service = Service(Path(tmp) / "demo.sqlite")
        service.create_schema()
        server = _Server(RequestContextMiddleware(service.app(), request_fields=["method", "path"]))
        service.base_url = server.url  # the lifespan opens the hop client with it
        try:
            with _json_log(output), server:
                asyncio.run(_send_all(server.url, plan))
        finally:
            service.pool.shutdown()
            service.engine.dispose()
    raw_log = output.read_bytes()
    text = raw_log.decode("utf-8", errors="replace").splitlines()
    result.report = check_lines(text)
    records = _records(text)
    result.lines = len(text)
    result.problems = _verify(plan, records, raw_log, service.job_ids)
    result.jobs = len(service.job_ids)
    result.failing = sum(sent.failing for sent in plan)
    result.seconds = time.perf_counter() - started
    return result


def main(requests: int, output: Path, limit: int = 20) -> int:
    """Run the demo, print its summary and problems; the exit status (0: all lines right)."""
    print(
        f"ctxlog demo: a Starlette service under uvicorn on 127.0.0.1, {requests} concurrent "
        f"httpx requests; JSON log: {output}"
    )
    result = run(requests, output)
    print(result.summary())
    for problem in result.report.problems[:limit]:
        print(f"  line {problem.lineno}: {problem.kind}: {problem.detail}")
    for text in result.problems[:limit]:
        print(f"  {text}")
    mismatches = len(result.report.problems) + len(result.problems)
    if result.ok:
        print("OK: every line carries the id of the request that caused it")
        return 0
    print(f"FAIL: {mismatches} mismatches")
    return 1
