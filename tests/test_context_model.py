"""Random sequences of bind/unbind/set/reset/clear against a plain stack-of-dicts model."""

from __future__ import annotations

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

keys = st.sampled_from(["a", "b", "c", "request_id", "user_id"])
values = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none())
bindings = st.dictionaries(keys, values, max_size=3)


class Boom(Exception):
    pass


class ContextModel(RuleBasedStateMachine):
    """The model: the current dict, plus what each open block and token restores."""

    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.open: list[ctxlog.bind | ctxlog.unbind] = []  # innermost last
        self.outer = ctxlog.clear()
        self.model: dict[str, Any] = {}
        self.blocks: list[dict[str, Any]] = []  # what leaving each open block restores
        self.used: list[ctxlog.Token] = []

    def _enter(self, block: ctxlog.bind | ctxlog.unbind) -> None:
        block.__enter__()
        self.open.append(block)

    @rule(values=bindings)
    def enter_bind(self, values: dict[str, Any]) -> None:
        self._enter(ctxlog.bind(**values))
        self.blocks.append(self.model)
        self.model = {**self.model, **values}

    @rule(names=st.lists(keys, max_size=3))
    def enter_unbind(self, names: list[str]) -> None:
        self._enter(ctxlog.unbind(*names))
        self.blocks.append(self.model)
        self.model = {k: v for k, v in self.model.items() if k not in names}

    @precondition(lambda self: self.blocks)
    @rule()
    def leave_block(self) -> None:
        self.open.pop().__exit__(None, None, None)
        self.model = self.blocks.pop()

    @rule(values=bindings)
    def raise_in_block(self, values: dict[str, Any]) -> None:
        before = dict(self.model)
        with pytest.raises(Boom), ctxlog.bind(**values):
            assert dict(ctxlog.current()) == {**before, **values}
            raise Boom
        assert dict(ctxlog.current()) == before

    @rule(target=tokens, values=bindings)
    def set_values(self, values: dict[str, Any]) -> tuple[ctxlog.Token, dict[str, Any]]:
        token = ctxlog.set(**values)
        saved = self.model
        self.model = {**self.model, **values}
        return token, saved

    @rule(target=tokens)
    def clear(self) -> tuple[ctxlog.Token, dict[str, Any]]:
        token = ctxlog.clear()
        saved = self.model
        self.model = {}
        return token, saved

    @rule(entry=consumes(tokens))
    def reset(self, entry: tuple[ctxlog.Token, dict[str, Any]]) -> None:
        token, saved = entry
        ctxlog.reset(token)
        self.model = saved
        self.used.append(token)

    @precondition(lambda self: self.used)
    @rule(data=st.data())
    def reset_again_fails(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.used))
        with pytest.raises(ContextError, match="already reset"):
            ctxlog.reset(token)

    @invariant()
    def matches_model(self) -> None:
        assert dict(ctxlog.current()) == self.model
        for key in ("a", "b", "c", "request_id", "user_id"):
            assert ctxlog.get(key, "<unset>") == self.model.get(key, "<unset>")

    def teardown(self) -> None:
        while self.open:
            self.open.pop().__exit__(None, None, None)
        ctxlog.reset(self.outer)


TestContextModel = ContextModel.TestCase
