"""structlog integration: the processor, and a drop-in for `structlog.contextvars`.

``merge_context`` is a structlog processor that adds ctxlog's context to every
event dict with one ``ContextVar.get()``.  structlog's own ``merge_contextvars``
walks every ContextVar in the context on each call, so its cost grows with
everything else the application keeps in contextvars; this one does not.

The module also mirrors `structlog.contextvars` function for function
(``bind_contextvars``, ``bound_contextvars``, ``merge_contextvars``, ...),
backed by ctxlog's store: existing code switches with one import line, and a
value bound either way is seen by the structlog processor *and* by
[`ctxlog.ContextFilter`][ctxlog.ContextFilter] on stdlib records:

```python
from ctxlog.structlog import bind_contextvars, bound_contextvars, merge_contextvars
```

Importing this module imports structlog; ``import ctxlog`` never does.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

try:
    import structlog
    import structlog._config as _structlog_config
    import structlog.contextvars as _structlog_contextvars
    import structlog.processors
    import structlog.stdlib
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.structlog needs structlog (>= 23.1), which is not installed: "
        "pip install 'ctxlog-correlation[structlog]'"
    )
    raise ImportError(msg, name="structlog") from exc

from ctxlog._context import Reusable
from ctxlog._errors import ContextError, check_key
from ctxlog._projection import LINE_FIELDS, Projection, free_key, redactor_of
from ctxlog._store import UNIT_KEY, VarToken, store
from ctxlog._values import dumps_line, rfc3339
from ctxlog.stdlib import NOT_EXTRA

if TYPE_CHECKING:
    from structlog.typing import BindableLogger, EventDict, Processor, WrappedLogger

    from ctxlog._redact import Redactor

__all__ = [
    "JSON_RENDERING",
    "RESERVED_KEYS",
    "SHARED_PROCESSORS",
    "STRUCTLOG_KEY_PREFIX",
    "STRUCTLOG_KEY_PREFIX_LEN",
    "ContextVarsToken",
    "Redact",
    "TailSampling",
    "UnmergedContextWarning",
    "bind_contextvars",
    "bound_contextvars",
    "clear_contextvars",
    "get_contextvars",
    "get_merged_contextvars",
    "install",
    "installed",
    "merge_context",
    "merge_contextvars",
    "reset_contextvars",
    "unbind_contextvars",
    "uninstall",
]

P = ParamSpec("P")
R = TypeVar("R")

_MISSING: Final = object()


# --------------------------------------------------------------------------
# values bound with the real structlog.contextvars (opt-in interop)
# --------------------------------------------------------------------------

STRUCTLOG_KEY_PREFIX: Final[str] = getattr(
    _structlog_contextvars, "STRUCTLOG_KEY_PREFIX", "structlog_"
)
"""structlog's prefix for the names of its ContextVars, re-exported so code that
reads ``structlog.contextvars.STRUCTLOG_KEY_PREFIX`` keeps working.
"""
STRUCTLOG_KEY_PREFIX_LEN: Final[int] = len(STRUCTLOG_KEY_PREFIX)
"""``len(STRUCTLOG_KEY_PREFIX)``."""


def _structlog_values_from_registry(registry: Mapping[str, Any]) -> dict[str, Any]:
    """What ``structlog.contextvars.get_contextvars()`` returns, read from its registry.

    structlog keeps one ContextVar per key it ever bound in a private dict;
    reading those few variables costs O(keys structlog bound), not O(every
    ContextVar in the context) as its public scan does.
    """
    out: dict[str, Any] = {}
    cut = STRUCTLOG_KEY_PREFIX_LEN
    # tuple(): a snapshot, so a bind on another thread cannot resize the dict
    # while we iterate it.
    for name, var in tuple(registry.items()):
        if isinstance(var, ContextVar) and name.startswith(STRUCTLOG_KEY_PREFIX):
            value = var.get(...)
            if value is not ...:
                out[name[cut:]] = value
    return out


def _structlog_values_by_scan() -> dict[str, Any]:
    """structlog's own public reader; walks every ContextVar in the context."""
    return _structlog_contextvars.get_contextvars()


def _pick_structlog_reader(registry: object) -> Callable[[], dict[str, Any]]:
    if isinstance(registry, dict):
        return functools.partial(_structlog_values_from_registry, registry)
    # A structlog without the private registry: fall back to its public API.
    return _structlog_values_by_scan


_structlog_values: Final = _pick_structlog_reader(
    getattr(_structlog_contextvars, "_CONTEXT_VARS", None)
)


# --------------------------------------------------------------------------
# the processor
# --------------------------------------------------------------------------


