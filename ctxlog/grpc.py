"""gRPC: the request id on every line of a call, server and client, sync and ``grpc.aio``.

Servers: [`ServerInterceptor`][ctxlog.grpc.ServerInterceptor] (``grpc.server``)
and [`AsyncServerInterceptor`][ctxlog.grpc.AsyncServerInterceptor]
(``grpc.aio.server``) open one unit of work per call, with the request id
taken from the call's metadata by the same rules (and options) as the HTTP
middlewares, and echo it in the initial metadata.  Clients:
[`ClientInterceptor`][ctxlog.grpc.ClientInterceptor]
(``grpc.intercept_channel``) and
[`AsyncClientInterceptor`][ctxlog.grpc.AsyncClientInterceptor] (``grpc.aio``
channels) send the current context's
[`outgoing_headers`][ctxlog.outgoing_headers] as metadata.

The binding is made inside the handler's behaviour, never in the interceptor
body: ``grpc.aio`` runs plain ``def`` handlers in its thread pool without the
interceptor's context (grpc #37881).  Each call owns one
`contextvars.Context`, and every step of the handler runs in it (the
call, each ``next()`` of a response generator, each step of a coroutine or
async generator), so the binding holds across threads and yields and never
touches the server's own threads, tasks or contexts.

grpcio is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent import futures
from contextvars import copy_context
from typing import Any, Final, NamedTuple

try:
    import grpc
    import grpc.aio
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.grpc needs grpcio (>= 1.60), which is not installed: "
        "pip install 'ctxlog-correlation[grpc]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._context import run_awaitable_in
from ctxlog._middleware import Incoming, Policy
from ctxlog._store import UNIT, UnitEntry, store
from ctxlog.headers import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    check_baggage_keys,
    check_header_name,
    is_valid_request_id,
    new_request_id,
    outgoing_headers,
)

__all__ = [
    "AsyncClientInterceptor",
    "AsyncServerInterceptor",
    "ClientInterceptor",
    "ServerInterceptor",
]

_logger: Final = logging.getLogger("ctxlog.grpc")

#: A behaviour of an ``RpcMethodHandler``: ``(request or iterator, context) -> ...``.
_Behaviour = Callable[..., Any]


# --------------------------------------------------------------------------
# server: one call
# --------------------------------------------------------------------------


def _incoming(policy: Policy, inner: Any, method: str) -> Incoming:
    """What the policy binds for the call whose servicer context is *inner*."""
    wanted = policy.header_lower
    raw_id: str | bytes | None = None
    raw_traceparent: str | bytes | None = None
    id_count = traceparent_count = 0
    baggage: list[str] = []
    # gRPC gives keys lowercased; values are str, or bytes for "-bin" keys.
    for key, value in inner.invocation_metadata() or ():
        if key == wanted:
            raw_id = value
            id_count += 1
        elif key == "traceparent":
            raw_traceparent = value
            traceparent_count += 1
        elif key == "baggage" and isinstance(value, str):
            baggage.append(value)
    if policy.request_fields:
        incoming = policy.incoming(
            raw_id,
            id_count,
            raw_traceparent,
            traceparent_count,
            path=method,
            client=_peer(inner),
        )
    else:
        incoming = policy.incoming(raw_id, id_count, raw_traceparent, traceparent_count)
    if policy.baggage and baggage:
        # Several baggage values read as one joined by commas, as the format allows.
        policy.add_baggage(incoming, ",".join(baggage))
    return incoming


class _Call:
    """One call: its private Context holding the unit of work, and the
    servicer context the handler is given (it stands in front of grpc's,
    which it forwards everything to)."""

    __slots__ = ("_code", "_ctx", "_entry", "_inner", "_method", "_pair", "_sent", "_stopped")

    def __init__(self, policy: Policy, inner: Any, method: str) -> None:
        self._inner = inner  # first: __getattr__ reads it
        self._method = method
        incoming = _incoming(policy, inner, method)
        echoed: str | bytes = incoming[1]
        if policy.header_lower.endswith("-bin"):  # gRPC sends "-bin" values as bytes only
            echoed = incoming[1].encode("ascii")
        self._pair: tuple[tuple[str, str | bytes], ...] = (
            ((policy.header_lower, echoed),) if policy.echo else ()
        )
        #: Whether initial metadata went out (or there is nothing to echo).
        self._sent = not policy.echo
        #: Whether the call was aborted (by the handler, or here after an error).
        self._stopped = False
        self._code: Any = None
        self._ctx = copy_context()
        self._entry: UnitEntry | None = self._ctx.run(policy.open, incoming, _logger)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def set_code(self, code: Any) -> None:
        """As grpc's, remembering the code for an error that follows."""
        self._code = code
        self._inner.set_code(code)

    def _with_id(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[Any, ...]:
        """The handler's initial metadata, plus the echoed id unless it set that key."""
        given = tuple(metadata or ())
        self._sent = True
        if self._pair and not any(key.lower() == self._pair[0][0] for key, _ in given):
            return given + self._pair
        return given

    def _status(self) -> Any:
        code = self._code
        return grpc.StatusCode.UNKNOWN if code is None or code == grpc.StatusCode.OK else code

    def _gone(self, exc: Exception) -> bool:
        """Whether *exc* only says the call ended under the handler (the client
        cancelled, or the deadline passed): grpc does not log that, nor do we."""
        if isinstance(exc, futures.CancelledError):
            return True  # grpc.aio's thread pool, once the call's task was cancelled
        if isinstance(exc, grpc.RpcError):
            # A request iterator read after the call ended (a call the handler
            # makes itself fails while its own call is still active).
            is_active = getattr(self._inner, "is_active", None)
            return is_active is not None and not is_active()
        return False

    def _log_error(self, exc: BaseException) -> None:
        entry = self._entry
        if entry is not None:
            store.fail(entry[UNIT])  # a failed call, for what waits on its outcome
        # In the call's context: the line grpc would write after the handler
        # returned has no id; this one, with the traceback, has it.
        self._ctx.run(_logger.error, "Exception in gRPC method %s", self._method, exc_info=exc)

    def _close(self) -> None:
        """End the call's unit of work, once."""
        entry, self._entry = self._entry, None
        if entry is None:
            return
        try:
            self._ctx.run(store.close_unit, entry)
        except RuntimeError:  # pragma: no cover -- the Context is never entered when a call ends
            store.end(entry[UNIT])


def _peer(inner: Any) -> str | None:
    try:
        peer = inner.peer()
    except Exception:  # noqa: BLE001 -- a request field must never fail the call
        return None
    return peer if isinstance(peer, str) else None


class _SyncCall(_Call):
    """The servicer context of a plain ``def`` handler (either server)."""

    __slots__ = ()

    def send_initial_metadata(self, initial_metadata: Iterable[tuple[str, str | bytes]]) -> None:
        """As grpc's, with the request id added."""
        self._inner.send_initial_metadata(self._with_id(initial_metadata))

    def abort(self, code: Any, details: str) -> None:
        """As grpc's, after echoing the id."""
        self._stopped = True
        self._echo()
        self._inner.abort(code, details)

    def abort_with_status(self, status: Any) -> None:
        """As grpc's, after echoing the id."""
        self._stopped = True
        self._echo()
        self._inner.abort_with_status(status)

    def _echo(self) -> None:
        if self._sent:
            return
        self._sent = True
        # The client may be gone, or the call over: then there is nobody to tell.
        with contextlib.suppress(Exception):
            self._inner.send_initial_metadata(self._pair)

    def _fail(self, exc: Exception, details: str) -> None:
        """Log *exc* with the call's id, then end the call as grpc would, without
        grpc's own id-less line (an abort is what grpc does not log)."""
        if self._stopped or self._gone(exc):
            return
        self._stopped = True
        self._log_error(exc)
        self._echo()
        self._inner.abort(self._status(), details)


class _AsyncCall(_Call):
    """The servicer context of an ``async def`` handler under ``grpc.aio``."""

    __slots__ = ()

    async def send_initial_metadata(
        self, initial_metadata: Iterable[tuple[str, str | bytes]]
    ) -> None:
        """As grpc's, with the request id added."""
        await self._inner.send_initial_metadata(self._with_id(initial_metadata))

    async def write(self, message: Any) -> None:
        """As grpc's; the first write sends the id first."""
        await self._echo()
        await self._inner.write(message)

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        """As grpc's, after echoing the id."""
        self._stopped = True
        await self._echo()
        await self._inner.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status: Any) -> None:
        """As grpc's, after echoing the id."""
        self._stopped = True
        await self._echo()
        await self._inner.abort_with_status(status)

    async def _echo(self) -> None:
        if self._sent:
            return
        self._sent = True
        # The client may be gone, or the call over: then there is nobody to tell.
        with contextlib.suppress(Exception):
            await self._inner.send_initial_metadata(self._pair)

    async def _fail(self, exc: Exception, details: str) -> None:
        """As `_SyncCall._fail`."""
        if self._stopped or self._gone(exc):
            return
        self._stopped = True
        self._log_error(exc)
        await self._echo()
        await self._inner.abort(self._status(), details)


