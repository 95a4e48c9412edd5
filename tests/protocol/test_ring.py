"""The founding paper's ring: exact totals, and its weaknesses shown explicitly."""

from __future__ import annotations

import random

import pytest

from privmeter.crypto.keyagreement import AgreementKey
from privmeter.crypto.masks import MODULUS
from privmeter.errors import (
    AggregationError,
    InvalidCiphertext,
    MalformedMessage,
    ReplayedMessage,
)
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.ring import (
    PaillierRingCoordinator,
    PaillierRingMeter,
    PaillierToken,
    RingCoordinator,
    RingMeter,
    RingToken,
    RingTotal,
)

IDS = [f"h{i}" for i in range(6)]


def readings(rnd: int) -> dict[str, int]:
    r = random.Random(rnd)
    return {m: r.randint(-4000, 15000) for m in IDS}


def make_ring() -> tuple[RingCoordinator, dict[str, RingMeter]]:
    rng = random.Random(5)
    keys = {m: AgreementKey.generate(rng) for m in IDS}
    pubs = {m: k.public for m, k in keys.items()}
    meters = {m: RingMeter(m, IDS, keys[m], pubs, group="g", rng=rng) for m in IDS}
    return RingCoordinator("g", IDS), meters


def run_round(
    coord: RingCoordinator,
    meters: dict[str, RingMeter],
    rnd: int,
    x: dict[str, int],
    skip: str | None = None,
) -> int | None:
    msg = meters[IDS[0]].handle_start(coord.start(rnd), x[IDS[0]])
    while True:
        msg = decode(encode(msg))
        if isinstance(msg, RingTotal):
            return coord.handle_total(msg)
        assert isinstance(msg, RingToken)
        if msg.receiver == skip:
            return None  # token lost with the dropped meter
        msg = meters[msg.receiver].handle_token(msg, x[msg.receiver])


def test_ring_total_is_exact() -> None:
    coord, meters = make_ring()
    for rnd in range(3):
        x = readings(rnd)
        assert run_round(coord, meters, rnd, x) == sum(x.values())


def test_one_dropout_stalls_the_ring() -> None:
    coord, meters = make_ring()
    x = readings(7)
    assert run_round(coord, meters, 7, x, skip=IDS[3]) is None
    with pytest.raises(AggregationError, match="stalled"):
        coord.timeout(7)


def test_two_colluding_neighbours_learn_the_victims_reading() -> None:
    coord, meters = make_ring()
    x = readings(9)
    run_round(coord, meters, 9, x)
    pred, victim, succ = IDS[2], IDS[3], IDS[4]
    learned = (meters[succ].last_received - meters[pred].last_sent) % MODULUS
    assert learned == x[victim] % MODULUS  # exact: the ring's documented weakness


def test_ring_rejects_replay_and_tampering() -> None:
    coord, meters = make_ring()
    tok = meters[IDS[0]].handle_start(coord.start(1), 5)
    meters[IDS[1]].handle_token(tok, 1)
    with pytest.raises(ReplayedMessage):
        meters[IDS[1]].handle_token(tok, 1)
    bad = RingToken(group="g", round=2, sender=IDS[0], receiver=IDS[1], ciphertext=bytes(24))
    with pytest.raises(InvalidCiphertext):
        meters[IDS[1]].handle_token(bad, 1)
    with pytest.raises(MalformedMessage):
        meters[IDS[2]].handle_token(tok, 1)  # not addressed to it


def test_paillier_ring_and_its_weakness(paillier_2048) -> None:  # type: ignore[no-untyped-def]
    pk, sk = paillier_2048
    ids = IDS[:4]
    rng = random.Random(3)
    meters = {m: PaillierRingMeter(m, ids, pk, group="g", rng=rng) for m in ids}
    coord = PaillierRingCoordinator("g", ids, sk)
    x = {m: v for m, v in readings(4).items() if m in ids}
    tok = meters[ids[0]].handle_start(coord.start(1), x[ids[0]])
    hops: list[PaillierToken] = [tok]
    for m in ids[1:]:
        tok = meters[m].handle_token(decode(encode(tok)), x[m])
        hops.append(tok)
    assert coord.handle_final(tok) == sum(x.values())
    # Weakness: a utility that relays the hops decrypts each partial sum.
    partial = [sk.decrypt(pk.ciphertext(h.ciphertext)) for h in hops]
    assert partial[2] - partial[1] == x[ids[2]]
    with pytest.raises(AggregationError):
        coord.start(2)
        coord.timeout(2)