class _ContextMerger:
    """The processor [`merge_context`][ctxlog.structlog.merge_context] returns when given
    options."""

    __slots__ = ("_projection", "structlog_contextvars")

    def __init__(self, projection: Projection, structlog_contextvars: bool) -> None:
        self._projection = projection
        self.structlog_contextvars = structlog_contextvars

    @property
    def fields(self) -> tuple[str, ...] | None:
        return self._projection.fields

    @property
    def defaults(self) -> dict[str, Any]:
        return self._projection.defaults

    def __call__(
        self,
        logger: WrappedLogger,  # noqa: ARG002 -- the structlog processor signature
        method_name: str,  # noqa: ARG002 -- same
        event_dict: EventDict,
    ) -> EventDict:
        projection = self._projection
        if self.structlog_contextvars:
            legacy = _structlog_values()
            prepared = (
                projection.prepare({**legacy, **store.merged()}) if legacy else projection.current()
            )
        else:
            prepared = projection.current()
        merged = _merge_into(event_dict, prepared)
        redactor = projection.redactor
        if redactor is not None:
            # The call's keywords and the event too (the context is redacted already,
            # once per context, by the projection).
            return _redact_event(redactor, merged)
        return merged

    def __repr__(self) -> str:
        return (
            f"ctxlog.structlog.merge_context(fields={self.fields!r}, "
            f"defaults={self.defaults!r}, "
            f"structlog_contextvars={self.structlog_contextvars!r}"
            + (
                ""
                if self._projection.redactor is None
                else f", redact={self._projection.redactor!r}"
            )
            + ")"
        )


def _merge_into(event_dict: EventDict, prepared: Mapping[str, Any]) -> EventDict:
    """Add *prepared* to *event_dict*, whose own keys win; in place, in
    structlog's key order (the event's keys, then the context)."""
    if prepared:
        # Update, then put back the event's own values if a key collided:
        # cheaper than checking each key first, and exact.
        before = {**event_dict}
        event_dict.update(prepared)
        if len(event_dict) != len(before) + len(prepared):
            event_dict.update(before)
    return event_dict


RESERVED_KEYS: Final = frozenset(
    {
        "event",
        "exc_info",
        "stack_info",
        "positional_args",
        "timestamp",
        "_record",
        "_from_structlog",
        "_logger",
        "_name",
        *LINE_FIELDS,
    }
)
"""Keys structlog's processors and renderers act on, and the names of the JSON
line: a context key of one of these names is added as ``ctx_<key>`` (bound
``exc_info=True`` would attach a traceback to every line, ``_record`` break
every call).
"""

_LINE_FIELDS: Final = LINE_FIELDS[:3]  # what _line_fields() sets
_HEAD: Final = LINE_FIELDS[:4]  # what comes first on the line


def _projection(
    fields: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    redactor: Redactor | None = None,
) -> Projection:
    return Projection(
        redactor=redactor,
        fields=fields,
        defaults=defaults,
        reserved=RESERVED_KEYS,
        reserved_are="keys structlog acts on",
        where="merge_context",
    )


#: The projection of [`merge_context`][ctxlog.structlog.merge_context] without options.
_PLAIN: Final = _projection()


@overload
def merge_context(
    logger: WrappedLogger, method_name: str, event_dict: EventDict, /
) -> EventDict: ...
@overload
def merge_context(
    *,
    fields: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    structlog_contextvars: bool = False,
    redact: Redactor | bool | None = None,
) -> Processor: ...
def merge_context(  # noqa: PLR0917 -- three positional processor args + options; see below
    logger: WrappedLogger = None,  # noqa: ARG001 -- the structlog processor signature
    method_name: str | None = None,  # noqa: ARG001 -- same
    event_dict: EventDict | None = None,
    /,
    # Not keyword-only (the overload above makes them so for type checkers):
    # filling keyword-only defaults costs a processor call about 10% more.
    fields: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    structlog_contextvars: bool = False,
    redact: Redactor | bool | None = None,
) -> EventDict | Processor:
    """A structlog processor that adds the current context to the event dict.

    Put it where ``structlog.contextvars.merge_contextvars`` stands, first in
    the chain:

    ```python
    structlog.configure(processors=[merge_context, ..., JSONRenderer()])
    ```

    It adds everything bound with [`ctxlog.bind`][ctxlog.bind] (or this module's
    ``bind_contextvars``), annotated with [`ctxlog.annotate`][ctxlog.annotate], plus
    registered ContextVars, with one ``ContextVar.get()``: its cost does not
    depend on how many other ContextVars are alive.  A key already in the
    event dict (a keyword of the log call, a value bound on the logger) wins.
    The event dict is updated in place and keeps structlog's key order: the
    event's keys, then the context.

    Called with keywords only, it returns a processor with options instead:

    *New in version 0.1.0.*

    :param fields: only these keys are added (an allow-list); default: all.
    :param defaults: values for keys that are not bound, so a field is always
        present.
    :param structlog_contextvars: also merge values bound with the *real*
        ``structlog.contextvars.bind_contextvars`` (for code that migrates
        gradually); ctxlog's value wins when both bind a key.  Costs one
        ``ContextVar.get()`` per key structlog has ever bound.
    :param redact: a [`Redactor`][ctxlog.Redactor], or ``True`` for the
        defaults: secrets in the context and in the event dict (the call's
        keywords, and with patterns the event) are replaced.  For the
        exception text too, put [`Redact`][ctxlog.structlog.Redact] after
        ``format_exc_info``.

    :raises ContextError: an option is invalid (when the processor is built).
    """
    if event_dict is None:
        return _configured(fields, defaults, structlog_contextvars, redact)
    return _merge_into(event_dict, _PLAIN.current())


