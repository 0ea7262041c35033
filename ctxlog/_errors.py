"""The one exception ctxlog raises on misuse, and the key check every verb shares."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ContextError", "check_collection", "check_flag", "check_key", "check_no_options"]


class ContextError(RuntimeError):
    """Raised on every misuse of the context that ctxlog detects.

    The message says what happened and how to fix it.

    *New in version 0.1.0.*
    """

    # Where users import it from: tracebacks say ctxlog.ContextError, and
    # pickle (a process pool handing the error back) finds it there too.
    __module__ = "ctxlog"


def check_key(key: object, where: str) -> None:
    """Refuse a context key that is not a non-empty ``str``, naming the caller *where*.

    :raises ContextError: *key* is empty or not a string.
    """
    if not isinstance(key, str) or not key:
        msg = f"{where}(): context keys must be non-empty strings, got {key!r}."
        raise ContextError(msg)


def check_flag(value: object, option: str, where: str) -> None:
    """Refuse an on/off option that is not a ``bool`` (``"no"`` would be true).

    :raises ContextError: *value* is not ``True`` or ``False``.
    """
    if not isinstance(value, bool):
        msg = f"{where}({option}={value!r}): give True or False."
        raise ContextError(msg)


def check_collection(value: object, option: str, where: str) -> None:
    """Refuse a string where a collection of names is wanted (``fields="id"``
    would be read as the names ``i`` and ``d``).

    :raises ContextError: *value* is a ``str``.
    """
    if isinstance(value, str):
        msg = (
            f"{where}({option}={value!r}): pass a collection, e.g. {option}=[{value!r}], "
            "not a string."
        )
        raise ContextError(msg)


def check_no_options(unknown: Mapping[str, object], where: str, known: tuple[str, ...]) -> None:
    """Refuse the options *where* does not take (a typo in a ``dictConfig``
    entry), naming the closest known one: ``dictConfig`` itself only says
    "Unable to configure filter", with this error as its cause.

    :raises ContextError: *unknown* is not empty.
    """
    if not unknown:
        return
    import difflib  # noqa: PLC0415 -- only on the way to an error

    given = sorted(unknown)
    hints = [
        f"{match[0]!r} for {name!r}"
        for name in given
        if (match := difflib.get_close_matches(name, known, n=1))
    ]
    names = ", ".join(repr(name) for name in given)
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    msg = (
        f"{where}() got unknown options: {names}{hint}. Its options are "
        f'{", ".join(known)}; in a dictConfig entry, every key besides "()" is one of them.'
    )
    raise ContextError(msg)
