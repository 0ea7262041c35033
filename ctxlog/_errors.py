"""The one exception ctxlog raises on misuse, and the key check every verb shares."""

from __future__ import annotations

__all__ = ["ContextError", "check_key"]


class ContextError(RuntimeError):
    """Raised on every misuse of the context that ctxlog detects.

    The message says what happened and how to fix it.

    .. versionadded:: 0.1.0
    """


def check_key(key: object, where: str) -> None:
    """Refuse a context key that is not a non-empty ``str``, naming the caller *where*.

    :raises ContextError: *key* is empty or not a string.
    """
    if not isinstance(key, str) or not key:
        msg = f"{where}(): context keys must be non-empty strings, got {key!r}."
        raise ContextError(msg)
