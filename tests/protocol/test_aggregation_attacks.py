"""Masked aggregation under attack: each attack fails with a specific error or
yields only masked noise, and the attacked party keeps working."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import numpy as np
import pytest

from privmeter.crypto import masks, shamir
from privmeter.crypto.signing import SigningKey
from privmeter.errors import (
    GroupTooSmall,
    InvalidCiphertext,
    InvalidSignature,
    MalformedMessage,
    MessageTooLarge,
    ReplayedMessage,
    StaleMessage,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.protocol.aggregation import ANNOUNCE_CONTEXT, _mac
from privmeter.protocol.aggregation_messages import (
    DENSE_RECORD_BYTES,
    Announcement,
    IntervalStart,
    KeyAdvert,
    KeyBundle,
    bitmap_from,
)
from privmeter.protocol.codec import decode, encode
from privmeter.sim.aggregation_group import GroupSimulation, make_group


def reading(meter: str, t: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{meter}/{t}".encode()).digest()[:4], "big") % 9000 - 1000


def _running(n: int = 8, **kw: object) -> GroupSimulation:
    g = make_group(n, **kw)  # type: ignore[arg-type]
    g.setup()
    g.step(reading)  # priming
    return g


def _collect(g: GroupSimulation, offline: set[str] = frozenset()) -> dict[str, bytes]:  # type: ignore[assignment]
    """Open an interval, gather encoded inputs, without closing it."""
    out = {}
    for mid, start in g.headend.open_interval().items():
        if mid not in offline:
            out[mid] = encode(g.meters[mid].handle_start(start, reading(mid, g.headend.current)))
    return out


def _signed_start(g: GroupSimulation, ann: Announcement, shares: bytes) -> IntervalStart:
    return IntervalStart(
        announcement=ann, signature=g.headend._sk.sign(ANNOUNCE_CONTEXT, encode(ann)), shares=shares
    )


# -- the head-end lies about a dropout ---------------------------------------------------


def test_false_dropout_yields_only_masked_noise() -> None:
    g = _running(8)
    he, ep = g.headend, g.headend._ep
    victim = "m00003"
    v = ep.index[victim]
    t = he.current + 1
    inputs = _collect(g)
    for mid, data in inputs.items():
        if mid != victim:  # the head-end "loses" the victim's (received) input
            he.handle_input(data)
    stolen = decode(inputs[victim])
    he.close_interval()
    rec = he._inputs[t - 1][v].recovery  # the victim's recovery pads, kept by the attacker
    # next interval: meters reveal for t, believing the victim dropped
    nxt = _collect(g)
    for data in nxt.values():
        he.handle_input(data)
    res = he.close_interval()
    assert res is not None and res.interval == t and victim in res.dropped
    assert res.total == (sum(reading(m, t) for m in res.survivors),)  # others still exact
    # The attacker now holds every z-share of the victim and no b-share.
    b_pts, z_pts = [], []
    for mid, data in nxt.items():
        msg = decode(data)
        w = ep.index[mid]
        held = [u for u in ep.holders[w] if u in he._enrolled[t]]
        if v in held:
            k = held.index(v)
            z_pts.append((w + 1, int.from_bytes(msg.reveals[16 * k : 16 * k + 16], "big")))
    assert len(b_pts) == 0 and len(z_pts) >= ep.threshold
    z_seed = shamir.reconstruct(z_pts, ep.threshold).to_bytes(16, "big")
    y = np.array(stolen.masked, dtype=np.uint64)
    for p, u in enumerate(ep.nbrs[v]):  # strip every pairwise mask of the victim
        pad = masks.expand_bytes(z_seed, 8, domain=masks.DOMAIN_RECOVERY, interval=t, index=u)
        m = np.frombuffer(masks.xor_bytes(rec[8 * p : 8 * p + 8], pad), dtype="<u8").astype(
            np.uint64
        )
        y = y - m if v < u else y + m
    # What is left is x + PRG(b): uniform noise, not the reading.
    assert masks.to_signed(y) != (reading(victim, t),)
    assert abs(masks.to_signed(y)[0]) > 10**9


# -- unmasking below the minimum -------------------------------------------------------


def test_meters_refuse_to_unmask_below_minimum() -> None:
    g = _running(8, min_survivors=6)
    he = g.headend
    inputs = _collect(g)
    for mid in sorted(inputs)[:5]:  # only 5 "survive"
        he.handle_input(inputs[mid])
    he.close_interval()
    starts = he.open_interval()
    meter = g.meters["m00000"]
    before = (meter._last, dict(meter._held))
    with pytest.raises(GroupTooSmall):
        meter.handle_start(starts["m00000"], 1)
    assert (meter._last, meter._held) == before  # state unchanged


def test_headend_refuses_to_publish_below_minimum() -> None:
    g = _running(6, min_survivors=5)
    g.step(reading)
    g.step(reading, offline={"m00000", "m00001"})
    res = g.step(reading, offline={"m00000", "m00001"})
    assert g.refusals  # the meters refused to reveal ...
    assert res is not None and res.total is None and "below the minimum" in res.error


# -- different survivor lists to different meters ------------------------------------------


def test_split_survivor_lists_never_give_both_kinds() -> None:
    g = _running(9)
    he, ep = g.headend, g.headend._ep
    victim = 4
    t = he.current + 1
    for data in _collect(g).values():
        he.handle_input(data)
    he.close_interval()
    enrolled = he._enrolled[t]
    starts = he.open_interval()
    holders = [w for w in range(ep.n) if victim in ep.holders[w]]
    n_b = n_z = 0
    for i, w in enumerate(holders):
        told_alive = i % 2 == 0
        surv = enrolled if told_alive else enrolled - {victim}
        ann = dataclasses.replace(
            starts[ep.roster[w]].announcement,
            survivors=bitmap_from(surv, ep.n),
            dropped=bitmap_from(enrolled - surv, ep.n),
        )
        msg = g.meters[ep.roster[w]].handle_start(
            _signed_start(g, ann, starts[ep.roster[w]].shares), 1
        )
        assert msg.reveals  # each meter answers once, with one kind for the victim
        n_b += told_alive
        n_z += not told_alive
    # majority threshold: at most one of the two secrets is ever reconstructable
    assert n_b + n_z == len(holders) < 2 * ep.threshold
    assert min(n_b, n_z) < ep.threshold
    with pytest.raises(ValueError):
        shamir.reconstruct([(1, 1)] * min(n_b, n_z), ep.threshold)


# -- replays, forgeries, stale and unknown ----------------------------------------------


def test_replayed_and_stale_messages() -> None:
    g = _running(6)
    he = g.headend
    starts = he.open_interval()
    m = g.meters["m00001"]
    data = encode(m.handle_start(starts["m00001"], 5))
    with pytest.raises(ReplayedMessage):
        m.handle_start(starts["m00001"], 5)
    he.handle_input(data)
    with pytest.raises(ReplayedMessage):
        he.handle_input(data)
    for mid, s in starts.items():
        if mid != "m00001":
            he.handle_input(encode(g.meters[mid].handle_start(s, reading(mid, he.current))))
    he.close_interval()
    old = starts["m00002"]
    he.open_interval()
    with pytest.raises(StaleMessage):
        he.handle_input(data)
    with pytest.raises(ReplayedMessage):
        g.meters["m00002"].handle_start(old, 1)


def test_forged_inputs_are_rejected_and_headend_keeps_working() -> None:
    g = _running(6)
    he = g.headend
    inputs = _collect(g)
    msg = decode(inputs["m00002"])
    tampered = dataclasses.replace(msg, masked=(msg.masked[0] ^ 1,))
    with pytest.raises(InvalidSignature):
        he.handle_input(encode(tampered))
    impostor = dataclasses.replace(msg, meter_id="m00003")  # MAC key is per meter
    with pytest.raises(InvalidSignature):
        he.handle_input(encode(impostor))
    with pytest.raises(UnknownParty):
        he.handle_input(encode(dataclasses.replace(msg, meter_id="intruder")))
    with pytest.raises(UnexpectedMessage):
        he.handle_input(
            encode(
                dataclasses.replace(msg, interval=msg.interval + 1, reveal_interval=-1, reveals=b"")
            )
        )
    for data in inputs.values():
        he.handle_input(data)
    assert he.close_interval() is None or True
    res = g.step(reading)
    assert res is not None and res.error == ""
    assert res.total == (sum(reading(m, res.interval) for m in res.survivors),)


def test_malicious_holder_revealing_a_non_field_share_fails_the_interval_only() -> None:
    """A (MAC-holding, i.e. real but malicious) meter reveals 0xff..ff as a
    share: the interval is not unmasked, with a reason naming the holder,
    nothing is published, and the next interval is exact again."""
    g = _running(6)
    g.step(reading)
    he = g.headend
    inputs = _collect(g)
    msg = decode(inputs["m00002"])
    assert msg.reveals
    evil = dataclasses.replace(msg, reveals=b"\xff" * 16 + msg.reveals[16:], tag=b"")
    evil = dataclasses.replace(evil, tag=_mac(g.meters["m00002"]._mac_key, evil))
    for mid, data in inputs.items():
        he.handle_input(encode(evil) if mid == "m00002" else data)
    res = he.close_interval()
    assert res is not None and res.total is None
    assert "m00002" in res.error and "outside the field" in res.error
    g.step(reading)
    res = g.step(reading)
    assert res is not None and res.error == ""
    assert res.total == (sum(reading(m, res.interval) for m in res.survivors),)


def test_forged_announcement_and_shares() -> None:
    g = _running(6)
    starts = g.headend.open_interval()
    s = starts["m00000"]
    rogue = SigningKey.from_seed(bytes(32))
    forged = IntervalStart(
        announcement=s.announcement,
        signature=rogue.sign(ANNOUNCE_CONTEXT, encode(s.announcement)),
        shares=s.shares,
    )
    m = g.meters["m00000"]
    with pytest.raises(InvalidSignature):
        m.handle_start(forged, 1)
    bad = bytearray(s.shares)
    bad[5] ^= 1
    with pytest.raises(InvalidCiphertext):
        m.handle_start(dataclasses.replace(s, shares=bytes(bad)), 1)
    with pytest.raises(MalformedMessage):
        m.handle_start(dataclasses.replace(s, shares=s.shares[:-48]), 1)
    assert m.handle_start(s, 1).interval == s.announcement.interval  # still works


def test_late_records_are_authenticated_and_bound_to_their_interval() -> None:
    """A meter back after missing an interval gets that interval's records again
    (``late``): tampered ones, or this interval's records passed off as the
    previous interval's, fail AEAD; a meter that did answer ignores them."""
    g = _running(6)
    g.step(reading)
    g.step(reading, offline={"m00000"})  # m00000 misses this interval
    starts = g.headend.open_interval()
    s = starts["m00000"]
    assert len(s.late) == DENSE_RECORD_BYTES * 5
    m = g.meters["m00000"]
    bad = bytearray(s.late)
    bad[7] ^= 1
    with pytest.raises(InvalidCiphertext):
        m.handle_start(dataclasses.replace(s, late=bytes(bad)), 1)
    with pytest.raises(InvalidCiphertext):  # records of t offered as those of t-1
        m.handle_start(dataclasses.replace(s, late=s.shares), 1)
    with pytest.raises(MalformedMessage):
        m.handle_start(dataclasses.replace(s, late=s.late[:-48]), 1)
    out = m.handle_start(s, 1)  # still works, and reveals for the interval it missed
    assert out.reveal_interval == s.announcement.interval - 1 and len(out.reveals) == 16 * 6
    other = starts["m00001"]
    assert (
        g.meters["m00001"]
        .handle_start(dataclasses.replace(other, late=bytes(bad)), 1)
        .reveal_interval
        == other.announcement.interval - 1
    )