def _details(exc: Exception) -> str:
    """The status details grpc itself sends for a handler that raised."""
    return f"Exception calling application: {exc}"


# --------------------------------------------------------------------------
# server: the four shapes of a behaviour
# --------------------------------------------------------------------------


def _sync_unary(behaviour: _Behaviour, policy: Policy, method: str) -> _Behaviour:
    """A ``def`` behaviour returning one response (or, ``experimental_non_blocking``,
    taking a callback)."""

    @functools.wraps(behaviour)
    def unary(request: Any, context: Any, *rest: Any) -> Any:
        call = _SyncCall(policy, context, method)
        try:
            response = call._ctx.run(behaviour, request, call, *rest)
        except Exception as exc:
            call._fail(exc, _details(exc))
            raise
        finally:
            call._close()
        call._echo()
        return response

    return unary


def _sync_stream(behaviour: _Behaviour, policy: Policy, method: str) -> _Behaviour:
    """A ``def`` behaviour returning an iterator of responses (a generator)."""

    @functools.wraps(behaviour)
    def stream(request: Any, context: Any) -> Iterator[Any]:
        call = _SyncCall(policy, context, method)
        ctx = call._ctx
        responses: Iterator[Any] | None = None
        try:
            try:
                responses = ctx.run(iter, ctx.run(behaviour, request, call))
                while True:
                    # Each step in the call's Context, never across a yield
                    # of this generator: a bind() the handler holds across
                    # its own yield stays in its Context, and grpc's thread
                    # never sees it.
                    try:
                        response = ctx.run(next, responses)
                    except StopIteration:
                        break
                    call._echo()
                    yield response
                call._echo()
            except Exception as exc:
                call._fail(exc, _details(exc))
                raise
            finally:
                # Abandoned (a cancelled call) or done: the handler's own
                # finally blocks run in its Context too.
                close = getattr(responses, "close", None)
                if close is not None:
                    ctx.run(close)
        finally:
            call._close()

    return stream