def _configured(
    fields: Iterable[str] | None,
    defaults: Mapping[str, Any] | None,
    structlog_contextvars: bool,
    redact: Redactor | bool | None = None,
) -> Processor:
    redactor = redactor_of(redact, "merge_context")
    if fields is None and not defaults and not structlog_contextvars and redactor is None:
        return merge_context
    return _ContextMerger(_projection(fields, defaults, redactor), bool(structlog_contextvars))


def _redact_event(redactor: Redactor, event_dict: EventDict) -> EventDict:
    """*event_dict* with its secrets replaced; structlog's private keys
    (``_record``, ``_from_structlog``) pass as they are."""
    out: EventDict = {}
    for key, value in event_dict.items():
        if type(key) is str and key[:1] == "_":
            out[key] = value
        elif redactor.sensitive(key):
            out[key] = redactor.replacement
        else:
            out[key] = redactor.redact(value)
    return out


merge_contextvars: Final = merge_context
"""Drop-in name: ``structlog.contextvars.merge_contextvars`` reads ctxlog's store.

*New in version 0.1.0.*
"""


# --------------------------------------------------------------------------
# structlog's default chain
# --------------------------------------------------------------------------

#: structlog's own processor, as its default chain holds it.
_STRUCTLOG_MERGE: Final = _structlog_contextvars.merge_contextvars
#: What [`install`][ctxlog.structlog.install] puts in its place: ctxlog's store, and what the real
#: ``structlog.contextvars`` bound (nothing is lost; ctxlog wins a shared key).
_DEFAULT_CHAIN_MERGE: Final = _ContextMerger(_PLAIN, structlog_contextvars=True)

_install_lock = threading.Lock()
#: (list, index) and (module, name) places [`install`][ctxlog.structlog.install] changed, to undo.
_replaced_items: list[tuple[list[Any], int]] = []
_replaced_names: list[tuple[Any, str]] = []


def _default_lists() -> list[list[Any]]:
    """structlog's built-in default chain, and the chain in effect now."""
    lists = []
    builtin = getattr(_structlog_config, "_BUILTIN_DEFAULT_PROCESSORS", None)
    if isinstance(builtin, list):
        lists.append(builtin)
    config = getattr(_structlog_config, "_CONFIG", None)
    current = getattr(config, "default_processors", None)
    if isinstance(current, list) and current is not builtin:
        lists.append(current)
    return lists


def install() -> None:
    """Make structlog's *default* configuration read ctxlog's store.

    structlog's default processor chain (in effect without a
    ``structlog.configure()`` call, and again after
    ``structlog.reset_defaults()`` or ``structlog.stdlib.recreate_defaults()``)
    holds structlog's own ``merge_contextvars``, copied there when structlog
    was imported: it cannot see values bound through this module or
    [`ctxlog.bind`][ctxlog.bind].  ``install()`` puts in its place a processor that
    merges ctxlog's context *and* whatever the real ``structlog.contextvars``
    bound (nothing is lost; ctxlog's value wins a shared key): in the chain
    in effect now (changed in place, so loggers made earlier see it too) and
    in the ones those two calls rebuild.  A chain configured *later* is taken
    as written: put [`merge_context`][ctxlog.structlog.merge_context] in it, or call ``install()``
    again
    after ``structlog.configure()``, which does the same for that chain (a
    list; a tuple cannot be changed in place).

    Idempotent; [`uninstall`][ctxlog.structlog.uninstall] undoes it.

    *New in version 0.1.0.*
    """
    with _install_lock:
        _check_again()  # the chain changes in place
        for processors in _default_lists():
            for index, processor in enumerate(processors):
                if processor is _STRUCTLOG_MERGE:
                    processors[index] = _DEFAULT_CHAIN_MERGE
                    _replaced_items.append((processors, index))
        # recreate_defaults() and the config module name the function directly.
        for module in (_structlog_config, structlog.stdlib):
            if getattr(module, "merge_contextvars", None) is _STRUCTLOG_MERGE and not any(
                m is module for m, _ in _replaced_names
            ):
                module.merge_contextvars = _DEFAULT_CHAIN_MERGE  # type: ignore[attr-defined]
                _replaced_names.append((module, "merge_contextvars"))


def uninstall() -> None:
    """Undo [`install`][ctxlog.structlog.install] (a no-op when it is not in effect).

    *New in version 0.1.0.*
    """
    with _install_lock:
        _check_again()  # the chain changes in place
        # The lists changed, and the copies reset_defaults() made of them since.
        for processors in [*(p for p, _ in _replaced_items), *_default_lists()]:
            for index, processor in enumerate(processors):
                if processor is _DEFAULT_CHAIN_MERGE:
                    processors[index] = _STRUCTLOG_MERGE
        for module, name in _replaced_names:
            if getattr(module, name, None) is _DEFAULT_CHAIN_MERGE:
                setattr(module, name, _STRUCTLOG_MERGE)
        _replaced_items.clear()
        _replaced_names.clear()


def installed() -> bool:
    """Whether [`install`][ctxlog.structlog.install] is in effect.

    *New in version 0.1.0.*
    """
    return bool(_replaced_items or _replaced_names)