def test_headend_cannot_substitute_keys_in_the_bundle() -> None:
    g = make_group(6, seed=3)
    for m in g.meters.values():
        g.headend.handle_advert(m.advertise())
    bundle = g.headend.make_bundle()
    mitm = random.Random(9).getrandbits(256).to_bytes(32, "big")
    from privmeter.crypto.keyagreement import AgreementKey

    evil_pub = AgreementKey.generate(random.Random(9)).public
    swapped = tuple(
        dataclasses.replace(a, public=evil_pub) if a.party_id == "m00001" else a
        for a in bundle.adverts
    )
    meter = g.meters["m00000"]
    with pytest.raises(InvalidSignature):
        meter.handle_bundle(dataclasses.replace(bundle, adverts=swapped))
    without_me = tuple(a for a in bundle.adverts if a.party_id != "m00000")
    with pytest.raises(MalformedMessage):
        meter.handle_bundle(dataclasses.replace(bundle, adverts=without_me, degree=4))
    stranger = KeyAdvert(
        group="feeder-1",
        epoch=1,
        party_id="zz-unregistered",
        public=evil_pub,
        nonce=mitm[:16],
        signature=bytes(64),
    )
    with pytest.raises(UnknownParty):
        meter.handle_bundle(dataclasses.replace(bundle, adverts=(*bundle.adverts, stranger)))
    meter.handle_bundle(bundle)  # the genuine one is still accepted
    with pytest.raises(UnexpectedMessage):
        meter.handle_bundle(bundle)


