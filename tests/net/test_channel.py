from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto.keyagreement import AgreementKey
from privmeter.errors import (
    BudgetExceeded,
    InvalidCiphertext,
    InvalidKey,
    MalformedMessage,
    RemoteProtocolError,
    ReplayedMessage,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.net.channel import (
    KIND_PUSH,
    KIND_REPLY,
    KIND_REQUEST,
    Channel,
    ErrorMessage,
    RelayCipher,
    RelayEnvelope,
    error_for_code,
    pack_body,
    remote_error,
    unpack_body,
)
from privmeter.protocol.codec import decode, encode

K1 = bytes(range(32))
K2 = bytes(range(1, 33))


def pair() -> tuple[Channel, Channel]:
    return Channel(K1, K2), Channel(K2, K1)


def test_roundtrip_in_order():
    a, b = pair()
    for i in range(5):
        assert b.open(a.seal(b"m%d" % i)) == b"m%d" % i
        assert a.open(b.seal(b"r%d" % i)) == b"r%d" % i
    assert a.sent == b.received == 5


def test_replayed_record_rejected_state_unchanged():
    a, b = pair()
    r0 = a.seal(b"x")
    b.open(r0)
    with pytest.raises(ReplayedMessage):
        b.open(r0)
    assert b.received == 1
    assert b.open(a.seal(b"y")) == b"y"


def test_reordered_record_rejected():
    a, b = pair()
    r0, r1 = a.seal(b"0"), a.seal(b"1")
    with pytest.raises(UnexpectedMessage):
        b.open(r1)
    assert b.open(r0) == b"0"


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_bit_flip_fails_authentication(body, data):
    a, b = pair()
    rec = bytearray(a.seal(body))
    i = data.draw(st.integers(9, len(rec) - 1))  # ciphertext or tag
    rec[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(InvalidCiphertext):
        b.open(bytes(rec))
    assert b.received == 0


def test_forged_counter_fails():
    a, b = pair()
    rec = bytearray(a.seal(b"x"))
    rec[8] = 1  # counter 1 claimed for record 0
    with pytest.raises(UnexpectedMessage):
        b.open(bytes(rec))


def test_reflection_rejected():
    a, _ = pair()
    with pytest.raises(InvalidCiphertext):
        a.open(a.seal(b"own record sent back"))


def test_short_and_plain_records():
    _, b = pair()
    with pytest.raises(MalformedMessage):
        b.open(b"\x01abc")
    with pytest.raises(UnexpectedMessage):
        b.open(b"\x00" + bytes(40))


def test_keys_validated():
    with pytest.raises(InvalidKey):
        Channel(K1, K1)
    with pytest.raises(InvalidKey):
        Channel(b"short", K2)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([KIND_PUSH, KIND_REQUEST, KIND_REPLY]),
    st.integers(0, 2**32 - 1),
    st.lists(st.binary(max_size=40), min_size=1, max_size=5),
)
def test_body_roundtrip(kind, ref, msgs):
    assert unpack_body(pack_body(kind, ref, msgs)) == (kind, ref, msgs)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x00\x00",
        b"\x07\x00\x00\x00\x00",
        b"\x00\x00\x00\x00\x00",  # push without a message
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x09ab",
        b"\x02\x00\x00\x00\x01\x00\x00",
    ],
)
def test_body_malformed(body):
    with pytest.raises(MalformedMessage):
        unpack_body(body)


def test_empty_reply_allowed():
    assert unpack_body(pack_body(KIND_REPLY, 3, [])) == (KIND_REPLY, 3, [])


def test_error_codes_map_to_classes():
    assert error_for_code("budget") is BudgetExceeded
    assert error_for_code("replay") is ReplayedMessage
    assert error_for_code("no-such-code") is RemoteProtocolError
    exc = remote_error("unknown-party", "head-end")
    assert isinstance(exc, UnknownParty)
    assert decode(encode(ErrorMessage(code="replay"))) == ErrorMessage(code="replay")


# -- relay ------------------------------------------------------------------------


def relay_pair() -> tuple[RelayCipher, RelayCipher, RelayCipher]:
    rng = random.Random(7)
    ka, kb, kc = (AgreementKey.generate(rng) for _ in range(3))
    ab = ka.agree(kb.public, group="g", epoch=1, id_a="m1", id_b="m2").aead_key
    ba = kb.agree(ka.public, group="g", epoch=1, id_a="m2", id_b="m1").aead_key
    ac = ka.agree(kc.public, group="g", epoch=1, id_a="m1", id_b="m3").aead_key
    return (
        RelayCipher(ab, me="m1", peer="m2"),
        RelayCipher(ba, me="m2", peer="m1"),
        RelayCipher(ac, me="m3", peer="m1"),
    )


def test_relay_end_to_end():
    m1, m2, _ = relay_pair()
    env = m1.seal("agg/share", b"secret share", rng=random.Random(1))
    env = decode(encode(env), expect=RelayEnvelope)  # through the head-end
    assert env.sender == "m1" and env.recipient == "m2"
    assert b"secret share" not in encode(env)
    assert m2.open(env, context="agg/share") == b"secret share"
    with pytest.raises(ReplayedMessage):
        m2.open(env)


def test_relay_rewrites_detected():
    m1, m2, m3 = relay_pair()
    env = m1.seal("agg/share", b"payload")
    import dataclasses

    with pytest.raises(InvalidCiphertext):  # head-end rewrites the context
        m2.open(dataclasses.replace(env, context="cmp/other"))
    with pytest.raises(UnexpectedMessage):
        m2.open(env, context="cmp/other")
    with pytest.raises(InvalidCiphertext):  # redirected to another meter: wrong key
        m3.open(dataclasses.replace(env, recipient="m3"))
    with pytest.raises(UnknownParty):  # not addressed to us / not from our peer
        m3.open(env)
    with pytest.raises(UnknownParty):
        m2.open(dataclasses.replace(env, sender="m9"))
    bad = bytearray(env.ciphertext)
    bad[0] ^= 1
    with pytest.raises(InvalidCiphertext):
        m2.open(dataclasses.replace(env, ciphertext=bytes(bad)))
    assert m2.open(env) == b"payload"  # failures left no state behind