def _save_state() -> bool:
    """Whether [`install`][ctxlog.structlog.install] is in effect, for `_load_state` (it takes
    no options); ctxlog's pytest plugin saves it around each test."""
    return installed()


def _load_state(was_installed: bool) -> None:
    """Put back what `_save_state` returned."""
    if was_installed:
        install()
    else:
        uninstall()


# --------------------------------------------------------------------------
# values bound here that structlog's chain would never show
# --------------------------------------------------------------------------


class UnmergedContextWarning(UserWarning):
    """Values bound through this module's ``bind_contextvars`` /
    ``bound_contextvars`` are missing from structlog's lines: the processor
    chain in effect merges only structlog's own context variables (it holds
    ``structlog.contextvars.merge_contextvars`` and no
    [`merge_context`][ctxlog.structlog.merge_context]).

    Issued once per structlog configuration, at the first bind under it; the
    message names the line that fixes it, `ctxlog.structlog.install()`.
    Silence it with ``warnings.filterwarnings("ignore",
    category=ctxlog.structlog.UnmergedContextWarning)``.

    *New in version 0.1.0.*
    """


#: structlog's configuration object (private: its public reader,
#: ``structlog.get_config()``, builds a dict per call, too much for every bind).
#: Without it, nothing is checked.
_STRUCTLOG_CONFIG: Final = getattr(_structlog_config, "_CONFIG", None)

#: The chain last checked: a bind checks again only when structlog's
#: configuration holds another one (install() and uninstall() reset it, as
#: they change the chain in place).
_checked_chain: object = None


def _check_again() -> None:
    """Forget which chain was checked: the next bind checks (and may warn) again.

    ctxlog's pytest plugin calls it before each test, so that a test's
    warnings do not depend on which tests ran before it.
    """
    global _checked_chain  # noqa: PLW0603 -- see _check_chain()
    _checked_chain = None


def _check_chain(chain: object, stacklevel: int) -> None:
    """Warn (once for *chain*) when *chain* merges structlog's context variables only.

    *stacklevel* points the warning at the caller's bind.
    """
    global _checked_chain  # noqa: PLW0603 -- one check per configuration
    _checked_chain = chain
    try:
        processors = list(chain)  # type: ignore[call-overload]  # structlog takes any iterable
    except TypeError:
        return
    if not any(p is _STRUCTLOG_MERGE for p in processors) or any(
        p is merge_context or isinstance(p, _ContextMerger) for p in processors
    ):
        return
    fix = (
        "Add ctxlog.structlog.install() once at start-up, after structlog.configure() "
        "if you call it: it puts ctxlog's merge in that chain"
        if isinstance(chain, list)
        else "Put ctxlog.structlog.merge_context in place of "
        "structlog.contextvars.merge_contextvars in structlog.configure(processors=...) "
        "(ctxlog.structlog.install() cannot change a tuple in place)"
    )
    msg = (
        "Values bound through ctxlog.structlog are missing from structlog's lines: the "
        "processor chain in effect merges only structlog's own context variables "
        f"(structlog.contextvars.merge_contextvars). {fix}."
    )
    warnings.warn(msg, UnmergedContextWarning, stacklevel=stacklevel + 1)


# --------------------------------------------------------------------------
# the drop-in API of structlog.contextvars
# --------------------------------------------------------------------------


class _TokenContextError(ContextError, ValueError):
    """A token used in another context or for another key.

    Also a ``ValueError``: that is what ``ContextVar.reset`` raises for both,
    and what code written for structlog's tokens catches.
    """


