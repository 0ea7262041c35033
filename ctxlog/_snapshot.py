"""Snapshots of the context, and the codecs that carry one to another process
(pickle) or another service (one JSON header).

A [`Snapshot`][ctxlog.Snapshot] holds the merged context (bound and annotated values,
registered variables) as it was when it was taken, immutable; binding it
([`Snapshot.run`][ctxlog.Snapshot.run], [`Snapshot.apply`][ctxlog.Snapshot.apply]) makes its values
the bound
context, outside any unit of work.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import copy_context
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeAlias, TypeVar, cast

from ctxlog._context import GENERATOR_HINT, Reusable
from ctxlog._errors import ContextError, check_key
from ctxlog._store import EMPTY, Detached, store
from ctxlog._values import safe_str

__all__ = [
    "CONTEXT_HEADER",
    "MAX_HEADER_DEPTH",
    "MAX_HEADER_SIZE",
    "HeadersLike",
    "Snapshot",
    "UnpicklablePolicy",
    "call_bound",
    "dump_payload",
    "load_payload",
    "picklable",
    "snapshot",
]

P = ParamSpec("P")
R = TypeVar("R")

#: The header [`Snapshot.to_headers`][ctxlog.Snapshot.to_headers] writes and
#: [`Snapshot.from_headers`][ctxlog.Snapshot.from_headers]
#: reads: a JSON object of the bound values, ASCII only.
CONTEXT_HEADER: Final = "X-Ctxlog-Context"
#: The longest header value [`Snapshot.from_headers`][ctxlog.Snapshot.from_headers] accepts (and
#: [`Snapshot.to_headers`][ctxlog.Snapshot.to_headers] writes); most servers refuse a header line
#: over 8 KiB.
MAX_HEADER_SIZE: Final = 8192
#: The deepest nesting of JSON objects/arrays in the header, the outer object included.
MAX_HEADER_DEPTH: Final = 8

# C0 and C1 control characters (a newline in a value forges a line in a plain-text
# log), the line and paragraph separators (str.splitlines() splits there), the
# bidirectional overrides and isolates (they reorder what a reader sees) and
# lone surrogates (no encoder can write them).
_UNSAFE_CHARS: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)

_PICKLE_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL

UnpicklablePolicy = Literal["raise", "str"]


class _HasItems(Protocol):
    """Headers with ``.items()``: a dict, ``email.message.Message``, framework headers."""

    def items(self) -> Iterable[tuple[Any, Any]]: ...


HeadersLike: TypeAlias = _HasItems | Iterable[tuple[Any, Any]]


# --------------------------------------------------------------------------
# Snapshot
# --------------------------------------------------------------------------


class _Applied(Reusable[Detached]):
    """``with snap.apply():``: the snapshot's values replace the bound context,
    outside any unit of work."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._entries = []

    def _push(self) -> Detached:
        return store.detach(self._data)

    _pop = staticmethod(store.reattach)  # type: ignore[assignment]  # the same call, as the store's verb

    def _pop_foreign(self, entry: Detached, exc: BaseException | None) -> None:  # noqa: ARG002 -- another context's entry undoes nothing here
        msg = (
            "apply() block left in a different context than it was entered in, so the "
            f"previous context cannot be restored. {GENERATOR_HINT}"
        )
        raise ContextError(msg) from exc


