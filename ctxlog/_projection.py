"""The projection: from the context to what a log record or event carries.

One object does it for the stdlib [`ContextFilter`][ctxlog.ContextFilter], the record
factory and the structlog processor: the ``fields`` allow-list, ``defaults``,
renaming keys that collide with the output's own names, ``nest_under``, and a
cache keyed on the identity of the store's mapping (and of the unit of work's
values), so that a record costs one ``ContextVar.get()`` and a cache check
while the context does not change.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from ctxlog._errors import ContextError, check_collection
from ctxlog._store import UNIT_KEY, Unit, store

if TYPE_CHECKING:
    from ctxlog._redact import Redactor

__all__ = [
    "LINE_FIELDS",
    "RENAME_PREFIX",
    "UNCACHED",
    "Cache",
    "ConflictPolicy",
    "Projection",
    "free_key",
    "redactor_of",
]

ConflictPolicy = Literal["rename", "drop"]

#: A context key that collides with a reserved name is kept under this prefix.
RENAME_PREFIX: Final = "ctx_"

#: The fields of every JSON line ctxlog writes, stdlib records and structlog
#: events alike, which always hold the line's own values: a context key (or an
#: ``extra=`` key) of one of these names is kept under a free ``ctx_`` name.
LINE_FIELDS: Final = ("time", "level", "logger", "message", "exception", "stack")


def free_key(key: str, taken: Container[str]) -> str:
    """``ctx_<key>``, or ``ctx_ctx_<key>`` ... : the first such name not in *taken*.

    So a renamed key never replaces another value (``bind(name=1, ctx_name=2)``
    keeps both: ``ctx_name=2`` as given, ``ctx_ctx_name=1``).
    """
    key = RENAME_PREFIX + key
    while key in taken:
        key = RENAME_PREFIX + key
    return key


_read: Final = store.read

#: What a projection's cache holds: the store's mapping, its unit or None, that
#: unit's values, the prepared attributes, the store's providers and their
#: stamp (``None`` without providers) when they were prepared.
Cache: TypeAlias = tuple[object, Unit | None, object, dict[str, Any], object, object]

#: The cache of a projection that has prepared nothing yet.
UNCACHED: Final[Cache] = (object(), None, None, {}, object(), object())


def redactor_of(redact: Redactor | bool | None, where: str) -> Redactor | None:
    """What a ``redact=`` option means (see ``ctxlog._redact.resolve_redactor``);
    without one, the redaction module is not even loaded."""
    if redact is None or redact is False:
        return None
    from ctxlog._redact import resolve_redactor  # noqa: PLC0415 -- loaded when used

    return resolve_redactor(redact, where)


class Projection:
    """Options of one reader of the context, validated once, and its cache.

    :param fields: only these keys are added (an allow-list); default: all.
    :param defaults: values for keys that are not in the context.
    :param nest_under: the one name that holds the whole mapping (the caller
        nests it); *reserved* is then not applied to the keys.
    :param on_conflict: a key in *reserved*: ``"rename"`` (kept as
        ``ctx_<key>``) or ``"drop"``.
    :param reserved: names the output owns; *reserved_are* says what they are.
    :param where: the caller's name, for error messages.
    :param redactor: replaces the secrets in what is added (once per context:
        the result is cached like the rest).

    :raises ContextError: an option is invalid.
    """

    __slots__ = (
        "_defaults",
        "cache",
        "defaults",
        "fields",
        "nest_under",
        "on_conflict",
        "redactor",
        "reserved",
    )

    def __init__(
        self,
        *,
        fields: Iterable[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        nest_under: str | None = None,
        on_conflict: ConflictPolicy = "rename",
        reserved: frozenset[str] = frozenset(),
        reserved_are: str = "names the output owns",
        where: str,
        redactor: Redactor | None = None,
    ) -> None:
        if on_conflict not in ("rename", "drop"):
            msg = f"{where}(on_conflict={on_conflict!r}): use 'rename' or 'drop'."
            raise ContextError(msg)
        check_collection(fields, "fields", where)
        if defaults is not None and not isinstance(defaults, Mapping):
            msg = f"{where}(defaults={defaults!r}): pass a mapping of keys to values."
            raise ContextError(msg)
        self.fields: tuple[str, ...] | None = None if fields is None else tuple(fields)
        self.defaults: dict[str, Any] = dict(defaults or {})
        for key in (*(self.fields or ()), *self.defaults):
            if not isinstance(key, str) or not key:
                msg = f"{where}(): keys must be non-empty strings, got {key!r}."
                raise ContextError(msg)
        if nest_under is not None and (not isinstance(nest_under, str) or not nest_under):
            msg = f"{where}(nest_under={nest_under!r}): give a non-empty attribute name."
            raise ContextError(msg)
        if nest_under in reserved:
            msg = (
                f"{where}(nest_under={nest_under!r}): {nest_under!r} is one of the "
                f"{reserved_are}; choose another name, such as 'context'."
            )
            raise ContextError(msg)
        self.nest_under = nest_under
        self.on_conflict: ConflictPolicy = on_conflict
        self.reserved = frozenset() if nest_under is not None else reserved
        # The defaults under the names they land as.  A default applies to its
        # key whether or not the key is in *fields*: a format that names it
        # (``%(request_id)s``) must never fail.
        self.redactor = redactor
        self._defaults = self._renamed(self.defaults)
        self.cache: Cache = UNCACHED

    def _renamed(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """*data* with reserved keys renamed (`free_key`) or dropped; a
        renamed key never overwrites another key."""
        reserved = self.reserved
        if reserved.isdisjoint(data):
            return dict(data)
        out = {key: value for key, value in data.items() if key not in reserved}
        if self.on_conflict == "rename":
            for key, value in data.items():
                if key in reserved:
                    out[free_key(key, data.keys() | out.keys())] = value
        return out

    def prepare(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """What this projection adds for the context *data* (never mutate it)."""
        if self.fields is None:
            selected: Mapping[str, Any] = data
        else:
            selected = {key: data[key] for key in self.fields if key in data}
        out = self._renamed(selected)
        for key, value in self._defaults.items():
            out.setdefault(key, value)
        if self.redactor is not None:
            return self.redactor.redact_mapping(out)
        return out

    def current(self) -> dict[str, Any]:
        """`prepare` of the current context, from the cache while it holds."""
        raw = _read()
        providers = store.providers
        # Providers (ctxlog.otel's span ids) are asked for their stamp, not
        # their values: one call while the span stays the same.
        stamp = store.stamp() if providers else None
        cache = self.cache
        if cache[0] is raw and cache[4] is providers and cache[5] is stamp:
            unit = cache[1]
            if unit is None or unit.values is cache[2]:
                return cache[3]
        unit = raw.get(UNIT_KEY)
        # The unit's values are read before the merge: if another thread
        # annotates meanwhile, the cache misses next time instead of serving
        # the older values.
        values = None if unit is None else unit.values
        out = self.prepare(store.merged(raw))
        self.cache = (raw, unit, values, out, providers, stamp)
        return out

    def describe(self) -> str:
        text = (
            f"fields={self.fields!r}, defaults={self.defaults!r}, "
            f"nest_under={self.nest_under!r}, on_conflict={self.on_conflict!r}"
        )
        if self.redactor is not None:
            text += f", redact={self.redactor!r}"
        return text
