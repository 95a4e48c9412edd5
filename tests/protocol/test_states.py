"""Every role's transition table (privmeter.protocol.states): refusals and docs/states.md.

The role-level tests (each role driven into each state, then sent every message) are next
to each role: tests/protocol/test_states_demand.py, ... ; here every registered machine is
checked as a table: each pair outside it is refused with its specific error naming the
state and the event, and docs/states.md shows exactly the table.
"""

from __future__ import annotations

import enum
import importlib
import re
from pathlib import Path

import pytest

from privmeter.errors import PrivmeterError, ReplayedMessage, UnexpectedMessage
from privmeter.protocol.states import MACHINES, Machine, Refusal

# every module that defines a machine (importing it registers them)
MODULES = [
    "privmeter.protocol.comparison",
    "privmeter.protocol.demand",
    "privmeter.protocol.ring",
    "privmeter.protocol.billing",
    "privmeter.parties.household",
    "privmeter.parties.enrolment",
    "privmeter.parties.concentrator",
    "privmeter.protocol.aggregation",
    "privmeter.parties.meter",
]
for _m in MODULES:
    importlib.import_module(_m)

DOC = Path(__file__).resolve().parents[2] / "docs" / "states.md"


def test_the_machines_are_registered() -> None:
    assert len(MACHINES) >= 4


@pytest.mark.parametrize("role", sorted(MACHINES))
def test_every_pair_outside_the_table_is_refused_with_its_error(role: str) -> None:
    m = MACHINES[role]
    assert m.initial in m.transitions  # the initial state takes something
    for state, event in m.pairs():
        if m.allowed(state, event):
            nxt = m.next(state, event)
            assert isinstance(nxt, m.states)
            continue
        r = m.refusal(state, event)
        with pytest.raises(PrivmeterError) as ei:
            m.next(state, event, meter_id="m1")
        assert type(ei.value) is r.error
        msg = str(ei.value)
        assert r.reason in msg and repr(state.value) in msg and repr(event.value) in msg
        assert ei.value.context == {"state": state.value, "event": event.value, "meter_id": "m1"}


@pytest.mark.parametrize("role", sorted(MACHINES))
def test_every_state_is_reachable_from_the_initial_one(role: str) -> None:
    m = MACHINES[role]
    seen, todo = {m.initial}, [m.initial]
    while todo:
        for nxt in m.transitions.get(todo.pop(), {}).values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(m.states)


def _doc_tables() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- machine: (.+?) -->\n(.*?)\n<!-- end -->", text, flags=re.S)
    return {role: table.strip() for role, table in found}


def test_docs_show_every_table() -> None:
    """docs/states.md holds each machine's table exactly (``Machine.markdown()``)."""
    tables = _doc_tables()
    assert sorted(tables) == sorted(MACHINES)
    for role, m in MACHINES.items():
        assert tables[role] == m.markdown(), f"docs/states.md: paste {role!r}'s markdown()"


class _S(enum.Enum):
    A = "a"
    B = "b"


class _E(enum.Enum):
    GO = "go"
    AGAIN = "again"


def test_a_machine_refuses_inconsistent_tables() -> None:
    with pytest.raises(ValueError, match="both allowed and refused"):
        Machine(
            "t",
            _S,
            _E,
            _S.A,
            {_S.A: {_E.GO: _S.B}},
            {(_S.A, _E.GO): Refusal(ReplayedMessage, "x")},
        )
    with pytest.raises(TypeError):
        Machine("t", _S, _E, _S.A, {_S.A: {_S.B: _S.B}})  # type: ignore[dict-item]
    m = Machine("t", _S, _E, _S.A, {_S.A: {_E.GO: _S.B}})
    assert m.next(_S.A, _E.GO) is _S.B
    with pytest.raises(UnexpectedMessage, match="in state 'b' cannot take 'go'"):
        m.next(_S.B, _E.GO)