class ContextVarsToken:
    """What [`bind_contextvars`][ctxlog.structlog.bind_contextvars] maps each key to; pass it to
    [`reset_contextvars`][ctxlog.structlog.reset_contextvars].

    Plays the part of the ``contextvars.Token`` that structlog returns: one
    object stands for all the keys of one ``bind_contextvars`` call, and each
    key can be reset once, in the context it was bound in.  Only
    [`bind_contextvars`][ctxlog.structlog.bind_contextvars] makes them.

    *New in version 0.1.0.*
    """

    __slots__ = ("_before", "_keys", "_set", "_token", "_used")

    _token: VarToken[dict[str, Any]]  # the store token; proves the context on reset
    _before: dict[str, Any]  # the store mapping before the bind (never mutated)
    _set: dict[str, Any]  # the store mapping the bind set
    _keys: Mapping[str, Any]  # the keys the bind bound
    _used: Collection[str] | None  # the keys already reset

    def __init__(self) -> None:
        msg = "ContextVarsToken objects come from bind_contextvars(); they are not made directly."
        raise TypeError(msg)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys the [`bind_contextvars`][ctxlog.structlog.bind_contextvars] call bound."""
        return tuple(self._keys)

    def __repr__(self) -> str:
        used = self._used or ()
        state = ", ".join(f"{k}{' (reset)' if k in used else ''}" for k in self._keys)
        return f"<ctxlog.structlog.ContextVarsToken {state}>"


# Tokens are made without calling __init__ (which refuses outside callers).
_new_token: Final = object.__new__


def bind_contextvars(**kw: Any) -> Mapping[str, ContextVarsToken]:
    """Bind *kw* in the current context (ctxlog's store): the drop-in for
    ``structlog.contextvars.bind_contextvars``.

    Later binds of the same key win; other keys are kept.  The values are seen
    by [`merge_context`][ctxlog.structlog.merge_context] and by
    [`ctxlog.ContextFilter`][ctxlog.ContextFilter] alike.
    Returns a mapping of each key to a token for
    [`reset_contextvars`][ctxlog.structlog.reset_contextvars].

    *New in version 0.1.0.*

    :raises ContextError: a key is empty.
    """
    if not kw:
        return {}
    if "" in kw:
        check_key("", "bind_contextvars")
    if _STRUCTLOG_CONFIG is not None and _STRUCTLOG_CONFIG.default_processors is not _checked_chain:
        _check_chain(_STRUCTLOG_CONFIG.default_processors, stacklevel=2)
    before = store.read()
    token: ContextVarsToken = _new_token(ContextVarsToken)
    # kw: a fresh dict that only this call holds, safe for the store to keep.
    token._token = store.bind(kw)
    token._before = before
    token._set = store.read()
    token._keys = kw
    token._used = None
    return dict.fromkeys(kw, token)


def reset_contextvars(**kw: ContextVarsToken) -> None:
    """Restore each key of *kw* to what it was before the
    [`bind_contextvars`][ctxlog.structlog.bind_contextvars]
    call that returned its token: the drop-in for
    ``structlog.contextvars.reset_contextvars``.

    Only the given keys change; whatever else was bound since stays.

    *New in version 0.1.0.*

    :raises ContextError: a token is not from
        [`bind_contextvars`][ctxlog.structlog.bind_contextvars], is
        passed under a key it did not bind, or was already used for that key.
        A token used in another context (another asyncio task, thread or
        ``contextvars.Context``) raises a ``ContextError`` that is also a
        ``ValueError``, as ``ContextVar.reset`` does.
    """
    first: ContextVarsToken | None = None
    for key, token in kw.items():
        if first is None:
            first = token
            if type(first) is not ContextVarsToken or first._used is not None:
                break
        elif token is not first:
            break
        if key not in first._keys:
            break
    else:
        if first is None:
            return
        if len(kw) == len(first._keys) and store.read() is first._set:
            # One bind, all of its keys, nothing changed since: restoring the
            # whole mapping is the same as restoring each key.
            try:
                store.restore(first._token)
            except ValueError:
                raise _other_context() from None
            first._used = first._keys
            return
    _reset_checked(kw)


def _reset_checked(kw: Mapping[str, ContextVarsToken]) -> None:
    """[`reset_contextvars`][ctxlog.structlog.reset_contextvars] beyond the common case: check each
    key, restore each."""
    for i, (key, token) in enumerate(kw.items()):
        if (
            type(token) is not ContextVarsToken
            or key not in token._keys
            or (token._used is not None and key in token._used)
        ):
            # As structlog does, key by key: the keys before this one are reset.
            _reset_each(dict(list(kw.items())[:i]))
            raise _misused(key, token)
    _reset_each(kw)


def _reset_each(kw: Mapping[str, ContextVarsToken]) -> None:
    """Restore each key of *kw*, in order, on top of what the store holds now.

    Each token must prove it belongs to this context (its store token resets);
    at the first that does not, the keys before it stay restored, as with
    structlog's one ContextVar per key, and the error is raised.
    """
    current = store.read()
    proved: list[ContextVarsToken] = []
    done: dict[str, ContextVarsToken] = {}
    for key, token in kw.items():
        if token not in proved:
            if not _proves_context(token):
                _restore_keys(current, done, proved)
                raise _other_context()
            proved.append(token)
        done[key] = token
    _restore_keys(current, done, proved)


def _proves_context(token: ContextVarsToken) -> bool:
    try:
        store.restore(token._token)
    except ValueError:
        return False
    return True


def _restore_keys(
    current: dict[str, Any], done: Mapping[str, ContextVarsToken], tokens: list[ContextVarsToken]
) -> None:
    """Set the store to *current* with each key of *done* restored; mark them used."""
    if not tokens:
        return
    new = dict(current)
    for key, token in done.items():
        old = token._before.get(key, _MISSING)
        if old is _MISSING:
            new.pop(key, None)
        else:
            new[key] = old
        used = token._used
        if not isinstance(used, set):
            used = token._used = set(used or ())
        used.add(key)
    last: VarToken[dict[str, Any]] | None = None
    for token in tokens:
        if len(token._used or ()) < len(token._keys):
            # Keys still to reset need a store token of this context to prove it.
            token._token = last = store.replace(new)
    if last is None:
        store.replace(new)


def _misused(key: str, token: object) -> ContextError:
    """The error for a token that [`reset_contextvars`][ctxlog.structlog.reset_contextvars] cannot
    use for *key*."""
    if not isinstance(token, ContextVarsToken):
        msg = (
            f"reset_contextvars({key}=...) takes the tokens bind_contextvars() "
            f"returned, not {type(token).__name__}."
        )
        return ContextError(msg)
    if key not in token._keys:
        msg = (
            f"reset_contextvars({key}=...): this token was returned for the keys "
            f"{token.keys!r}, not for {key!r}. Pass each key the token it got."
        )
        return _TokenContextError(msg)
    msg = (
        f"reset_contextvars({key}=...): this token was already used for {key!r}; "
        "a token restores a key once. Keep one reset per bind."
    )
    return ContextError(msg)


def _other_context() -> _TokenContextError:
    msg = (
        "reset_contextvars(): this token was created in a different context "
        "(another asyncio task, thread or contextvars.Context) and cannot be reset "
        "here. Reset it where bind_contextvars() was called, or use "
        "bound_contextvars() so that bind and reset always pair up."
    )
    return _TokenContextError(msg)


def unbind_contextvars(*keys: str) -> None:
    """Remove *keys* from the current context if they are there: the drop-in for
    ``structlog.contextvars.unbind_contextvars``.

    A registered ContextVar of that name is hidden too (see [`ctxlog.unbind`][ctxlog.unbind]).

    *New in version 0.1.0.*

    :raises ContextError: a key is not a non-empty string.
    """
    if not keys:
        return
    for key in keys:
        check_key(key, "unbind_contextvars")
    data = store.read()
    if not store.providers and UNIT_KEY not in data and not any(key in data for key in keys):
        return  # nothing to remove or hide
    store.hide(keys)


def clear_contextvars() -> None:
    """Empty the current context: the drop-in for ``structlog.contextvars.clear_contextvars``.

    This clears everything bound in ctxlog's store, whichever API bound it
    (``ctxlog.bind`` blocks restore their values when they exit).  Registered
    ContextVars belong to their owners and are left alone.

    *New in version 0.1.0.*
    """
    store.replace({})


def get_contextvars() -> dict[str, Any]:
    """Return a copy of the current context: the drop-in for
    ``structlog.contextvars.get_contextvars``.

    The copy holds what [`merge_context`][ctxlog.structlog.merge_context] would add: the bound
    values and
    registered ContextVars.

    *New in version 0.1.0.*
    """
    return dict(store.merged())


def get_merged_contextvars(bound_logger: BindableLogger) -> dict[str, Any]:
    """Return a copy of the current context merged with the context bound on
    *bound_logger* (which wins): the drop-in for
    ``structlog.contextvars.get_merged_contextvars``.

    *New in version 0.1.0.*
    """
    out = get_contextvars()
    out.update(structlog.get_context(bound_logger))
    return out


#: What one entry of a bound_contextvars leaves: the token of its store set,
#: the mapping from before and the mapping it bound.
_State = tuple[VarToken[dict[str, Any]], dict[str, Any], dict[str, Any]]


def _restored(
    values: Mapping[str, Any], before: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, Any]:
    """*current* with each key of *values* back to what *before* held (or removed)."""
    restored = {k: v for k, v in current.items() if k not in values}
    for key in values:
        if key in before:
            restored[key] = before[key]
    return restored


class bound_contextvars(Reusable[_State]):  # noqa: N801 -- the name of the structlog function it replaces
    """Bind *kw* for a block or for each call of a function, then restore those
    keys: the drop-in for ``structlog.contextvars.bound_contextvars``.

    On exit each key of *kw* goes back to the value it had before (or is
    removed), and nothing else changes: a key bound inside the block with
    [`bind_contextvars`][ctxlog.structlog.bind_contextvars] stays bound, as with structlog.  Works
    as
    ``with``, as ``async with``, and as a decorator on sync functions, on
    ``async def`` functions (bound around the awaited body, fresh per call) and
    on generator functions (bound for the whole iteration, in a private
    context; see [`ctxlog.isolate`][ctxlog.isolate]).  The decorator keeps the name,
    signature and docstring.

    *New in version 0.1.0.*

    :raises ContextError: a key is empty.
    """

    __slots__ = ("_values",)

    def __init__(self, **kw: Any) -> None:
        if "" in kw:
            check_key("", "bound_contextvars")
        self._values = kw
        self._entries = []

    def _push(self) -> _State:
        if (
            _STRUCTLOG_CONFIG is not None
            and _STRUCTLOG_CONFIG.default_processors is not _checked_chain
        ):
            _check_chain(_STRUCTLOG_CONFIG.default_processors, stacklevel=3)  # via __enter__
        before = store.read()
        token = store.bind(dict(self._values))
        return token, before, store.read()

    def _pop(self, entry: _State) -> None:
        token, before, bound = entry
        current = store.read()
        store.restore(token)  # raises first when the entry is another context's
        if current is not bound:
            # Something was bound inside the block: it stays, as with structlog.
            store.replace(_restored(self._values, before, current))

    def _pop_foreign(self, entry: _State, exc: BaseException | None) -> None:  # noqa: ARG002 -- nothing to raise: restoring these keys is always possible
        # Entered in another context: restore these keys here.
        store.replace(_restored(self._values, entry[1], store.read()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"ctxlog.structlog.bound_contextvars({args})"


# --------------------------------------------------------------------------
# ready-made chains for stdlib + structlog in one JSON stream
# --------------------------------------------------------------------------


def _record_extras(
    logger: WrappedLogger,  # noqa: ARG001 -- the structlog processor signature
    method_name: str,  # noqa: ARG001 -- same
    event_dict: EventDict,
) -> EventDict:
    """Add the ``extra=`` values of a stdlib record to its event dict.

    In a ``foreign_pre_chain``, before [`merge_context`][ctxlog.structlog.merge_context]: a value
    given in
    the log call wins over the context, as a structlog keyword does.  Standard
    LogRecord attributes (and ``message``/``asctime``, which another formatter
    may have set, and uvicorn's ``color_message``) are left out; so is a key
    the event dict already has (its ``event``).  structlog's own events are
    left alone: their keywords are in the event dict already, and their record
    holds structlog's private attributes (``_logger``, ``_name``).
    """
    record = _record_of(event_dict)
    if record is not None and not event_dict.get("_from_structlog"):
        for key, value in record.__dict__.items():
            if key not in NOT_EXTRA and key not in event_dict:
                event_dict[key] = value
    return event_dict


_LEVELS: Final = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
    "fatal": "CRITICAL",
}


def _record_of(event_dict: EventDict) -> logging.LogRecord | None:
    """The stdlib record ProcessorFormatter put under ``_record``, if it is one.

    type(), not isinstance(): ``_record`` may also be a keyword of the call, any
    object, even a lazy proxy whose ``__class__`` raises, and a processor must not
    raise into the call.
    """
    record = event_dict.get("_record")
    return record if issubclass(type(record), logging.LogRecord) else None


def _line_fields(
    logger: WrappedLogger,
    method_name: str,
    event_dict: EventDict,
) -> EventDict:
    """Add ``time``, ``level`` and ``logger`` as the stdlib JSON line has them
    (RFC 3339 UTC with microseconds, ``INFO``, the logger's name).

    A key of one of the line's names that the event already holds (a keyword
    of the call, an ``extra=`` value) is kept under a free ``ctx_`` name.
    """
    record = _record_of(event_dict)
    name: str | None
    if record is not None:
        created, level, name = record.created, record.levelname, record.name
    else:
        created = time.time()
        level = _LEVELS.get(method_name, method_name.upper())
        name = getattr(logger, "name", None)
    for key in _LINE_FIELDS:
        if key in event_dict:
            event_dict[free_key(key, event_dict)] = event_dict.pop(key)
    event_dict["time"] = rfc3339(created)
    event_dict["level"] = level
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def _event_to_message(
    logger: WrappedLogger,  # noqa: ARG001 -- the structlog processor signature
    method_name: str,  # noqa: ARG001 -- same
    event_dict: EventDict,
) -> EventDict:
    """Write structlog's ``event`` as ``message``, the name of the stdlib line,
    and put the line's fields first, in the stdlib line's order."""
    if "event" in event_dict:
        event = event_dict.pop("event")
        if "message" in event_dict:
            event_dict[free_key("message", event_dict)] = event_dict.pop("message")
        event_dict["message"] = event
    head = {key: event_dict.pop(key) for key in _HEAD if key in event_dict}
    head.update(event_dict)
    return head


SHARED_PROCESSORS: Final[tuple[Processor, ...]] = (
    _record_extras,
    merge_context,
    structlog.processors.StackInfoRenderer(),
    _line_fields,
)
"""The processors structlog events and stdlib records share: a stdlib record's
``extra=`` values, the context (values given in the call win), then the
line's ``time`` (RFC 3339 UTC, microseconds), ``level`` (``INFO``) and
``logger``, named and written as [`ctxlog.stdlib.json_formatter`][ctxlog.stdlib.json_formatter]
writes them.  Use it in ``structlog.configure(processors=[*SHARED_PROCESSORS,
...])`` and as the ``foreign_pre_chain`` of
``structlog.stdlib.ProcessorFormatter`` (from a dictConfig file:
``"foreign_pre_chain": "ext://ctxlog.structlog.SHARED_PROCESSORS"``).

*New in version 0.1.0.*
"""

JSON_RENDERING: Final[tuple[Processor, ...]] = (
    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
    structlog.processors.format_exc_info,
    _event_to_message,
    structlog.processors.JSONRenderer(serializer=dumps_line, ensure_ascii=False),
)
"""The ``processors`` of a ``structlog.stdlib.ProcessorFormatter`` that writes
the same JSON line as [`ctxlog.stdlib.json_formatter`][ctxlog.stdlib.json_formatter]: drops the
formatter's private keys, renders a traceback into ``exception``, writes
``event`` as ``message``, then strict JSON on one line whatever the values
(from a dictConfig file: ``"processors": "ext://ctxlog.structlog.JSON_RENDERING"``).

*New in version 0.1.0.*
"""


# --------------------------------------------------------------------------
# redaction and tail sampling
# --------------------------------------------------------------------------


class Redact:
    """A processor that replaces the secrets in the whole event dict.

    Put it after ``format_exc_info`` (so the exception text is covered) and
    before the renderer.  What it covers is what
    [`Redactor`][ctxlog.Redactor] describes: values under sensitive keys at
    any depth, and with patterns every string.  structlog's private keys
    (``_record``, ``_from_structlog``) pass as they are.

    *New in version 0.1.0.*

    :param redact: a [`Redactor`][ctxlog.Redactor], or ``True`` (the default)
        for the defaults.
    :raises ContextError: *redact* is neither.
    """

    __slots__ = ("redactor",)

    def __init__(self, redact: Redactor | bool = True) -> None:
        redactor = redactor_of(redact, "Redact")
        if redactor is None:
            msg = "Redact(redact=False): leave the processor out instead."
            raise ContextError(msg)
        self.redactor = redactor

    def __call__(
        self,
        logger: WrappedLogger,  # noqa: ARG002 -- the structlog processor signature
        method_name: str,  # noqa: ARG002 -- same
        event_dict: EventDict,
    ) -> EventDict:
        return _redact_event(self.redactor, event_dict)

    def __repr__(self) -> str:
        return f"ctxlog.structlog.Redact({self.redactor!r})"


#: structlog's method names, as levels.
_METHOD_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "failure": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class TailSampling:
    """Tail sampling for structlog: [`ctxlog.TailSamplingHandler`][ctxlog.TailSamplingHandler]'s
    rules, for events.

    Wraps the renderer and takes its place, last in the chain:

    ```python
    import structlog

    from ctxlog.structlog import TailSampling, merge_context

    structlog.configure(processors=[
        merge_context,
        structlog.processors.add_log_level,
        TailSampling(structlog.processors.JSONRenderer(), keep=0.01),
    ])
    ```

    Each event is rendered when it is logged (with the context of that
    moment); inside a unit of work, one below *hold_below* is held, and
    written through the same logger method when the unit fails (an event at
    or above *flush_on*, an exception, a 5xx response) or is kept (*keep*,
    decided from the request id; a sampled ``traceparent``), and dropped when
    the unit ends cleanly.  The level is the method's (``log.info``: INFO).
    When more than *capacity* events were held, the oldest went first and a
    ``warning`` event from ``ctxlog.sampling``, rendered by *renderer*, says
    how many.

    *New in version 0.1.0.*

    :raises ContextError: an option is invalid.
    """

    __slots__ = ("renderer", "sampler")

    def __init__(
        self,
        renderer: Processor,
        *,
        hold_below: int | str = logging.WARNING,
        flush_on: int | str = logging.ERROR,
        keep: float = 0.0,
        capacity: int = 1000,
        key: str = "request_id",
        trace_key: str = "trace_id",
    ) -> None:
        from ctxlog._sampling import Sampler  # noqa: PLC0415 -- loaded when used

        if not callable(renderer):
            msg = f"TailSampling({renderer!r}): give the renderer (a processor) to wrap."
            raise ContextError(msg)
        self.renderer = renderer
        self.sampler = Sampler(
            hold_below=hold_below,
            flush_on=flush_on,
            keep=keep,
            capacity=capacity,
            key=key,
            trace_key=trace_key,
            notice=self._notice,
            where="TailSampling",
        )

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        rendered = self.renderer(logger, method_name, event_dict)
        unit = store.unit()
        if unit is None:
            return rendered
        level = _METHOD_LEVELS.get(method_name, logging.INFO)
        held = _HeldEvent(logger, method_name, rendered)
        if self.sampler.offer(level, unit, held):
            raise structlog.DropEvent
        return rendered

    def _notice(self, dropped: int, oldest: Callable[[], None] | None) -> Callable[[], None] | None:
        if not isinstance(oldest, _HeldEvent):
            return None
        event: EventDict = {
            **oldest.ctx.run(store.merged),
            "event": (
                f"{dropped} earlier events of this unit of work were not kept "
                f"(capacity {self.sampler.capacity} per unit)"
            ),
            "level": "warning",
            "logger": "ctxlog.sampling",
        }
        rendered = oldest.ctx.run(self.renderer, oldest.logger, "warning", event)
        return _HeldEvent(oldest.logger, "warning", rendered, oldest.ctx.copy())

    def __repr__(self) -> str:
        sampler = self.sampler
        return (
            f"ctxlog.structlog.TailSampling({self.renderer!r}, "
            f"hold_below={logging.getLevelName(sampler.hold_below)!r}, "
            f"flush_on={logging.getLevelName(sampler.flush_on)!r}, keep={sampler.keep}, "
            f"capacity={sampler.capacity})"
        )


class _HeldEvent:
    """A rendered event, written later through its logger, in its context."""

    __slots__ = ("ctx", "logger", "method_name", "rendered")

    def __init__(
        self,
        logger: WrappedLogger,
        method_name: str,
        rendered: Any,
        ctx: contextvars.Context | None = None,
    ) -> None:
        self.logger = logger
        self.method_name = method_name
        self.rendered = rendered
        self.ctx = contextvars.copy_context() if ctx is None else ctx

    def __call__(self) -> None:
        self.ctx.run(self._write)

    def _write(self) -> None:
        # What structlog itself does with a processor chain's result.
        rendered = self.rendered
        method = getattr(self.logger, self.method_name)
        if isinstance(rendered, str | bytes | bytearray):
            method(rendered)
        elif isinstance(rendered, tuple):
            method(*rendered[0], **rendered[1])
        elif isinstance(rendered, dict):
            method(**rendered)
        else:
            method(rendered)
