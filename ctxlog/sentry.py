"""Sentry: the context of where an event was captured, on the event.

`ContextIntegration` goes in ``sentry_sdk.init(integrations=[...])``.  It
adds one event processor, which Sentry runs where the event is captured (in
the thread or task that calls ``capture_exception``, ``capture_message`` or
logs the error its logging integration turns into an event), so the values
on the event are the ones in force there: also in threads, pools and tasks
ctxlog handed the work to.

sentry-sdk is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

try:
    import sentry_sdk
    from sentry_sdk.integrations import Integration
    from sentry_sdk.scope import add_global_event_processor
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.sentry needs sentry-sdk (>= 2.0), which is not installed: "
        "pip install 'ctxlog-correlation[sentry]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._errors import ContextError, check_collection, check_key
from ctxlog._redact import Redactor, resolve_redactor
from ctxlog._store import store
from ctxlog._values import outbound

if TYPE_CHECKING:
    from sentry_sdk._types import Event

__all__ = ["ContextIntegration"]

#: The longest tag value Sentry keeps.
_TAG_VALUE_LENGTH: Final = 200


class ContextIntegration(Integration):
    """Put the bound context on every Sentry event: the request id as a tag,
    everything under ``contexts["ctxlog"]``.

    ```python
    sentry_sdk.init(dsn=..., integrations=[ctxlog.sentry.ContextIntegration()])
    ```

    Every event (a captured exception, a captured message, an error the
    logging integration reports) gets, as they are where it was captured:

    * ``contexts[context_name]``: the merged context ([`current`][ctxlog.current]),
      or only *fields* of it; values are made safe as on ctxlog's JSON lines
      (nested mappings and sequences keep their shape, other objects become
      text, nothing raises);
    * a tag for each of *tags* that is bound (default: ``request_id``), when
      its value is text or a number that makes a valid tag (printable, at
      most 200 characters).  A tag the event already has (``sentry_sdk.set_tag``)
      is kept.

    Nothing is added to an event captured with no context bound.

    *New in version 0.1.0.*

    :param tags: the keys to set as tags.
    :param context_name: the name of the event context holding the values.
    :param fields: only these keys go into that context (default: all).
    :param redact: a [`Redactor`][ctxlog.Redactor], or ``True`` for the
        defaults: the secrets in the context and the tags are replaced.
    :raises ctxlog.ContextError: an option is invalid.
    """

    identifier = "ctxlog"

    def __init__(
        self,
        *,
        tags: Iterable[str] = ("request_id",),
        context_name: str = "ctxlog",
        fields: Iterable[str] | None = None,
        redact: Redactor | bool | None = None,
    ) -> None:
        where = "ctxlog.sentry.ContextIntegration"
        self.redactor = resolve_redactor(redact, where)
        check_collection(tags, "tags", where)
        check_collection(fields, "fields", where)
        self.tags = tuple(tags)
        self.fields = None if fields is None else frozenset(fields)
        for key in (*self.tags, *(self.fields or ())):
            check_key(key, where)
        if not isinstance(context_name, str) or not context_name:
            msg = f"{where}(context_name={context_name!r}): give a non-empty name."
            raise ContextError(msg)
        self.context_name = context_name

    @staticmethod
    def setup_once() -> None:
        """Register the event processor (Sentry calls this once per process)."""
        add_global_event_processor(_add_context)


def _add_context(event: Event, hint: dict[str, Any]) -> Event:  # noqa: ARG001 -- Sentry passes the hint
    """The event processor: runs where the event is captured."""
    try:
        integration = sentry_sdk.get_client().get_integration(ContextIntegration)
        if integration is None:
            return event
        context = store.merged()
        if not context:
            return event
        fields = integration.fields
        chosen = context if fields is None else {k: v for k, v in context.items() if k in fields}
        redactor = integration.redactor
        values = outbound(chosen, redactor)
        if values:
            event.setdefault("contexts", {})[integration.context_name] = values
        tags = event.setdefault("tags", {})
        for key in integration.tags:
            if key in context and key not in tags:
                tag = _tag_value(outbound({key: context[key]}, redactor)[key])
                if tag is not None:
                    tags[key] = tag
    except Exception:  # noqa: BLE001 -- a broken value must never cost the event
        return event
    return event


def _tag_value(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    if not text or len(text) > _TAG_VALUE_LENGTH or not text.isprintable():
        return None
    return text
