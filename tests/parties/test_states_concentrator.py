"""The deployed concentrator's link state machine (FEEDER_LINK), table-driven.

A relay with a head-end link (``link=True``, as the service builds it) is driven into each
state (new, connected, detached, relaying) and given each input (a roster, the upstream
connecting or dropping, a meter's message up, a head-end envelope down): a refused pair
raises the table's error and leaves the relay as it was (state, meters, byte counts).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from privmeter.parties.concentrator import (
    FEEDER_LINK,
    Concentrator,
    FeederInput,
    FeederState,
)
from privmeter.parties.messages import Relayed
from privmeter.protocol.codec import encode
from privmeter.protocol.ring import RingStart

MSG = RingStart(group="feeder-1", round=1)
ENV = Relayed(meter_id="m1", payload=encode(MSG))

REACH: dict[FeederState, list[Callable[[Concentrator], object]]] = {
    FeederState.NEW: [],
    FeederState.CONNECTED: [lambda c: c.connected()],
    FeederState.DETACHED: [lambda c: c.roster(["m1", "m2"])],
    FeederState.RELAYING: [lambda c: c.roster(["m1", "m2"]), lambda c: c.connected()],
}
ACT: dict[FeederInput, Callable[[Concentrator], object]] = {
    FeederInput.ROSTER: lambda c: c.roster(["m1", "m3"]),
    FeederInput.CONNECT: lambda c: c.connected(),
    FeederInput.DISCONNECT: lambda c: c.disconnected(),
    FeederInput.UP: lambda c: c.up("m1", MSG),
    FeederInput.DOWN: lambda c: c.down(ENV),
}


def snapshot(c: Concentrator) -> tuple[object, ...]:
    return (c.state, c.meters, dict(c.bytes_up), dict(c.bytes_down))


@pytest.mark.parametrize("state", list(FeederState), ids=lambda s: s.value)
@pytest.mark.parametrize("inp", list(FeederInput), ids=lambda i: i.value)
def test_feeder_link_table(state: FeederState, inp: FeederInput) -> None:
    c = Concentrator("dc-1", (), link=True)
    for step in REACH[state]:
        step(c)
    assert c.state is state
    before = snapshot(c)
    if FEEDER_LINK.allowed(state, inp):
        ACT[inp](c)
        assert c.state is FEEDER_LINK.next(state, inp)
        return
    refusal = FEEDER_LINK.refusal(state, inp)
    with pytest.raises(refusal.error) as ei:
        ACT[inp](c)
    assert type(ei.value) is refusal.error
    if c.meters:  # with no roster the meter is off it: refused by that check first, alike
        assert ei.value.context["state"] == state.value
    assert snapshot(c) == before


def test_an_in_process_relay_is_relaying_from_the_start() -> None:
    c = Concentrator("dc-1", ["m1"])
    assert c.state is FeederState.RELAYING
    env = c.up("m1", MSG)
    assert c.down(env) == ("m1", MSG)


def test_the_link_survives_drops_and_reconnects() -> None:
    c = Concentrator("dc-1", (), link=True)
    c.roster(["m1"])
    for _ in range(3):
        c.connected()
        assert c.down(c.up("m1", MSG)) == ("m1", MSG)
        c.disconnected()
        c.disconnected()  # noticed twice (a meter's message, then the connection loop)
        assert c.state is FeederState.DETACHED