class Snapshot(Mapping[str, Any]):
    """An immutable, picklable copy of the context, to carry it to other work.

    Made by [`snapshot`][ctxlog.snapshot] (or ``Snapshot({"request_id": "r-1"})``).  It is a
    read-only mapping of the values that were bound (plus registered variables,
    under their names), so a log line written under it shows the same fields.

    - [`run`][ctxlog.Snapshot.run] calls a function with the snapshot bound;
    - ``with snap.apply():`` / ``async with snap.apply():`` binds it for a block;
    - pickling it (``multiprocessing``,
      [`ProcessPoolExecutor`][ctxlog._process.ProcessPoolExecutor]) carries
      the values to another process;
    - [`to_headers`][ctxlog.Snapshot.to_headers] / [`from_headers`][ctxlog.Snapshot.from_headers]
      carry it over the network in one
      header, [`CONTEXT_HEADER`][ctxlog.celery.CONTEXT_HEADER] (``X-Ctxlog-Context``).

    *New in version 0.1.0.*

    :raises ContextError: a key is not a non-empty string.
    """

    __slots__ = ("_data",)

    _data: dict[str, Any]

    #: The header name used by [`to_headers`][ctxlog.Snapshot.to_headers] and
    #: [`from_headers`][ctxlog.Snapshot.from_headers].
    HEADER: Final = CONTEXT_HEADER

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        data = dict(values) if values else {}
        for key in data:
            check_key(key, "Snapshot")
        _set_data(self, data)

    @classmethod
    def _of(cls, data: dict[str, Any]) -> Snapshot:
        """Wrap *data* without copying; the caller guarantees nobody mutates it."""
        snap = _new_snapshot(cls)
        _set_data(snap, data)
        return snap

    # -- the mapping -------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"ctxlog.Snapshot({self._data!r})"

    def __setattr__(self, name: str, value: object) -> None:
        msg = "ctxlog.Snapshot is immutable; take a new snapshot() instead."
        raise AttributeError(msg)

    def __delattr__(self, name: str) -> None:
        msg = "ctxlog.Snapshot is immutable."
        raise AttributeError(msg)

    # -- using it ----------------------------------------------------------

    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` with this snapshot as the bound context.

        The call runs in a private copy of the current context whose bound
        values are replaced by the snapshot's (not merged with them), so
        nothing *fn* binds, sets or clears is visible after it returns.  For an
        ``async def`` function use ``async with snap.apply():`` around the
        ``await`` instead (a coroutine runs where it is awaited).

        *New in version 0.1.0.*
        """
        return copy_context().run(call_bound, self._data, fn, args, kwargs)

    def apply(self) -> Reusable[Detached]:
        """Bind this snapshot for a ``with`` / ``async with`` block (or as a decorator).

        Inside the block the bound values are exactly the snapshot's: what was
        bound before is hidden, not merged; leaving the block restores it.
        Registered variables keep being read (a snapshot value of the same name
        wins).

        *New in version 0.1.0.*

        :raises ContextError: the block is left in another context than it was
            entered in (see [`ctxlog.isolate`][ctxlog.isolate]).
        """
        return _Applied(self._data)

    # -- copying and pickling ----------------------------------------------

    def __copy__(self) -> Snapshot:
        return self  # immutable: a copy is the same snapshot

    def __deepcopy__(self, memo: dict[int, Any]) -> Snapshot:
        return self  # the values are shared, as a snapshot shares them with the context

    def __reduce__(self) -> tuple[Any, ...]:
        # The values travel as one pickled blob, so that a value that cannot be
        # pickled is named in a ContextError here, and one that cannot be
        # unpickled on the other side fails there with a ContextError instead
        # of breaking whatever carries the snapshot (a pool's call queue).
        return (_snapshot_from_payload, (dump_payload(self._data, "raise"),))

    # -- headers -----------------------------------------------------------

    def to_headers(self) -> dict[str, str]:
        """Return the headers that carry this snapshot to another service.

        One header, [`CONTEXT_HEADER`][ctxlog.celery.CONTEXT_HEADER], holding a compact JSON object
        with
        only ASCII characters; an empty snapshot gives ``{}`` (no header).
        Values JSON cannot represent are written as ``str(value)``; tuples
        become lists, non-string mapping keys become strings, non-finite floats
        become strings (``"nan"``), and nesting deeper than
        `MAX_HEADER_DEPTH` is written as ``str()`` of the deeper value.

        *New in version 0.1.0.*

        :raises ContextError: the JSON is longer than `MAX_HEADER_SIZE`
            characters, or a key or string contains a control character (the
            receiving side would refuse it; bind something shorter or cleaner).
        """
        if not self._data:
            return {}
        text = _plain_json(self._data)
        if text is None:
            text = _general_json(self._data)
        if len(text) > MAX_HEADER_SIZE:
            return self._oversized(len(text))
        return {CONTEXT_HEADER: text}

    @staticmethod
    def _oversized(size: int) -> dict[str, str]:
        msg = (
            f"Snapshot.to_headers(): the context is {size} characters as JSON, over "
            f"the {MAX_HEADER_SIZE} that Snapshot.from_headers() accepts. Carry large "
            "values some other way and bind an id that refers to them."
        )
        raise ContextError(msg)

    @classmethod
    def from_headers(cls, headers: HeadersLike) -> Snapshot:
        """Read a snapshot from headers written by [`to_headers`][ctxlog.Snapshot.to_headers].

        *headers* is anything with ``.items()`` (``dict``, ``http.server``'s
        ``self.headers``, Starlette, requests and werkzeug headers) or an
        iterable of ``(name, value)`` pairs (ASGI ``scope["headers"]``); names
        and values may be ``str`` or ``bytes``, names match case-insensitively.
        No [`CONTEXT_HEADER`][ctxlog.celery.CONTEXT_HEADER] header gives an empty snapshot.

        Hostile input never hangs or crashes: the length is checked first, the
        nesting depth before parsing, and anything that is not what
        [`to_headers`][ctxlog.Snapshot.to_headers] writes raises.

        *New in version 0.1.0.*

        :raises ContextError: *headers* is neither a mapping nor pairs, the
            header appears more than once, is longer than
            `MAX_HEADER_SIZE`, is not ASCII, is not a JSON object, nests
            deeper than `MAX_HEADER_DEPTH`, has an empty key, or holds a
            control character or lone surrogate in a key or string.
        """
        text = _find_header(headers)
        if text is None:
            return cls._of(EMPTY)
        data = _parse_header(text)
        return cls._of(data)


# Snapshot's own __setattr__ refuses; these set its one slot directly (and fast).
_set_data: Final[Callable[[Snapshot, dict[str, Any]], None]] = Snapshot.__dict__["_data"].__set__
_new_snapshot: Final = object.__new__


def snapshot() -> Snapshot:
    """Return an immutable, picklable [`Snapshot`][ctxlog.Snapshot] of the current context.

    It holds what [`ctxlog.current`][ctxlog.current] shows: the bound values, the values
    annotated on the unit of work and the registered variables, under their
    names.  Taking it costs one ``ContextVar.get()`` (no copy: the store's
    mappings are never mutated) when there is nothing to merge.

    *New in version 0.1.0.*
    """
    # The store's own mapping, or a merged one made for this call: never mutated.
    return Snapshot._of(cast("dict[str, Any]", store.merged()))


def call_bound(data: dict[str, Any], fn: Callable[..., R], args: Any, kwargs: Any) -> R:
    """Run ``fn(*args, **kwargs)`` with *data* as the whole bound context
    (outside any unit of work); call it inside a context copy."""
    store.detach(data)
    return fn(*args, **kwargs)


def _snapshot_from_payload(payload: bytes) -> Snapshot:
    return Snapshot._of(load_payload(payload))


# -- pickling --------------------------------------------------------------


def picklable(value: Any) -> bool:
    """Whether *value* pickles."""
    try:
        pickle.dumps(value, protocol=_PICKLE_PROTOCOL)
    except Exception:  # noqa: BLE001 -- whatever pickling raises means "no"
        return False
    return True


def dump_payload(data: dict[str, Any], on_unpicklable: UnpicklablePolicy) -> bytes:
    """Pickle the context values; ``b""`` stands for an empty context."""
    # No cache keyed on the mapping: it would keep a finished request's values
    # alive, and pickling a few values costs far less than the process hop.
    if not data:
        return b""
    try:
        payload = pickle.dumps(data, protocol=_PICKLE_PROTOCOL)
    except Exception as exc:
        bad = {key: value for key, value in data.items() if not picklable(value)}
        if on_unpicklable == "str" and bad:
            return pickle.dumps(
                {k: safe_str(v) if k in bad else v for k, v in data.items()},
                protocol=_PICKLE_PROTOCOL,
            )
        names = ", ".join(f"{key!r} ({type(value).__name__})" for key, value in bad.items())
        msg = (
            f"The bound value(s) {names or '(a nested value)'} cannot be pickled, so the "
            f"context cannot reach another process ({type(exc).__name__}: {exc}). Bind a "
            "picklable value (an id or a str) instead, unbind it around the hand-over, or "
            "use ProcessPoolExecutor(on_unpicklable='str') to send str(value)."
        )
        raise ContextError(msg) from exc
    return payload


def load_payload(payload: bytes) -> dict[str, Any]:
    if not payload:
        return EMPTY
    try:
        data = pickle.loads(payload)  # noqa: S301 -- our own pickle, made by the submitting process
    except Exception as exc:
        msg = (
            f"The context sent to this process could not be unpickled "
            f"({type(exc).__name__}: {exc}). Bound values must be importable here too: "
            "bind plain values (str, int) rather than objects of classes defined in "
            "__main__ or in modules the worker cannot import."
        )
        raise ContextError(msg) from exc
    return cast("dict[str, Any]", data)


# -- JSON headers ----------------------------------------------------------
def _general_json(values: dict[str, Any]) -> str:
    """The header's JSON for any context: values converted as
    [`Snapshot.to_headers`][ctxlog.Snapshot.to_headers] says.

    :raises ContextError: a key or string holds an unsafe character, or a
        value cannot be written as JSON.
    """
    data = {key: _jsonable(value, MAX_HEADER_DEPTH - 1) for key, value in values.items()}
    bad = _find_unsafe(data)
    if bad is not None:
        msg = (
            f"Snapshot.to_headers(): {bad} contains a control character or a lone "
            "surrogate, which Snapshot.from_headers() refuses (it could forge log "
            "lines). Bind a cleaned value instead."
        )
        raise ContextError(msg)
    try:
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # an int too long to print (sys.set_int_max_str_digits)
        msg = f"Snapshot.to_headers(): a value cannot be written as JSON: {exc}"
        raise ContextError(msg) from None
    return text


#: The types a context value usually has, which JSON writes as they are.
_PLAIN_TYPES: Final = frozenset({str, int, bool, type(None)})
_encode_plain: Final = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":"), allow_nan=False
).encode


def _plain_json(data: dict[str, Any]) -> str | None:
    """The header's JSON for a context of plain values (str, int, bool,
    None) holding no unsafe character, else ``None`` (the general path).

    ASCII JSON writes every unsafe character but DEL as a backslash escape, so
    one look at the text replaces a scan of every string: a third of the cost
    of a snapshot hop for the common context.
    """
    plain = _PLAIN_TYPES
    for value in data.values():
        if type(value) not in plain:
            return None
    try:
        text: str = _encode_plain(data)
    except ValueError:  # an int too long to print: the general path says so
        return None
    if "\\" in text or "\x7f" in text:
        return None
    return text


def _jsonable(value: Any, depth: int) -> Any:
    """Convert *value* to what JSON holds; *depth* containers may still nest."""
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 0:
        if isinstance(value, Mapping):
            return {
                key if isinstance(key, str) else safe_str(key): _jsonable(item, depth - 1)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [_jsonable(item, depth - 1) for item in value]
    return safe_str(value)


def _find_unsafe(value: Any, where: str = "") -> str | None:
    """Name the first key or string in *value* with an unsafe character, if any.

    The recursion is as deep as *value*, which the callers have capped at
    `MAX_HEADER_DEPTH`.
    """
    if isinstance(value, str):
        return (where or "a value") if _UNSAFE_CHARS.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _UNSAFE_CHARS.search(key):
                return f"the key {key!r}"
            found = _find_unsafe(item, f"{where}[{key!r}]" if where else f"the value of {key!r}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_unsafe(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def _header_text(name: Any, value: Any) -> str | None:
    """*value* as text if *name* is the context header, else ``None``."""
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    if not isinstance(name, str) or name.lower() != "x-ctxlog-context":
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        msg = f"Snapshot.from_headers(): the {CONTEXT_HEADER} value must be str or bytes."
        raise ContextError(msg)
    return value


def _find_header(headers: HeadersLike) -> str | None:
    # Anything with .items() (dict, email.message.Message, werkzeug and Starlette
    # headers) gives pairs; otherwise *headers* is an iterable of pairs.
    items = getattr(headers, "items", None)
    if callable(items):
        pairs: Iterable[Any] = items()
    elif isinstance(headers, Iterable) and not isinstance(headers, str | bytes):
        pairs = headers
    else:
        msg = (
            "Snapshot.from_headers() takes a mapping or (name, value) pairs, "
            f"not {type(headers).__name__}."
        )
        raise ContextError(msg)
    found: str | None = None
    for pair in pairs:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            msg = "Snapshot.from_headers() takes a mapping or (name, value) pairs."
            raise ContextError(msg)
        text = _header_text(*pair)
        if text is None:
            continue
        if found is not None:
            msg = (
                f"Snapshot.from_headers(): the {CONTEXT_HEADER} header appears more than "
                "once; refusing to guess which one is genuine."
            )
            raise ContextError(msg)
        found = text
    return found


def _too_deep(text: str) -> bool:
    """True if *text* nests JSON containers deeper than `MAX_HEADER_DEPTH`.

    Scans before parsing, so a megabyte of ``[`` never reaches the parser's
    recursion.  Quick exit when there are not even that many opening brackets.
    """
    if text.count("[") + text.count("{") <= MAX_HEADER_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_HEADER_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _parse_header(text: str) -> dict[str, Any]:
    def refuse(why: str) -> ContextError:
        return ContextError(f"Snapshot.from_headers(): the {CONTEXT_HEADER} header {why}.")

    if len(text) > MAX_HEADER_SIZE:
        raise refuse(f"is longer than {MAX_HEADER_SIZE} characters")
    if not text.isascii():
        raise refuse("is not ASCII (Snapshot.to_headers() writes ASCII JSON)")
    if _too_deep(text):
        raise refuse(f"nests deeper than {MAX_HEADER_DEPTH} levels")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise refuse(f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise refuse(f"is not a JSON object (got {type(data).__name__})")
    if "" in data:
        raise refuse("has an empty key")
    # Raw controls inside strings are refused by the parser (strict JSON); every
    # other unsafe character is either DEL or written as a backslash escape.
    if ("\\" in text or "\x7f" in text) and (bad := _find_unsafe(data)) is not None:
        raise refuse(f"has a control character or lone surrogate in {bad}")
    return data