def test_forged_advert_rejected_by_headend() -> None:
    g = make_group(5)
    a = g.meters["m00000"].advertise()
    with pytest.raises(InvalidSignature):
        g.headend.handle_advert(dataclasses.replace(a, nonce=bytes(16)))
    g.headend.handle_advert(a)
    with pytest.raises(ReplayedMessage):
        g.headend.handle_advert(a)


# -- oversized and malformed --------------------------------------------------------------


def test_oversized_and_malformed_messages() -> None:
    g = _running(5)
    he = g.headend
    inputs = _collect(g)
    with pytest.raises(MessageTooLarge):
        he.handle_input(b"\x93" + bytes(5 * 1024 * 1024))
    with pytest.raises(MalformedMessage):
        he.handle_input(b"\x00garbage")
    msg = decode(inputs["m00001"])
    with pytest.raises(InvalidSignature):  # tampering breaks the MAC first
        he.handle_input(encode(dataclasses.replace(msg, shares=msg.shares[:48])))
    short = dataclasses.replace(msg, shares=msg.shares[:48], tag=b"")
    short = dataclasses.replace(short, tag=_mac(he._macs[1], short))  # a buggy meter
    with pytest.raises(MalformedMessage):
        he.handle_input(encode(short))
    with pytest.raises(ValueError):  # masked values must be uint64 (decode -> MalformedMessage)
        dataclasses.replace(msg, masked=(-1,))
    with pytest.raises(MalformedMessage):
        decode(encode(g.headend._ep.bundle)[:-3], expect=KeyBundle)
    for data in inputs.values():
        he.handle_input(data)
    he.close_interval()


