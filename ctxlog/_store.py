"""The store: the one ContextVar behind every log line, and the verbs that use it.

Everything ctxlog knows about "the current work" lives in one
`contextvars.ContextVar` holding a ``dict`` that is never mutated once
it is set (copy-on-write), so reading the whole context is one
``ContextVar.get()`` whatever else lives in the process's contexts, and a
reader can cache work keyed on the dict's identity.

Nothing outside this module touches that variable.  The API, one object
(`store`) with a handful of verbs, is what the rest of ctxlog (the
public functions, the logging filter, the structlog processor, the
middlewares, Celery, OpenTelemetry) calls:

========================  ====================================================
``read()``                the raw mapping (for identity caches)
``write(raw)``            set a raw mapping built from ``read()`` (hot paths)
``merged()``              the whole context: bound + unit + providers
``value(key, default)``   one key of it
``bind(values)``          bind over the current mapping; returns a token
``hide(keys)``            bind with *keys* hidden; returns a token
``replace(mapping)``      set a whole new mapping; returns a token
``detach(mapping)``       the same, outside any unit; ``reattach()`` undoes it
``restore(token)``        undo a ``bind``/``hide``/``replace``
``open_unit(...)``        open a unit of work; ``close_unit(entry)`` ends it
``leave_unit(entry)``     restore what was there, the unit left open (``end``)
``unit()``                the innermost open unit of work, or ``None``
``annotate(values)``      add request-wide values to the innermost unit
``fail(unit)``            mark a unit of work as failed (an error, a 5xx)
``on_end(unit, fn)``      call *fn* once when the unit ends
``add_provider(...)``     merge a foreign ContextVar or a computed value
``remove_provider(...)``  stop merging it
``stamp``                 how a reader tells the providers' values are unchanged
``set_trace_source(fn)``  where ``outgoing_headers()`` takes trace flags from
``save()``/``load(s)``    the process-wide state, for test isolation
========================  ====================================================

The unit of work (`Unit`) rides in the mapping under the one key no
caller can bind, the empty string: every bind carries it along at no cost,
and context copies made earlier (a thread pool's, a thread's) still reach it.
Its values live in the unit object, not in the mapping, which is what lets a
value annotated in one copy reach all the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from contextvars import Token as VarToken
from typing import Any, Final, Protocol, TypeAlias

from ctxlog._errors import ContextError
from ctxlog._memo import MEMO, close_scope, new_scope

__all__ = [
    "EMPTY",
    "HIDDEN",
    "MISSING",
    "UNIT",
    "UNIT_KEY",
    "Detached",
    "Provider",
    "Store",
    "Unit",
    "UnitEntry",
    "VarToken",
    "never_same",
    "store",
]

#: The mapping of an empty context (shared; never mutated).
EMPTY: Final[dict[str, Any]] = {}

#: The key the innermost unit of work is stored under: ``check_key`` refuses
#: it, so no bound value can ever collide with it.
UNIT_KEY: Final = ""

_VAR: Final[ContextVar[dict[str, Any]]] = ContextVar("ctxlog", default=EMPTY)

#: Serializes annotate() across all units of work.
_ANNOTATE: Final = threading.Lock()


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"<ctxlog {self._name}>"


#: Stands for a key hidden by ``unbind()``: it shadows a unit's or a provider's value.
HIDDEN: Final = _Marker("hidden")
#: "No value": what a provider answers when it has none (cheaper than raising).
MISSING: Final = _Marker("missing")


class Provider(Protocol):
    """What the store merges besides bound values: a ContextVar, or an object
    whose ``get()`` computes the value now, or returns `MISSING`.

    A provider may also have a ``stamp`` attribute: a function returning an
    object that stays the same (``is``) for as long as ``get()`` would return
    the same value (``ctxlog.otel``'s: OpenTelemetry's current context, which
    is never changed once made).  When every provider has one, readers cache
    on it (see `Store.stamp`) instead of asking each provider per read.
    """

    def get(self) -> Any: ...


def never_same() -> object:
    """The stamp of providers that cannot say their values are unchanged:
    never the same twice, so nothing is cached on it."""
    return object()


def _stamp_of(providers: tuple[tuple[Provider, str], ...]) -> Callable[[], object]:
    """The one stamp function all *providers* share, else `never_same`."""
    found: Callable[[], object] = never_same
    for source, _ in providers:
        stamp: Callable[[], object] | None = getattr(source, "stamp", None)
        if stamp is None or (found is not never_same and stamp is not found):
            # Several stamps would need a tuple per read, never `is` the last
            # one: such a set of providers is read uncached.
            return never_same
        found = stamp
    return found


class Unit:
    """One unit of work (a request, a task, a job): its request-wide values,
    its memoize cache and the trace flags of its incoming request.

    ``values`` is a dict that is never mutated: `Store.annotate`
    replaces it under one lock (annotations are rare; a lock per unit would
    cost every request), so readers need no lock and may cache on its
    identity.
    """

    __slots__ = (
        "__weakref__",
        "ending",
        "failed",
        "kept",
        "memo",
        "open",
        "trace_flags",
        "values",
    )

    def __init__(self, values: dict[str, Any], trace_flags: str | None) -> None:
        self.values = values
        self.trace_flags = trace_flags
        self.memo = new_scope()
        self.open = True
        #: Set by `Store.fail`: the work ended in an error (an exception,
        #: a 5xx response, a failed task).  Read by what `Store.on_end` calls.
        self.failed = False
        #: What `Store.on_end` registered; ``None`` (the common case) when nothing.
        self.ending: list[Callable[[Unit], None]] | None = None
        #: What others keep for this unit, by owner (tail sampling's held lines):
        #: it lives and goes with the unit.  ``None`` when nothing.
        self.kept: dict[object, Any] | None = None

    def __repr__(self) -> str:
        state = "open" if self.open else "closed"
        return f"<ctxlog unit of work ({state}) {self.values!r}>"


#: What `Store.open_unit` returns, for `Store.close_unit`: the
#: store's token, the memoize cache's token, and the unit (``entry[UNIT]``).
#: A plain tuple: one is made for every request.
UnitEntry: TypeAlias = tuple[VarToken[dict[str, Any]], VarToken[Any], Unit]

#: The index of the unit in a `UnitEntry`.
UNIT: Final = 2


# Plain classes, not NamedTuples: on Python 3.15 the first NamedTuple made
# loads annotationlib and ast, most of what `import ctxlog` cost there.


class Detached:
    """What `Store.detach` returns, for `Store.reattach`."""

    __slots__ = ("memo_token", "token")

    def __init__(self, token: VarToken[dict[str, Any]], memo_token: VarToken[Any]) -> None:
        self.token = token
        self.memo_token = memo_token


class _State:
    __slots__ = ("hiding", "providers", "trace_source")

    def __init__(
        self,
        providers: tuple[tuple[Provider, str], ...],
        hiding: bool,
        trace_source: Callable[[str], str | None] | None,
    ) -> None:
        self.providers = providers
        self.hiding = hiding
        self.trace_source = trace_source

    def _fields(self) -> tuple[object, ...]:
        return (self.providers, self.hiding, self.trace_source)

    def __eq__(self, other: object) -> bool:
        # Saved states compare by what they hold (the test plugin compares them).
        return isinstance(other, _State) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())


class Store:
    """The verbs over the one ContextVar; `store` is the only instance."""

    __slots__ = ("_lock", "hiding", "providers", "stamp", "trace_source")

    #: The raw mapping: bound values, the unit under `UNIT_KEY`, and
    #: `HIDDEN` markers.  Never mutate it.  Use `merged` for the
    #: context itself; this is for readers that cache on its identity.
    read = staticmethod(_VAR.get)

    #: Set the raw mapping as it is: the one write under [`bind`][ctxlog.bind], for the
    #: hot path that writes [`bind`][ctxlog.bind] out (``ctxlog.bind``).  The caller
    #: builds the mapping from `read`, so the unit of work rides along.
    write = staticmethod(_VAR.set)

    #: Undo what the ``bind``/``hide``/``replace`` that returned *token* did.
    #: Raises what ``ContextVar.reset`` raises: ``ValueError`` for a token of
    #: another context, ``RuntimeError`` for one used already.
    restore = staticmethod(_VAR.reset)

    def __init__(self) -> None:
        #: (provider, name) pairs merged into every read; replaced, never mutated.
        self.providers: tuple[tuple[Provider, str], ...] = ()
        #: The function whose result is the same object (``is``) for as long
        #: as every provider's value stays the same, so that a reader may
        #: cache what it made of the context on (mapping, ``providers``, stamp);
        #: `never_same` when some provider cannot say (a registered
        #: ContextVar).  Set before ``providers``: read it after them.
        self.stamp: Callable[[], object] = never_same
        #: True once a HIDDEN marker was stored: readers then remove markers.
        self.hiding = False
        #: ``trace_id -> flags or None``: set by ``ctxlog.otel``.
        self.trace_source: Callable[[str], str | None] | None = None
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------

    def merged(self, raw: dict[str, Any] | None = None) -> Mapping[str, Any]:
        """The whole context (of *raw*, default the current mapping): the
        providers' values, under the unit's values, under the bound values.

        Returns *raw* itself when there is nothing to merge: callers must not
        mutate the result.
        """
        data = _VAR.get() if raw is None else raw
        if not self.providers and not self.hiding and UNIT_KEY not in data:
            return data
        return self._merge(data)

    def _merge(self, data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for source, name in self.providers:
            if name in data:
                continue
            # No get(default): an explicit default would shadow the variable's own.
            try:
                value = source.get()
            except LookupError:
                continue
            if value is not MISSING:
                out[name] = value
        unit = data.get(UNIT_KEY)
        if unit is not None:
            out.update(unit.values)
        out.update(data)
        out.pop(UNIT_KEY, None)
        if self.hiding:
            # Identity checks only: a bound value's __eq__ must never run here.
            return {k: v for k, v in out.items() if v is not HIDDEN}
        return out

    def value(self, key: str, default: Any = None) -> Any:
        """One key of `merged`, without building it."""
        data = _VAR.get()
        value = data.get(key, MISSING) if key else MISSING
        if value is HIDDEN:
            return default
        if value is not MISSING:
            return value
        unit = data.get(UNIT_KEY)
        if unit is not None:
            value = unit.values.get(key, MISSING)
            if value is not MISSING:
                return value
        for source, name in self.providers:
            if name == key:
                try:
                    value = source.get()
                except LookupError:
                    return default
                return default if value is MISSING else value
        return default

    def unit(self) -> Unit | None:
        """The innermost unit of work of the current context, or ``None``."""
        unit: Unit | None = _VAR.get().get(UNIT_KEY)
        return unit

    # -- writing -----------------------------------------------------------

    def bind(self, values: dict[str, Any]) -> VarToken[dict[str, Any]]:
        """Bind *values* over the current mapping; *values* (checked keys, a
        dict nobody mutates afterwards) may become the stored mapping itself."""
        old = _VAR.get()
        return _VAR.set({**old, **values} if old else values)

    def hide(self, keys: Iterable[str]) -> VarToken[dict[str, Any]]:
        """Bind a mapping in which *keys* are hidden: removed, and shadowed
        (a `HIDDEN` marker) where a unit or a provider may supply them."""
        old = _VAR.get()
        keys = frozenset(keys)
        new = {k: v for k, v in old.items() if k not in keys}
        shadowed = keys if UNIT_KEY in old else keys & {name for _, name in self.providers}
        if shadowed:
            self.hiding = True
            new.update(dict.fromkeys(shadowed, HIDDEN))
        return _VAR.set(new)

    def replace(self, mapping: Mapping[str, Any]) -> VarToken[dict[str, Any]]:
        """Make *mapping* the whole bound context; the unit of work stays."""
        new = dict(mapping)
        new.pop(UNIT_KEY, None)
        unit = _VAR.get().get(UNIT_KEY)
        if unit is not None:
            new[UNIT_KEY] = unit
        return _VAR.set(new or EMPTY)

    def detach(self, mapping: Mapping[str, Any]) -> Detached:
        """Make *mapping* the whole context, outside any unit of work (its
        values and its memoize cache out of reach) until `reattach`."""
        new = dict(mapping)
        new.pop(UNIT_KEY, None)
        return Detached(_VAR.set(new or EMPTY), MEMO.set(None))

    def reattach(self, detached: Detached) -> None:
        """Undo `detach`.  Raises what `restore` raises, before
        changing anything."""
        _VAR.reset(detached.token)
        MEMO.reset(detached.memo_token)

    # -- units of work -----------------------------------------------------

    def open_unit(
        self,
        values: Mapping[str, Any],
        *,
        drop: Iterable[str] = (),
        fresh: bool = False,
        trace_flags: str | None = None,
    ) -> UnitEntry:
        """Open a unit of work and bind *values* over the current mapping.

        *drop*: keys removed first (a middleware's managed keys, never assumed
        absent).  *fresh*: start from nothing instead (a worker's task).  A
        unit opened inside another starts with the outer unit's values.
        """
        old = EMPTY if fresh else _VAR.get()
        outer = old.get(UNIT_KEY)
        unit = Unit(dict(outer.values) if outer is not None else {}, trace_flags)
        if drop and old:
            dropped = frozenset(drop)
            new = {k: v for k, v in old.items() if k not in dropped}
            new.update(values)
        else:
            new = {**old, **values}
        new[UNIT_KEY] = unit
        return _VAR.set(new), MEMO.set(unit.memo), unit

    def close_unit(self, entry: UnitEntry) -> None:
        """End the unit: restore what was there, drop its values and its cache.

        Raises ``ValueError`` (nothing changed) when *entry* belongs to another
        context, as `restore` does.
        """
        token, memo_token, unit = entry
        _VAR.reset(token)
        MEMO.reset(memo_token)
        self.end(unit)

    def leave_unit(self, entry: UnitEntry) -> None:
        """Restore what was there before the unit was opened, and leave the unit
        open: it lives on in the copies of the context made while it was (the
        one a streamed response body is produced in), until `end`.

        Raises ``ValueError`` (nothing changed) when *entry* belongs to another
        context, as `restore` does.
        """
        token, memo_token, _ = entry
        _VAR.reset(token)
        MEMO.reset(memo_token)

    def end(self, unit: Unit) -> None:
        """Drop *unit*'s values and cache without restoring the context (a
        context that is being thrown away, or that cannot be restored here),
        then call what `on_end` registered, once."""
        with _ANNOTATE:  # annotate() and on_end() check `open` under it
            was_open = unit.open
            unit.open = False
            ending = unit.ending
            unit.ending = None
        close_scope(unit.memo)
        if was_open and ending is not None:
            for fn in ending:
                _call_ending(fn, unit)

    def fail(self, unit: Unit | None = None) -> None:
        """Mark *unit* (default: the innermost unit of the current context) as
        failed; nothing happens outside any unit."""
        if unit is None:
            unit = _VAR.get().get(UNIT_KEY)
            if unit is None:
                return
        unit.failed = True

    def on_end(self, unit: Unit, fn: Callable[[Unit], None]) -> bool:
        """Call *fn(unit)* once when *unit* ends (after its context is restored).

        Returns ``False``, registering nothing, when the unit has ended already.
        An exception *fn* raises is reported on ``sys.stderr``, never raised.
        """
        with _ANNOTATE:
            if not unit.open:
                return False
            if unit.ending is None:
                unit.ending = [fn]
            else:
                unit.ending.append(fn)
        return True

    def annotate(self, values: Mapping[str, Any]) -> Unit | None:
        """Add *values* to the innermost open unit; ``None`` when there is none."""
        unit: Unit | None = _VAR.get().get(UNIT_KEY)
        if unit is None:
            return None
        with _ANNOTATE:
            if not unit.open:
                return unit
            unit.values = {**unit.values, **values}
        return unit

    # -- providers ---------------------------------------------------------

    def add_provider(self, source: Provider, name: str, where: str) -> None:
        """Merge *source* under *name*; registering it again renames it.

        :raises ContextError: *name* is used by another provider.
        """
        with self._lock:
            for other, other_name in self.providers:
                if other_name == name and other is not source:
                    msg = (
                        f"{where}(): the name {name!r} is already used by another registered "
                        f"ContextVar or provider ({other!r}). Pass a different name, or "
                        "unregister that one first."
                    )
                    raise ContextError(msg)
            kept = tuple((s, n) for s, n in self.providers if s is not source)
            self._set_providers((*kept, (source, name)))

    def remove_provider(self, source: Provider, where: str) -> None:
        """Stop merging *source*.

        :raises ContextError: *source* is not merged.
        """
        with self._lock:
            kept = tuple((s, n) for s, n in self.providers if s is not source)
            if len(kept) == len(self.providers):
                msg = f"{where}(): {source!r} is not registered with ctxlog.register()."
                raise ContextError(msg)
            self._set_providers(kept)

    def _set_providers(self, providers: tuple[tuple[Provider, str], ...]) -> None:
        # The stamp first: a reader that sees the new providers never pairs
        # them with the stamp of the old ones.
        self.stamp = _stamp_of(providers)
        self.providers = providers

    def provider_names(self) -> frozenset[str]:
        """The names the providers' values are merged under."""
        return frozenset(name for _, name in self.providers)

    # -- trace flags -------------------------------------------------------

    def set_trace_source(self, source: Callable[[str], str | None] | None) -> None:
        """Where `trace_flags` looks first (``None``: nowhere)."""
        self.trace_source = source

    def trace_flags(self, trace_id: str) -> str:
        """The W3C trace flags to send on for *trace_id*: the trace source's
        (an active OpenTelemetry span), else the incoming request's, else ``01``."""
        source = self.trace_source
        if source is not None:
            flags = source(trace_id)
            if flags is not None:
                return flags
        unit: Unit | None = _VAR.get().get(UNIT_KEY)
        if unit is not None and unit.trace_flags is not None:
            return unit.trace_flags
        return "01"

    # -- process-wide state ------------------------------------------------

    def save(self) -> object:
        """The process-wide state (providers, markers, the trace source)."""
        return _State(self.providers, self.hiding, self.trace_source)

    def load(self, state: object) -> None:
        """Restore what `save` returned."""
        if not isinstance(state, _State):
            msg = f"Store.load() takes what Store.save() returned, not {type(state).__name__}."
            raise TypeError(msg)
        with self._lock:
            self._set_providers(state.providers)
            self.hiding, self.trace_source = state.hiding, state.trace_source


def _call_ending(fn: Callable[[Unit], None], unit: Unit) -> None:
    try:
        fn(unit)
    except Exception:  # noqa: BLE001 -- ending a unit never fails the request
        import sys  # noqa: PLC0415 -- only on this rare path
        import traceback  # noqa: PLC0415 -- same

        sys.stderr.write(f"ctxlog: {fn!r} failed when a unit of work ended:\n")
        traceback.print_exc(file=sys.stderr)


#: The store.
store: Final = Store()
