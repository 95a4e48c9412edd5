"""Role states as explicit enums and transition tables (after h11's ``_state.py``).

What it is for: every protocol role with a lifecycle (a meter's demand
event, the manager's view of one meter in an event, a comparison session, a
household's billing period, a ring round, an enrolment) keeps its state as
one member of an :class:`enum.Enum` and moves only along a
:class:`Machine`'s table ``state -> event -> next state``.  A role asks the
table *before* it commits anything (:meth:`Machine.next`); a pair that is
not in the table raises the specific error the role has always raised for
it (:class:`~privmeter.errors.UnexpectedMessage`,
:class:`~privmeter.errors.ReplayedMessage`,
:class:`~privmeter.errors.AlreadySettled`...), whose message and context
name the role, the state and the event; the role's state is unchanged.

Every machine is listed in :data:`MACHINES` (by the modules that define
them) and documented, one table per role, in ``docs/states.md``
(:meth:`Machine.markdown` writes the table; a test checks the document).

Design: as in h11, a table holds only the transitions driven by events;
what a role checks about a message's *content* (signatures, freshness,
sizes) stays in the role.  Each event names one message or one local action
of the role (``timeout``, ``certify``...).  A pair may be refused with its
own error class and reason (:class:`Refusal`); the rest get the machine's
default.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from privmeter.errors import (
    InvalidArgument,
    InvalidArgumentType,
    PrivmeterError,
    UnexpectedMessage,
)

__all__ = ["MACHINES", "Machine", "Refusal", "register"]

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


@dataclass(frozen=True, slots=True)
class Refusal:
    """How one (state, event) pair outside the table is refused: the error and its reason."""

    error: type[PrivmeterError]
    reason: str


@dataclass(frozen=True, slots=True)
class Machine(Generic[S, E]):
    """One role's transition table (see the module docstring).

    ``transitions``: ``state -> event -> next state``; every other pair is
    refused with ``refusals[(state, event)]`` or, failing that, ``default``.
    """

    role: str
    states: type[S]
    events: type[E]
    initial: S
    transitions: Mapping[S, Mapping[E, S]]
    refusals: Mapping[tuple[S, E], Refusal] = field(default_factory=dict)
    default: Refusal = Refusal(UnexpectedMessage, "not allowed in this state")

    def __post_init__(self) -> None:
        for st, row in self.transitions.items():
            if not isinstance(st, self.states) or not all(
                isinstance(ev, self.events) and isinstance(nx, self.states)
                for ev, nx in row.items()
            ):
                raise InvalidArgumentType(
                    f"{self.role}: table entries must be {self.states.__name__}"
                )
        for st, ev in self.refusals:
            if ev in self.transitions.get(st, {}):
                raise InvalidArgument(
                    f"{self.role}: ({st.name}, {ev.name}) both allowed and refused"
                )

    def allowed(self, state: S, event: E) -> bool:
        return event in self.transitions.get(state, {})

    def refusal(self, state: S, event: E) -> Refusal:
        """How ``event`` in ``state`` is refused (meaningless for an allowed pair)."""
        return self.refusals.get((state, event), self.default)

    def next(self, state: S, event: E, **context: Any) -> S:
        """The state after ``event`` in ``state``; raises the pair's refusal if not in the table.

        Nothing is changed here: the role commits the returned state itself,
        after its own content checks.  ``context`` (meter id, interval...)
        goes into the error, with ``state`` and ``event``.
        """
        nxt = self.transitions.get(state, {}).get(event)
        if nxt is None:
            r = self.refusal(state, event)
            raise r.error(
                f"{r.reason}: {self.role} in state {state.value!r} cannot take {event.value!r}",
                state=state.value,
                event=event.value,
                **context,
            )
        return nxt

    def pairs(self) -> Iterator[tuple[S, E]]:
        """Every (state, event) pair, in declaration order."""
        for st in self.states:
            for ev in self.events:
                yield st, ev

    def markdown(self) -> str:
        """The table as Markdown: one row per state, one column per event.

        A cell holds the next state, or the refusing error's class name.
        """
        evs = list(self.events)
        lines = [
            "| state | " + " | ".join(f"`{e.value}`" for e in evs) + " |",
            "|---|" + "---|" * len(evs),
        ]
        for st in self.states:
            cells = []
            for ev in evs:
                nxt = self.transitions.get(st, {}).get(ev)
                cells.append(
                    f"→ `{nxt.value}`" if nxt is not None else self.refusal(st, ev).error.__name__
                )
            mark = " (initial)" if st is self.initial else ""
            lines.append(f"| `{st.value}`{mark} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


# name -> machine, filled by the modules that define them (docs/states.md, tests)
MACHINES: dict[str, Machine[Any, Any]] = {}


def register(m: Machine[S, E]) -> Machine[S, E]:
    """Add ``m`` to :data:`MACHINES` under its role (a reloaded module replaces it); returns it."""
    MACHINES[m.role] = m
    return m