def test_forged_or_partial_certificates_are_refused_with_specific_errors() -> None:
    """Sparse graph of 40 (committee 33, quorum 17).  The meter checks the
    certificate before it reveals: a signer outside the committee or more
    than the quorum (``MalformedMessage``), fewer than the quorum or an
    announcement other than the one it endorsed (``EquivocationRefused``), a
    bad signature (``InvalidSignature``); its state is unchanged each time
    and the honest start still works.  A certificate in a complete graph,
    and badly shaped ones, never decode or are refused."""
    from privmeter.errors import EquivocationRefused
    from privmeter.protocol.aggregation_messages import Certificate, bitmap_to_set

    g = make_group(40, seed=2)
    g.setup()
    for _ in range(3):  # 1000 (priming), 1001, 1002
        g.step(reading)
    starts = g.headend.open_interval()  # 1003: certificate of the announcement of 1002
    ep = g.headend._require_epoch()
    mid = g.headend.roster[0]
    start = starts[mid]
    cert = start.certificate
    assert cert is not None
    signers = sorted(bitmap_to_set(cert.signers, 40))
    assert len(signers) == ep.quorum == 17 and set(signers) <= set(ep.committee)
    outsider = next(w for w in range(40) if w not in ep.committee)
    spare = next(w for w in ep.committee if w not in signers)
    sig = cert.signatures

    def variant(**kw: object) -> bytes:
        return encode(dataclasses.replace(start, certificate=dataclasses.replace(cert, **kw)))

    cases = [
        (variant(signers=bitmap_from([*signers[1:], outsider], 40)), MalformedMessage),
        (variant(signers=bitmap_from(signers[:-1], 40), signatures=sig[:-64]), EquivocationRefused),
        (
            variant(signers=bitmap_from([*signers, spare], 40), signatures=sig + bytes(64)),
            MalformedMessage,
        ),
        (variant(signatures=sig[:5] + bytes([sig[5] ^ 1]) + sig[6:]), InvalidSignature),
        (
            variant(
                announcement=dataclasses.replace(
                    cert.announcement,
                    dropped=bitmap_from([3], 40),
                    survivors=bitmap_from(set(range(40)) - {3}, 40),
                )
            ),
            EquivocationRefused,
        ),
    ]
    meter = g.meters[mid]
    for data, err in cases:
        with pytest.raises(err):
            meter.handle_start(data, 5)
    out = meter.handle_start(encode(start), 5)  # state unchanged: the honest start works
    assert out.reveal_interval == 1001 and len(out.endorsement) == 64
    with pytest.raises(ValueError):  # one signature per signer
        Certificate(announcement=cert.announcement, signers=cert.signers, signatures=sig[:-1])
    with pytest.raises(ValueError):  # a bit beyond the roster
        Certificate(announcement=cert.announcement, signers=b"\xff" * 5 + b"\x01", signatures=sig)
    with pytest.raises(ValueError):  # not the previous interval's announcement
        dataclasses.replace(
            start, certificate=dataclasses.replace(cert, announcement=start.announcement)
        )
    # a complete graph takes no certificate
    d = make_group(12, seed=2)
    d.setup()
    d.step(reading)
    dstart = d.headend.open_interval()["m00000"]
    prev = dataclasses.replace(dstart.announcement, interval=dstart.announcement.interval - 1)
    bogus = Certificate(announcement=prev, signers=bitmap_from([1], 12), signatures=bytes(64))
    with pytest.raises(MalformedMessage):
        d.meters["m00000"].handle_start(encode(dataclasses.replace(dstart, certificate=bogus)), 5)
