"""DGK/Veugen comparison: exact results on every edge, properties, validation, sessions."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto import dgk
from privmeter.errors import (
    InvalidCiphertext,
    KeyMismatch,
    LocalProtocolError,
    MalformedMessage,
    PlaintextOverflow,
    UnexpectedMessage,
)
from privmeter.protocol import comparison as cmp
from privmeter.protocol.codec import decode, encode

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@pytest.fixture(scope="module")
def key() -> dgk.DGKPrivateKey:
    _, sk = dgk.generate_keypair(512, subgroup_bits=48, rng=random.Random(7), insecure_for_tests=True)
    return sk


@pytest.fixture(scope="module")
def key_3072() -> dgk.DGKPrivateKey:
    return dgk.DGKPrivateKey.from_json((VECTORS / "dgk_3072.json").read_text())


def compare(sk: dgk.DGKPrivateKey, x: int, t: int, bits: int, radix: int, rng: random.Random) -> bool:
    """Run one comparison through the wire codec on both legs."""
    pk = sk.public_key
    th = decode(encode(cmp.encrypt_threshold(pk, t, bits=bits, radix=radix, rng=rng)),
                expect=cmp.EncryptedThreshold)
    prep = cmp.prepare_threshold(pk, th)
    reply = decode(encode(cmp.meter_reply(prep, x, rng=rng)), expect=cmp.ComparisonReply)
    return cmp.UtilityComparison(sk, th).receive(reply)


@pytest.mark.parametrize("radix", cmp.RADICES)
def test_exhaustive_small_range(key: dgk.DGKPrivateKey, radix: int, rng: random.Random) -> None:
    bits = 4  # values -8..7; thresholds -7..7; readings beyond the range are clamped
    pk = key.public_key
    for t in range(-7, 8):
        th = cmp.encrypt_threshold(pk, t, bits=bits, radix=radix, rng=rng)
        prep = cmp.prepare_threshold(pk, th)
        for x in range(-10, 10):
            got = cmp.UtilityComparison(key, th).receive(cmp.meter_reply(prep, x, rng=rng))
            assert got == (x >= t), (radix, t, x)


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
@pytest.mark.parametrize("radix", [2, 4])
def test_edges(key: dgk.DGKPrivateKey, bits: int, radix: int, rng: random.Random) -> None:
    half = 1 << (bits - 1)
    ts = [0, 1, -1, half - 1, -half + 1, 12345 % half, -(12345 % half)]
    for t in ts:
        for x in {t, t - 1, t + 1, -half, half - 1, 0}:
            assert compare(key, x, t, bits, radix, rng) == (x >= t), (t, x)


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([5, 16, 24, 32]), radix=st.sampled_from(cmp.RADICES),
       data=st.data(), seed=st.integers(0, 2**32))
def test_property_matches_plaintext(key: dgk.DGKPrivateKey, bits: int, radix: int,
                                    data: st.DataObject, seed: int) -> None:
    half = 1 << (bits - 1)
    t = data.draw(st.integers(-half + 1, half - 1))
    x = data.draw(st.integers(-4 * half, 4 * half))  # includes readings beyond the range
    assert compare(key, x, t, bits, radix, random.Random(seed)) == (x >= t)


@settings(max_examples=30, deadline=None)
@given(x=st.integers(-(2**23), 2**23 - 1), t=st.integers(-(2**23) + 1, 2**23 - 1),
       seed=st.integers(0, 2**32))
def test_exactly_one_zero_iff_less(key: dgk.DGKPrivateKey, x: int, t: int, seed: int) -> None:
    """The utility sees one zero when x < T, none otherwise; the rest are non-zero."""
    rng = random.Random(seed)
    pk = key.public_key
    th = cmp.encrypt_threshold(pk, t, bits=24, radix=4, rng=rng)
    reply = cmp.meter_reply(cmp.prepare_threshold(pk, th), x, rng=rng)
    plain = [key.decrypt(c) for c in reply.values]
    assert plain.count(0) == (1 if x < t else 0)


def test_zero_position_is_shuffled(key: dgk.DGKPrivateKey) -> None:
    rng = random.Random(3)
    pk = key.public_key
    th = cmp.encrypt_threshold(pk, 100, bits=8, radix=2, rng=rng)
    prep = cmp.prepare_threshold(pk, th)
    positions = set()
    for _ in range(40):
        vals = cmp.meter_reply(prep, 7, rng=rng).values
        positions.add([key.decrypt(c) for c in vals].index(0))
    assert len(positions) >= 5  # the zero moves around (8 positions possible)


def test_vector_key_3072(key_3072: dgk.DGKPrivateKey, rng: random.Random) -> None:
    for x, t in ((1000, 1000), (999, 1000), (-5, -4)):
        assert compare(key_3072, x, t, 24, cmp.DEFAULT_RADIX, rng) == (x >= t)


def test_threshold_range_checked(key: dgk.DGKPrivateKey) -> None:
    pk = key.public_key
    with pytest.raises(PlaintextOverflow):
        cmp.encrypt_threshold(pk, -128, bits=8)
    with pytest.raises(PlaintextOverflow):
        cmp.encrypt_threshold(pk, 128, bits=8)
    with pytest.raises(LocalProtocolError):
        cmp.encrypt_threshold(pk, 0, bits=65)


def test_malformed_broadcasts_rejected(key: dgk.DGKPrivateKey, rng: random.Random) -> None:
    pk = key.public_key
    th = cmp.encrypt_threshold(pk, 3, bits=8, radix=4, rng=rng)
    with pytest.raises(ValueError):  # wrong shape
        dataclasses.replace(th, digits=th.digits[:-1])
    with pytest.raises(ValueError):
        dataclasses.replace(th, radix=3)
    bad_ct = tuple((pk.n, *row[1:]) for row in th.digits)
    with pytest.raises(InvalidCiphertext):
        cmp.prepare_threshold(pk, dataclasses.replace(th, digits=bad_ct))
    rep = tuple((key.p, *row[1:]) for row in th.digits)
    with pytest.raises(InvalidCiphertext):
        cmp.prepare_threshold(pk, dataclasses.replace(th, digits=rep))
    dup = tuple((row[0], row[0], row[2]) for row in th.digits)
    with pytest.raises(InvalidCiphertext):
        cmp.prepare_threshold(pk, dataclasses.replace(th, digits=dup))
    with pytest.raises(KeyMismatch):
        cmp.prepare_threshold(pk, dataclasses.replace(th, key_id=bytes(16)))
    # wire-level: wrong types and extra fields become MalformedMessage
    wire = encode(th)
    with pytest.raises(MalformedMessage):
        decode(wire[:-5])


def test_malformed_replies_rejected_and_session_keeps_waiting(key: dgk.DGKPrivateKey, rng: random.Random) -> None:
    pk = key.public_key
    th = cmp.encrypt_threshold(pk, 50, bits=8, radix=2, rng=rng)
    prep = cmp.prepare_threshold(pk, th)
    good = cmp.meter_reply(prep, 60, rng=rng)
    session = cmp.UtilityComparison(key, th)
    bads = [
        (dataclasses.replace(good, key_id=bytes(16)), KeyMismatch),
        (dataclasses.replace(good, threshold_digest=bytes(32)), UnexpectedMessage),
        (dataclasses.replace(good, values=good.values[:-1]), MalformedMessage),
        (dataclasses.replace(good, values=(pk.n + 1, *good.values[1:])), InvalidCiphertext),
        (dataclasses.replace(good, values=(key.q, *good.values[1:])), InvalidCiphertext),
        (dataclasses.replace(good, values=(good.values[0],) * len(good.values)), InvalidCiphertext),
    ]
    for bad, err in bads:
        with pytest.raises(err):
            session.receive(bad)
        assert session.state is cmp.SessionState.AWAITING_REPLY
    assert session.receive(good) is True
    with pytest.raises(UnexpectedMessage):
        session.receive(good)


def test_reply_to_other_broadcast_rejected(key: dgk.DGKPrivateKey, rng: random.Random) -> None:
    pk = key.public_key
    th1 = cmp.encrypt_threshold(pk, 5, bits=8, rng=rng)
    th2 = cmp.encrypt_threshold(pk, 5, bits=8, rng=rng)
    reply = cmp.meter_reply(cmp.prepare_threshold(pk, th2), 9, rng=rng)
    with pytest.raises(UnexpectedMessage):
        cmp.UtilityComparison(key, th1).receive(reply)


def test_meter_output_is_randomised(key: dgk.DGKPrivateKey, rng: random.Random) -> None:
    pk = key.public_key
    prep = cmp.prepare_threshold(pk, cmp.encrypt_threshold(pk, 5, bits=8, rng=rng))
    a = cmp.meter_reply(prep, 9, rng=rng)
    b = cmp.meter_reply(prep, 9, rng=rng)
    assert not set(a.values) & set(b.values)


def test_digits_helpers() -> None:
    assert cmp.num_digits(24, 4) == 12 and cmp.num_digits(5, 4) == 3 and cmp.num_digits(32, 16) == 8
    assert cmp.digits_of(0b1101, 2, 4) == [1, 0, 1, 1]
    with pytest.raises(PlaintextOverflow):
        cmp.digits_of(16, 2, 4)
    assert cmp.offset_value(-128, 8) == 0 and cmp.offset_value(127, 8) == 255
    assert cmp.clamp_value(10**9, 8) == 127 and cmp.clamp_value(-(10**9), 8) == -128
    with pytest.raises(ValueError):
        cmp.num_digits(8, 3)
