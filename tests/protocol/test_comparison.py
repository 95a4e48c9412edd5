"""Meter-keyed comparison: exact results on every edge, properties, validation, one-use sessions."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto.elgamal import GROUPS, get_group
from privmeter.errors import (
    InvalidCiphertext,
    InvalidKey,
    MalformedMessage,
    PlaintextOverflow,
    UnexpectedMessage,
)
from privmeter.protocol import comparison as cmp
from privmeter.protocol.codec import decode, encode

SMALL = get_group("test512", allow_insecure=True)


def wire(msg):
    return decode(encode(msg), expect=type(msg))


def session(x: int, t: int, bits: int, radix: int, rng: random.Random, group=SMALL):
    meter = cmp.MeterComparison(group, x, bits=bits, radix=radix, rng=rng)
    util = cmp.UtilityComparison(
        wire(meter.offer), t, bits=bits, radix=radix, allow_insecure=group.insecure, rng=rng
    )
    return meter, util


def compare(x: int, t: int, bits: int, radix: int, rng: random.Random, group=SMALL) -> bool:
    """Run one comparison through the wire codec on every leg."""
    meter, util = session(x, t, bits, radix, rng, group)
    return util.receive(meter.answer(wire(util.challenge)))


@pytest.mark.parametrize("radix", cmp.RADICES)
def test_exhaustive_small_range(radix: int, rng: random.Random) -> None:
    bits = 4  # values -8..7; thresholds -7..7; readings beyond the range are clamped
    for t in range(-7, 8):
        for x in range(-10, 10):
            assert compare(x, t, bits, radix, rng) == (x >= t), (radix, t, x)


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
@pytest.mark.parametrize("radix", [2, 4])
def test_edges(bits: int, radix: int, rng: random.Random) -> None:
    half = 1 << (bits - 1)
    ts = [0, 1, -1, half - 1, -half + 1, 12345 % half, -(12345 % half)]
    for t in ts:
        for x in {t, t - 1, t + 1, -half, half - 1, 0}:
            assert compare(x, t, bits, radix, rng) == (x >= t), (t, x)


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from([5, 16, 24, 32]),
    radix=st.sampled_from(cmp.RADICES),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_property_matches_plaintext(bits: int, radix: int, data: st.DataObject, seed: int) -> None:
    half = 1 << (bits - 1)
    t = data.draw(st.integers(-half + 1, half - 1))
    x = data.draw(st.integers(-4 * half, 4 * half))  # includes readings beyond the range
    assert compare(x, t, bits, radix, random.Random(seed)) == (x >= t)


@settings(max_examples=30, deadline=None)
@given(
    x=st.integers(-(2**23), 2**23 - 1),
    t=st.integers(-(2**23) + 1, 2**23 - 1),
    seed=st.integers(0, 2**32),
)
def test_exactly_one_zero_iff_condition(x: int, t: int, seed: int) -> None:
    """One zero among the D values when ``x < T`` (sign 0) or ``x >= T`` (sign 1), none otherwise."""
    meter, util = session(x, t, 24, 4, random.Random(seed))
    pairs = meter.check(util.challenge)
    zeros = sum(meter._key.zero_tests(pairs))  # test-only peek at the meter's key
    want = (x >= t) if util.sign else (x < t)
    assert zeros == (1 if want else 0)


def test_zero_position_is_shuffled() -> None:
    rng = random.Random(3)
    positions = set()
    while len(positions) < 5:
        meter, util = session(7, 100, 8, 2, rng)
        tests = meter._key.zero_tests(meter.check(util.challenge))
        if any(tests):
            positions.add(tests.index(True))
    assert len(positions) >= 5  # the zero moves around (8 positions possible)


def test_the_meter_does_not_learn_the_result() -> None:
    """The bit the meter releases is [x < T] xor a secret uniform sign: both values occur."""
    rng = random.Random(4)
    bits = {compare_bit(rng) for _ in range(24)}
    assert bits == {True, False}


def compare_bit(rng: random.Random) -> bool:
    meter, util = session(500, 100, 16, 4, rng)
    return meter.answer(util.challenge)


@pytest.mark.parametrize("name", ["ffdhe2048", "ffdhe3072"])
def test_product_groups(name: str, rng: random.Random) -> None:
    for x, t in ((1000, 1000), (999, 1000), (-5, -4)):
        assert compare(x, t, 24, cmp.DEFAULT_RADIX, rng, GROUPS[name]) == (x >= t)


def test_threshold_range_checked(rng: random.Random) -> None:
    meter = cmp.MeterComparison(SMALL, 3, bits=8, rng=rng)
    for t in (-128, 128):
        with pytest.raises(PlaintextOverflow):
            cmp.UtilityComparison(meter.offer, t, bits=8, allow_insecure=True, rng=rng)


def test_malformed_offers_rejected(rng: random.Random) -> None:
    meter = cmp.MeterComparison(SMALL, 3, bits=8, radix=4, rng=rng)
    off = meter.offer
    ok = {"bits": 8, "radix": 4, "allow_insecure": True}
    with pytest.raises(ValueError):  # wrong shape
        dataclasses.replace(off, values=off.values[:-2])
    with pytest.raises(ValueError):
        dataclasses.replace(off, radix=3)
    with pytest.raises(InvalidKey):  # the insecure test group needs an explicit allowance
        cmp.check_offer(off, bits=8, radix=4)
    with pytest.raises(InvalidKey):
        cmp.check_offer(dataclasses.replace(off, group="my-smooth-group"), **ok)
    with pytest.raises(MalformedMessage):
        cmp.check_offer(off, bits=8, radix=2, allow_insecure=True)
    p = SMALL.p
    for bad in (p, p - 1, p + 5):  # outside (0, p) or of order 2 (not a residue)
        with pytest.raises(InvalidCiphertext):
            cmp.check_offer(dataclasses.replace(off, values=(bad, *off.values[1:])), **ok)
        with pytest.raises(InvalidCiphertext):
            cmp.check_offer(dataclasses.replace(off, public=bad), **ok)
    with pytest.raises(InvalidCiphertext):
        cmp.check_offer(dataclasses.replace(off, public=1), **ok)
    assert cmp.check_offer(off, **ok) is SMALL
    with pytest.raises(MalformedMessage):
        decode(encode(off)[:-5])


def test_malformed_challenges_rejected_and_session_keeps_waiting(rng: random.Random) -> None:
    meter, util = session(60, 50, 8, 2, rng)
    good = util.challenge
    p = SMALL.p
    bads = [
        (dataclasses.replace(good, offer_digest=bytes(32)), UnexpectedMessage),
        (dataclasses.replace(good, values=good.values[:-2]), MalformedMessage),
        (dataclasses.replace(good, values=(*good.values, 4, 4)), MalformedMessage),
        (dataclasses.replace(good, values=(p - 1, *good.values[1:])), InvalidCiphertext),
        (dataclasses.replace(good, values=(p + 1, *good.values[1:])), InvalidCiphertext),
    ]
    for bad, err in bads:
        with pytest.raises(err):
            meter.answer(bad)
        assert meter.state is cmp.SessionState.OFFERED and not meter._key.used
    assert util.receive(meter.answer(good)) is True
    assert meter._key.used  # the key is erased after its one batch of zero tests
    with pytest.raises(UnexpectedMessage):
        meter.answer(good)
    with pytest.raises(UnexpectedMessage):
        util.receive(True)


def test_offers_are_fresh_keys_and_ciphertexts(rng: random.Random) -> None:
    a = cmp.MeterComparison(SMALL, 9, bits=8, rng=rng).offer
    b = cmp.MeterComparison(SMALL, 9, bits=8, rng=rng).offer
    assert a.public != b.public and not set(a.values) & set(b.values)


def test_digits_helpers() -> None:
    assert cmp.num_digits(24, 4) == 12 and cmp.num_digits(5, 4) == 3 and cmp.num_digits(32, 16) == 8
    assert cmp.digits_of(0b1101, 2, 4) == [1, 0, 1, 1]
    with pytest.raises(PlaintextOverflow):
        cmp.digits_of(16, 2, 4)
    assert cmp.offset_value(-128, 8) == 0 and cmp.offset_value(127, 8) == 255
    assert cmp.clamp_value(10**9, 8) == 127 and cmp.clamp_value(-(10**9), 8) == -128
    with pytest.raises(ValueError):
        cmp.num_digits(8, 3)
