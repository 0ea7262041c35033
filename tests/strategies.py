"""Hypothesis strategies shared by the tests: hostile values to bind and log."""

from __future__ import annotations

import datetime
import math
from typing import Any

from hypothesis import strategies as st


class RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr")

    __str__ = __repr__


class RaisingItems(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError("items")


class RaisingIsoformat(datetime.datetime):
    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:  # noqa: ARG002 -- the signature it overrides
        raise RuntimeError("isoformat")


class RaisingFloatRepr(float):
    def __repr__(self) -> str:
        raise RuntimeError("repr")


class LazyProxy:
    """A lazy proxy whose ``__class__`` raises, as unresolved proxies do."""

    @property  # type: ignore[misc]  # __class__ as a property, on purpose
    def __class__(self) -> type:
        raise RuntimeError("unresolved")


def recursive_list() -> list[Any]:
    loop: list[Any] = [1]
    loop.append(loop)
    return loop


def recursive_dict() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


#: Every Unicode category, surrogates and controls included.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)

hostile = st.one_of(
    st.builds(RaisingRepr),
    st.builds(lambda: RaisingItems(a=1)),
    st.builds(lambda: RaisingIsoformat(2026, 12, 1)),
    st.builds(lambda: RaisingFloatRepr(1.5)),
    st.builds(LazyProxy),
    st.builds(recursive_list),
    st.builds(recursive_dict),
    st.builds(lambda: 10**5000),  # more digits than int -> str allows
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.just({(1, 2): "tuple key", 3: "int key"}),
    st.just(b"\xff bytes"),
    st.just(datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
    hostile,
)

#: Values as deep and odd as a bound value can be.
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(any_text, inner, max_size=4),
    ),
    max_leaves=12,
)

#: Keys to bind: ordinary ones and every name a line or a processor owns.
keys = st.one_of(
    st.sampled_from(
        [
            "request_id",
            "user_id",
            "time",
            "level",
            "logger",
            "message",
            "exception",
            "stack",
            "exc_info",
            "stack_info",
            "event",
            "timestamp",
            "_record",
            "name",
            "msg",
            "args",
            "levelname",
            "taskName",
            "ctx_level",
        ]
    ),
    any_text.filter(bool),
)

contexts = st.dictionaries(keys, values, max_size=6)

#: W3C Baggage keys (RFC 9110 tokens).
baggage_keys = st.text(
    st.sampled_from(
        "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    ),
    min_size=1,
    max_size=12,
)

#: Baggage values worth binding: printable text, any script, spaces included.
baggage_values = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn", "Zs"))
    | st.just(" "),
    max_size=20,
).filter(str.isprintable)

#: Baggage properties (``;key`` or ``;key=value``), which a parser reads past.
baggage_properties = st.lists(
    st.tuples(baggage_keys, st.none() | st.text(st.sampled_from("abc123-_.:%/"), max_size=6)).map(
        lambda kv: kv[0] if kv[1] is None else f"{kv[0]}={kv[1]}"
    ),
    max_size=3,
)

#: Whatever a hostile client may send in a ``baggage`` header: any text or
#: bytes, and the shapes that stress a parser (many members, long values,
#: encoded line breaks and controls).
hostile_baggage = st.one_of(
    any_text,
    st.binary(max_size=40),
    st.sampled_from([179, 180, 181, 10_000]).map(lambda n: ",".join(f"k{i}=v" for i in range(n))),
    st.sampled_from([1_024, 1_025, 8_185, 8_186, 3_000_000]).map(lambda n: "tenant=" + "a" * n),
    st.sampled_from(
        ["%0A", "%0D%0A", "%1B[31m", "%E2%80%A8", "%C2%85", "%FF", "%", "%zz", "%00"]
    ).map(lambda bad: f"tenant=a{bad}b"),
    st.lists(any_text, max_size=5).map(",".join),
)