def _async_unary(behaviour: _Behaviour, policy: Policy, method: str) -> _Behaviour:
    """An ``async def`` behaviour: one response, or the reader/writer streaming API."""

    @functools.wraps(behaviour)
    async def unary(request: Any, context: Any) -> Any:
        call = _AsyncCall(policy, context, method)
        try:
            response = await run_awaitable_in(call._ctx, behaviour, request, call)
        except Exception as exc:
            await call._fail(exc, _details(exc))
            raise
        finally:
            call._close()
        await call._echo()
        return response

    return unary


def _async_stream(behaviour: _Behaviour, policy: Policy, method: str) -> _Behaviour:
    """An async generator behaviour yielding the responses."""

    @functools.wraps(behaviour)
    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        call = _AsyncCall(policy, context, method)
        ctx = call._ctx
        try:
            responses = ctx.run(behaviour, request, call)
            try:
                while True:
                    try:
                        response = await run_awaitable_in(ctx, responses.__anext__)
                    except StopAsyncIteration:
                        break
                    await call._echo()
                    yield response
                await call._echo()
            except Exception as exc:
                await call._fail(exc, _details(exc))
                raise
            finally:
                await run_awaitable_in(ctx, responses.aclose)
        finally:
            call._close()

    return stream


#: (request_streaming, response_streaming) -> the handler's attribute and grpc's constructor.
_SHAPES: Final[dict[tuple[bool, bool], tuple[str, Callable[..., Any]]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def _wrap_handler(handler: Any, policy: Policy, method: str) -> Any:
    """*handler* with its behaviour running in a unit of work per call."""
    if handler is None:
        return None
    streaming = bool(handler.response_streaming)
    name, make = _SHAPES[bool(handler.request_streaming), streaming]
    behaviour = getattr(handler, name, None)
    if behaviour is None:  # not a handler of the shape it claims: leave it to grpc
        return handler
    # grpc.aio picks how to run a behaviour by its kind: the wrapper has the same.
    if inspect.isasyncgenfunction(behaviour):
        wrapped = _async_stream(behaviour, policy, method)
    elif inspect.iscoroutinefunction(behaviour):
        wrapped = _async_unary(behaviour, policy, method)
    elif streaming and not getattr(behaviour, "experimental_non_blocking", False):
        wrapped = _sync_stream(behaviour, policy, method)
    else:
        wrapped = _sync_unary(behaviour, policy, method)
    return make(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


#: How many wrapped handlers a server interceptor keeps.
_WRAPPED_CAP: Final = 1024


class _ServerOptions:
    """The options of both server interceptors: the HTTP middlewares' own."""

    __slots__ = ("_policy", "_wrapped")

    def __init__(
        self,
        *,
        header: str = REQUEST_ID_HEADER,
        key: str = "request_id",
        validator: Callable[[str], bool] | None = is_valid_request_id,
        generator: Callable[[], str] = new_request_id,
        transformer: Callable[[str], str] | None = None,
        echo: bool = True,
        request_fields: Iterable[str] = (),
        traceparent: bool = True,
        trace_key: str = "trace_id",
        max_length: int = MAX_REQUEST_ID_LENGTH,
        baggage: Iterable[str] = (),
    ) -> None:
        self._policy = Policy(
            header=header,
            key=key,
            validator=validator,
            generator=generator,
            transformer=transformer,
            echo=echo,
            request_fields=request_fields,
            traceparent=traceparent,
            trace_key=trace_key,
            max_length=max_length,
            baggage=baggage,
            # Metadata reaches the handler as the client sent it: a handler
            # reads the id from ctxlog.get(), never from the metadata.
            update_request_header=False,
            where=type(self).__name__,
        )
        self._wrapped: dict[tuple[Any, str], Any] = {}

    def _wrap(self, handler: Any, method: str) -> Any:
        """*handler*, wrapped once: grpc hands out the same handler object for
        every call of a method, and wrapping costs more than the call's binding."""
        if handler is None:
            return None
        try:
            key = (handler, method)
            wrapped = self._wrapped.get(key)
        except TypeError:  # an unhashable handler of the application's making
            return _wrap_handler(handler, self._policy, method)
        if wrapped is None:
            if len(self._wrapped) >= _WRAPPED_CAP:
                # Handlers made anew for each call would fill it: start over.
                self._wrapped.clear()
            wrapped = self._wrapped[key] = _wrap_handler(handler, self._policy, method)
        return wrapped

    def __repr__(self) -> str:
        return f"ctxlog.grpc.{type(self).__name__}({self._policy.describe()!r})"


class ServerInterceptor(_ServerOptions, grpc.ServerInterceptor):
    """Bind a request id (and trace id) for every line of every call of a ``grpc.server``.

    ```python
    server = grpc.server(pool, interceptors=[ctxlog.grpc.ServerInterceptor()])
    ```

    For each call, unary and streaming alike, the interceptor:

    * takes the request id from the *header* metadata (``x-request-id``)
      when exactly one value is sent and it passes *validator*; otherwise it
      uses a new id from *generator* and, for a rejected value (invalid,
      empty, too long, repeated), logs **one** warning on the ``ctxlog.grpc``
      logger with the value escaped and truncated;
    * binds it under *key*, plus the trace id of a valid ``traceparent``
      metadata value under *trace_key* (when *traceparent* is on) and the
      *request_fields* asked for (``"path"``: the full method name,
      ``"client"``: the peer; ``"method"`` binds nothing, every call being a
      POST);
    * binds the entries of the W3C ``baggage`` metadata whose keys *baggage*
      names, each under its own key, as the HTTP middlewares do (other
      entries, malformed ones and unsafe values are left out);
    * opens one unit of work ([`scope`][ctxlog.scope]) for the call:
      [`annotate`][ctxlog.annotate] works in the handler and in the threads it
      hands work to with [`wrap`][ctxlog.wrap] or
      [`ThreadPoolExecutor`][ctxlog.ThreadPoolExecutor];
    * echoes the id in the initial metadata (unless *echo* is off), added to
      what the handler sends itself with ``send_initial_metadata`` unless it
      sent that key;
    * logs a handler's unhandled exception on the ``ctxlog.grpc`` logger
      (``"Exception in gRPC method ..."``, with the traceback, carrying the
      id) and ends the call with grpc's own status (``UNKNOWN``, or the code
      the handler set) and details, in place of grpc's line without an id.

    The handler's every step runs in a Context of the call's own (a response
    generator's every ``next()`` too), so nothing is left bound in grpc's
    threads once the call ends, whether it returned, raised, aborted, was
    cancelled or ran out of time.  The handler is given a thin stand-in for
    grpc's servicer context, which forwards everything to it.  Options as
    [`RequestContextMiddleware`][ctxlog.asgi.RequestContextMiddleware]; a
    metadata key is lowercase, so *header* is matched lowercased.

    *New in version 0.1.0.*

    :raises ctxlog.ContextError: an option is invalid (at construction), or
        the *generator* or *transformer* returns something that cannot be
        sent in metadata.
    """

    __slots__ = ()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """Wrap the behaviour of the handler grpc found for this call."""
        return self._wrap(continuation(handler_call_details), handler_call_details.method)


class AsyncServerInterceptor(_ServerOptions, grpc.aio.ServerInterceptor):
    """[`ServerInterceptor`][ctxlog.grpc.ServerInterceptor] for ``grpc.aio.server``.

    ```python
    server = grpc.aio.server(interceptors=[ctxlog.grpc.AsyncServerInterceptor()])
    ```

    The same options and rules, for every kind of handler ``grpc.aio`` runs:
    ``async def`` handlers (one response, or the ``context.write()`` API),
    async generators, and plain ``def`` handlers and generators, which
    ``grpc.aio`` runs in its thread pool without the interceptor's context
    (grpc #37881): the binding is made inside the handler's behaviour, in a
    Context of the call's own, so it holds there too.  A cancelled call
    (the client went away, or its deadline passed) ends its unit of work
    with the ``CancelledError`` grpc throws into it.

    *New in version 0.1.0.*

    :raises ctxlog.ContextError: as [`ServerInterceptor`][ctxlog.grpc.ServerInterceptor].
    """

    __slots__ = ()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """Wrap the behaviour of the handler grpc found for this call."""
        return self._wrap(await continuation(handler_call_details), handler_call_details.method)


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------


class _Outgoing:
    """The metadata a client call carries: the caller's, plus ``outgoing_headers()``."""

    __slots__ = ("baggage", "header", "key", "trace_key")

    def __init__(
        self, header: str, key: str, trace_key: str, baggage: Iterable[str], where: str
    ) -> None:
        check_header_name(header, where)
        self.header = header.lower()  # gRPC refuses metadata keys with capitals
        self.key = key
        self.trace_key = trace_key
        self.baggage = tuple(check_baggage_keys(baggage, where))

    def metadata(self, given: Iterable[tuple[str, Any]] | None) -> list[tuple[str, Any]] | None:
        """*given* plus the current context's headers, or ``None`` when there are none
        to add (the call goes out unchanged)."""
        headers = outgoing_headers(
            header=self.header, key=self.key, trace_key=self.trace_key, baggage=self.baggage
        )
        if not headers:
            return None
        pairs = list(given or ())
        taken = {str(name).lower() for name, _ in pairs}
        added = [(name, value) for name, value in headers.items() if name not in taken]
        if not added:
            return None
        return pairs + added


class _CallDetails(NamedTuple):
    """A sync ``grpc.ClientCallDetails`` with other metadata (grpc's own is private)."""

    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncCallDetails(_CallDetails, grpc.ClientCallDetails):
    __slots__ = ()


class _ClientOptions:
    """The options of both client interceptors."""

    __slots__ = ("_outgoing",)

    def __init__(
        self,
        *,
        header: str = REQUEST_ID_HEADER,
        key: str = "request_id",
        trace_key: str = "trace_id",
        baggage: Iterable[str] = (),
    ) -> None:
        self._outgoing = _Outgoing(header, key, trace_key, baggage, type(self).__name__)

    def __repr__(self) -> str:
        return f"ctxlog.grpc.{type(self).__name__}(header={self._outgoing.header!r})"


class ClientInterceptor(
    _ClientOptions,
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Send the current context's request id and trace with every call of a channel.

    ```python
    channel = grpc.intercept_channel(grpc.insecure_channel(target), ctxlog.grpc.ClientInterceptor())
    ```

    Every call, in all four arities, carries
    [`outgoing_headers`][ctxlog.outgoing_headers] as metadata (``x-request-id``
    and ``traceparent``, keys lowercased as gRPC requires), after the
    caller's own metadata; a key the caller set is never sent twice.  Called
    from inside a request (a handler of a server with
    [`ServerInterceptor`][ctxlog.grpc.ServerInterceptor], or of a web
    middleware), the next service gets that request's id.  Nothing bound: the
    call goes out unchanged.  *header*, *key*, *trace_key* and *baggage* (the
    bound keys sent on in a W3C ``baggage`` entry) as for
    ``outgoing_headers``.

    *New in version 0.1.0.*

    :raises ctxlog.ContextError: *header* is not a header name.
    """

    __slots__ = ()

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = self._outgoing.metadata(details.metadata)
        if metadata is None:
            return details
        return _SyncCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return continuation(self._details(client_call_details), request_iterator)


class AsyncClientInterceptor(
    _ClientOptions,
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """[`ClientInterceptor`][ctxlog.grpc.ClientInterceptor] for ``grpc.aio`` channels.

    ```python
    channel = grpc.aio.insecure_channel(
        target, interceptors=[*ctxlog.grpc.AsyncClientInterceptor()]
    )
    ```

    ``grpc.aio`` has one interceptor class per arity, and its channel files
    each interceptor under the first of the four it is (grpc #31442: an
    object of all four intercepts unary-unary calls only).  So the object
    is all four, and iterating it gives one interceptor per arity: unpack it
    into ``interceptors=[...]`` (``*``) and every call, in all four arities,
    carries the metadata.  Passed as it is (``interceptors=[interceptor]``),
    it covers unary-unary calls on the grpcio versions with that bug, and
    all four on the others.  The metadata is read from the context of the
    code that makes the call.

    *New in version 0.1.0.*

    :raises ctxlog.ContextError: *header* is not a header name.
    """

    __slots__ = ()

    def __iter__(self) -> Iterator[grpc.aio.ClientInterceptor]:
        """One interceptor per arity, each handing its calls to this one."""
        return iter(
            (_UnaryUnary(self), _UnaryStream(self), _StreamUnary(self), _StreamStream(self))
        )

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = self._outgoing.metadata(details.metadata)
        if metadata is None:
            return details
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return await continuation(self._details(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Add the metadata, then call on."""
        return await continuation(self._details(client_call_details), request_iterator)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    __slots__ = ("_of",)

    def __init__(self, of: AsyncClientInterceptor) -> None:
        self._of = of

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._of._details(client_call_details), request)

    def __repr__(self) -> str:
        return f"{self._of!r} (unary-unary)"


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    __slots__ = ("_of",)

    def __init__(self, of: AsyncClientInterceptor) -> None:
        self._of = of

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._of._details(client_call_details), request)

    def __repr__(self) -> str:
        return f"{self._of!r} (unary-stream)"


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    __slots__ = ("_of",)

    def __init__(self, of: AsyncClientInterceptor) -> None:
        self._of = of

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._of._details(client_call_details), request_iterator)

    def __repr__(self) -> str:
        return f"{self._of!r} (stream-unary)"


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    __slots__ = ("_of",)

    def __init__(self, of: AsyncClientInterceptor) -> None:
        self._of = of

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._of._details(client_call_details), request_iterator)

    def __repr__(self) -> str:
        return f"{self._of!r} (stream-stream)"
