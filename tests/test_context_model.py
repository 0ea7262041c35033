"""Random sequences of bind/unbind/set/reset/clear, units of work (scope and
annotate) and register/unregister of foreign ContextVars, against a plain
stack-of-dicts model."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

import ctxlog
from ctxlog import ContextError
from ctxlog._store import store

keys = st.sampled_from(["a", "b", "c", "request_id", "user_id"])
values = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none())
bindings = st.dictionaries(keys, values, max_size=3)


class Boom(Exception):
    pass


#: Stands, in the model, for a name that unbind() hides.
HIDDEN = object()


class Unit:
    """The model of a unit of work: its annotated values, and whether it is open."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.open = True


def value_of(var: contextvars.ContextVar[Any]) -> Any:
    """The variable's value, HIDDEN when unset without a default (ctxlog skips it)."""
    try:
        return var.get()  # not get(HIDDEN): that would shadow the variable's own default
    except LookupError:
        return HIDDEN


class ContextModel(RuleBasedStateMachine):
    """The model: the current dict, plus what each open block and token restores."""

    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.open: list[ctxlog.bind | ctxlog.unbind | ctxlog.scope] = []  # innermost last
        self.outer = ctxlog.clear()
        self.model: dict[str, Any] = {}  # the bound values, HIDDEN for hidden names
        self.unit: Unit | None = None  # the innermost unit of work
        self.blocks: list[tuple[dict[str, Any], Unit | None]] = []  # what leaving each restores
        self.block_units: list[Unit | None] = []  # the unit each open block opened, if any
        self.used: list[ctxlog.Token] = []
        # Two foreign variables: "x" has a default, "y" is unset until set_foreign.
        self.foreign = {
            "x": contextvars.ContextVar[Any]("x", default="x-default"),
            "y": contextvars.ContextVar[Any]("y"),
        }
        self.registered: dict[str, str] = {}  # foreign variable -> the name it merges under

    def _enter(self, block: ctxlog.bind | ctxlog.unbind | ctxlog.scope) -> None:
        block.__enter__()
        self.open.append(block)
        self.blocks.append((self.model, self.unit))
        self.block_units.append(None)

    @rule(values=bindings)
    def enter_bind(self, values: dict[str, Any]) -> None:
        self._enter(ctxlog.bind(**values))
        self.model = {**self.model, **values}

    @rule(names=st.lists(keys, max_size=3))
    def enter_unbind(self, names: list[str]) -> None:
        self._enter(ctxlog.unbind(*names))
        self.model = {k: v for k, v in self.model.items() if k not in names}
        # unbind() marks the names something else may supply: inside a unit of
        # work any name (it may be annotated), else the registered ones.
        shadowed = set(names) if self.unit is not None else store.provider_names()
        for name in names:
            if name in shadowed:
                self.model[name] = HIDDEN

    @rule(values=bindings)
    def enter_scope(self, values: dict[str, Any]) -> None:
        self._enter(ctxlog.scope(**values))
        self.model = {**self.model, **values}
        # A unit opened inside another starts with the outer one's values.
        self.unit = Unit(dict(self.unit.values) if self.unit is not None else {})
        self.block_units[-1] = self.unit

    @rule(values=bindings)
    def annotate(self, values: dict[str, Any]) -> None:
        if self.unit is None:
            with pytest.raises(ContextError, match="needs a unit of work"):
                ctxlog.annotate(**values)
        elif not self.unit.open:
            with pytest.raises(ContextError, match="already ended"):
                ctxlog.annotate(**values)
        else:
            ctxlog.annotate(**values)
            self.unit.values = {**self.unit.values, **values}

    @rule(var=st.sampled_from(["x", "y"]), name=keys)
    def register(self, var: str, name: str) -> None:
        taken = [v for v, n in self.registered.items() if n == name and v != var]
        if taken:
            with pytest.raises(ContextError, match="already used"):
                ctxlog.register(self.foreign[var], name)
            return
        ctxlog.register(self.foreign[var], name)
        self.registered[var] = name

    @rule(var=st.sampled_from(["x", "y"]))
    def unregister(self, var: str) -> None:
        if var not in self.registered:
            with pytest.raises(ContextError, match="not registered"):
                ctxlog.unregister(self.foreign[var])
            return
        ctxlog.unregister(self.foreign[var])
        del self.registered[var]

    @rule(var=st.sampled_from(["x", "y"]), value=values)
    def set_foreign(self, var: str, value: Any) -> None:
        self.foreign[var].set(value)

    def expected(self) -> dict[str, Any]:
        merged = {name: value_of(self.foreign[var]) for var, name in self.registered.items()}
        if self.unit is not None:
            merged.update(self.unit.values)
        merged.update(self.model)
        return {k: v for k, v in merged.items() if v is not HIDDEN}

    @precondition(lambda self: self.blocks)
    @rule()
    def leave_block(self) -> None:
        self.open.pop().__exit__(None, None, None)
        opened = self.block_units.pop()
        if opened is not None:
            opened.open = False
        self.model, self.unit = self.blocks.pop()

    @rule(values=bindings)
    def raise_in_block(self, values: dict[str, Any]) -> None:
        before = self.expected()
        with pytest.raises(Boom), ctxlog.bind(**values):
            assert dict(ctxlog.current()) == {**before, **values}
            raise Boom
        assert dict(ctxlog.current()) == before

    @rule(target=tokens, values=bindings)
    def set_values(self, values: dict[str, Any]) -> tuple[ctxlog.Token, Any]:
        token = ctxlog.set(**values)
        saved = (self.model, self.unit)
        self.model = {**self.model, **values}
        return token, saved

    @rule(target=tokens)
    def clear(self) -> tuple[ctxlog.Token, Any]:
        token = ctxlog.clear()
        saved = (self.model, self.unit)
        self.model = {}  # the unit of work stays
        return token, saved

    @rule(entry=consumes(tokens))
    def reset(self, entry: tuple[ctxlog.Token, Any]) -> None:
        token, saved = entry
        ctxlog.reset(token)
        # Back to the mapping set() replaced, with the unit it held (maybe one
        # that has ended since: its values are still what its lines show).
        self.model, self.unit = saved
        self.used.append(token)

    @precondition(lambda self: self.used)
    @rule(data=st.data())
    def reset_again_fails(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.used))
        with pytest.raises(ContextError, match="already reset"):
            ctxlog.reset(token)

    @invariant()
    def matches_model(self) -> None:
        expected = self.expected()
        assert dict(ctxlog.current()) == expected
        assert dict(ctxlog.snapshot()) == expected
        for key in ("a", "b", "c", "request_id", "user_id"):
            assert ctxlog.get(key, "<unset>") == expected.get(key, "<unset>")

    def teardown(self) -> None:
        while self.open:
            self.open.pop().__exit__(None, None, None)
        ctxlog.reset(self.outer)
        for var in self.registered:
            ctxlog.unregister(self.foreign[var])


TestContextModel = ContextModel.TestCase
