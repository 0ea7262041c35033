"""Redaction: no secret in a log line, whichever way it came in.

One [`Redactor`][ctxlog.Redactor] serves every output: the filter and the
record factory (through the projection, so a context's redacted values are
computed once per context, not once per record), the JSON formatter (the whole
line: context, ``extra=`` values, the message and the exception text), the
structlog processors, the OpenTelemetry logs handler and the Sentry context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias

from ctxlog._errors import ContextError
from ctxlog._values import json_safe

__all__ = [
    "BEARER_TOKEN",
    "CARD_NUMBER",
    "DEFAULT_SENSITIVE_KEYS",
    "JWT",
    "Pattern",
    "Redactor",
    "resolve_redactor",
]

#: The keys whose values are replaced by default, compared after
#: [`normalize_key`][ctxlog._redact.normalize_key] (case and ``-``/``_`` do not matter).
#:
#: *New in version 0.1.0.*
DEFAULT_SENSITIVE_KEYS: Final[frozenset[str]] = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "session",
        "sessionid",
        "private_key",
        "client_secret",
        "credit_card",
        "card_number",
    }
)

#: How deep the redactor follows mappings and sequences; what lies deeper is
#: replaced whole (a secret may be down there).
_MAX_DEPTH: Final = 32
#: How many key verdicts one redactor remembers (keys are few; a flood of
#: distinct keys costs the normalization, never memory).
_MAX_VERDICTS: Final = 4096
#: Values that hold no key and, without patterns, nothing to replace.
_SCALARS: Final = frozenset({str, int, float, bool})


def normalize_key(key: object) -> str:
    """A key as it is compared: lower case, ``-`` and spaces read as ``_``."""
    text = key if isinstance(key, str) else str(key)
    return text.lower().replace("-", "_").replace(" ", "_")


class Pattern:
    """A regular expression whose matches are replaced inside every string,
    with an optional *check* that a match must pass to be replaced.

    ```python
    import re

    from ctxlog import Pattern

    # Replace a match only when the check agrees (here: an even number).
    EVEN = Pattern(r"\\b\\d+\\b", check=lambda text: int(text) % 2 == 0)
    ```

    *New in version 0.1.0.*

    :raises ContextError: *regex* is not a string or a compiled pattern, or
        *check* is not callable.
    """

    __slots__ = ("check", "regex")

    def __init__(
        self, regex: str | re.Pattern[str], *, check: Callable[[str], bool] | None = None
    ) -> None:
        if isinstance(regex, str):
            regex = re.compile(regex)
        if not isinstance(regex, re.Pattern) or not isinstance(regex.pattern, str):
            msg = f"Pattern({regex!r}): give a regular expression (str or re.Pattern[str])."
            raise ContextError(msg)
        if check is not None and not callable(check):
            msg = f"Pattern(check={check!r}): give a function of the matched text, or None."
            raise ContextError(msg)
        self.regex: re.Pattern[str] = regex
        self.check = check

    def __repr__(self) -> str:
        return f"ctxlog.Pattern({self.regex.pattern!r}, check={self.check!r})"


def _luhn(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if i % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


#: ``Bearer <token>`` (an ``Authorization`` header's value written into a message).
#:
#: *New in version 0.1.0.*
BEARER_TOKEN: Final = Pattern(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*")

#: A JSON Web Token: three base64url parts, the first one a JSON header (``eyJ``).
#:
#: *New in version 0.1.0.*
JWT: Final = Pattern(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

#: A payment card number (13 to 19 digits, spaces or dashes between them) that
#: passes the Luhn check; other long numbers (order ids, timestamps) stay.
#:
#: *New in version 0.1.0.*
CARD_NUMBER: Final = Pattern(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", check=_luhn)

PatternLike: TypeAlias = "str | re.Pattern[str] | Pattern"


class Redactor:
    """Replaces secrets in what a log line holds.

    - A value under a sensitive key is replaced whole (it may be a mapping or
      a list), at any depth of mappings and sequences.  Keys compare without
      regard to case, and ``-`` reads as ``_`` (``Set-Cookie`` is
      ``set_cookie``).
    - Each of *patterns* is replaced inside every string: values at any depth,
      the message and the exception text.  Off by default; shipped:
      [`BEARER_TOKEN`][ctxlog.BEARER_TOKEN], [`JWT`][ctxlog.JWT],
      [`CARD_NUMBER`][ctxlog.CARD_NUMBER] (Luhn-checked).

    The replacement is *replacement*, the same for every secret: nothing of
    the secret (no prefix, length or hash) reaches the line.  The caller's
    objects are never changed: what holds a secret is copied.  A value the
    redactor cannot read (a mapping whose ``items()`` raises) is replaced
    whole; redacting never raises.

    ```python
    import ctxlog

    redactor = ctxlog.Redactor(keys={*ctxlog.DEFAULT_SENSITIVE_KEYS, "ssn"},
                               patterns=[ctxlog.BEARER_TOKEN])
    assert redactor.redact({"user": "ada", "SSN": "123"}) == {
        "user": "ada", "SSN": "[REDACTED]"}
    ```

    *New in version 0.1.0.*

    :param keys: the sensitive keys (default
        [`DEFAULT_SENSITIVE_KEYS`][ctxlog.DEFAULT_SENSITIVE_KEYS]).
    :param patterns: regular expressions (strings, compiled, or
        [`Pattern`][ctxlog.Pattern]) replaced inside every string.
    :param replacement: what a secret becomes.
    :raises ContextError: an option is of the wrong kind.
    """

    __slots__ = ("_keys", "_patterns", "_verdicts", "keys", "patterns", "replacement")

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        patterns: Iterable[PatternLike] = (),
        replacement: str = "[REDACTED]",
    ) -> None:
        if isinstance(keys, str) or not isinstance(keys, Iterable):
            msg = f"Redactor(keys={keys!r}): give a collection of key names."
            raise ContextError(msg)
        if isinstance(patterns, str | re.Pattern | Pattern) or not isinstance(patterns, Iterable):
            msg = f"Redactor(patterns={patterns!r}): give a list of patterns."
            raise ContextError(msg)
        if not isinstance(replacement, str):
            msg = f"Redactor(replacement={replacement!r}): give a string."
            raise ContextError(msg)
        key_list = tuple(keys)
        for key in key_list:
            if not isinstance(key, str) or not key:
                msg = f"Redactor(keys=...): keys must be non-empty strings, got {key!r}."
                raise ContextError(msg)
        self.keys: frozenset[str] = frozenset(key_list)
        self._keys = frozenset(normalize_key(key) for key in key_list)
        self.patterns: tuple[Pattern, ...] = tuple(
            p if isinstance(p, Pattern) else Pattern(p) for p in patterns
        )
        self._patterns = tuple((p.regex, p.check) for p in self.patterns)
        self.replacement = replacement
        # Verdicts on the string keys seen so far: a line's keys are few and
        # repeat, and a dict lookup costs a fifth of normalizing the key.
        self._verdicts: dict[str, bool] = {}

    # -- what a key or a string becomes ------------------------------------

    def sensitive(self, key: object) -> bool:
        """Whether a value under *key* is replaced."""
        if type(key) is str:
            verdict = self._verdicts.get(key)
            if verdict is None:
                verdict = normalize_key(key) in self._keys
                if len(self._verdicts) < _MAX_VERDICTS:
                    self._verdicts[key] = verdict
            return verdict
        try:
            return normalize_key(key) in self._keys
        except Exception:  # noqa: BLE001 -- a key that cannot be read is not trusted
            return True

    def text(self, text: str) -> str:
        """*text* with every match of the patterns replaced."""
        replacement = self.replacement
        for regex, check in self._patterns:
            if check is None:
                text = regex.sub(replacement.replace("\\", "\\\\"), text)
            else:
                text = regex.sub(_Checked(check, replacement), text)
        return text

    # -- values ------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """*value* with its secrets replaced; *value* itself when it holds none."""
        try:
            return self._value(value, _MAX_DEPTH)
        except Exception:  # noqa: BLE001 -- whatever a value does, no secret gets through
            return self.replacement

    def redact_mapping(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of *data* with its secrets replaced (the top-level keys too)."""
        # A log line's flat fields, written out: a fifth less per line than
        # sensitive() and redact() per key (benchmarks/bench_noise.py).
        verdicts = self._verdicts
        replacement = self.replacement
        plain = not self._patterns
        out: dict[str, Any] = {}
        for key, value in data.items():
            verdict = verdicts.get(key) if type(key) is str else None
            if verdict is None:
                verdict = self.sensitive(key)
            if verdict:
                out[key] = replacement
            elif plain and (type(value) in _SCALARS or value is None):
                out[key] = value
            else:
                out[key] = self.redact(value)
        return out

    def _value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self.text(value) if self._patterns else value
        if kind is int or kind is float or kind is bool or value is None:
            return value
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            if depth <= 0:
                return self.replacement
            return self._container(value, depth - 1)
        if not self._patterns:
            # Keys only: an object that is no mapping or sequence has no keys to
            # redact; the JSON line writes it as the sanitiser does.
            return value
        # Patterns: the text the line would hold for it, redacted.
        return self._value(json_safe(value), depth - 1)

    def _container(self, value: Any, depth: int) -> Any:
        changed = False
        if isinstance(value, Mapping):
            items = list(dict.items(value) if isinstance(value, dict) else value.items())
            out: dict[Any, Any] = {}
            for key, item in items:
                new = self.replacement if self.sensitive(key) else self._value(item, depth)
                changed = changed or new is not item
                out[key] = new
            return out if changed else value
        seq = list(value)
        new_seq = [self._value(item, depth) for item in seq]
        if all(a is b for a, b in zip(new_seq, seq, strict=True)):
            return value
        if isinstance(value, tuple):
            return tuple(new_seq)
        return new_seq

    def __repr__(self) -> str:
        return (
            f"ctxlog.Redactor(keys={sorted(self.keys)!r}, patterns={list(self.patterns)!r}, "
            f"replacement={self.replacement!r})"
        )


class _Checked:
    """A replacement function: the match is replaced only if *check* agrees."""

    __slots__ = ("check", "replacement")

    def __init__(self, check: Callable[[str], bool], replacement: str) -> None:
        self.check = check
        self.replacement = replacement

    def __call__(self, match: re.Match[str]) -> str:
        text = match[0]
        try:
            agreed = self.check(text)
        except Exception:  # noqa: BLE001 -- a check that fails keeps the secret out
            return self.replacement
        return self.replacement if agreed else text


def resolve_redactor(redact: Redactor | bool | None, where: str) -> Redactor | None:
    """What a ``redact=`` option means: ``True`` the defaults, ``False``/``None`` nothing.

    :raises ContextError: *redact* is anything else.
    """
    if redact is None or redact is False:
        return None
    if redact is True:
        return _default()
    if isinstance(redact, Redactor):
        return redact
    msg = f"{where}(redact={redact!r}): give a ctxlog.Redactor, True (the defaults) or False."
    raise ContextError(msg)


_DEFAULT: Redactor | None = None


def _default() -> Redactor:
    global _DEFAULT  # noqa: PLW0603 -- made on first use, then shared (it is immutable)
    if _DEFAULT is None:
        _DEFAULT = Redactor()
    return _DEFAULT
