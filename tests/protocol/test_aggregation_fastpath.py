"""The head-end's fast paths agree exactly with the generic ones they replace.

``decode_input`` vs ``codec.decode`` (same object, or the same error class,
on valid, mutated and non-canonical inputs), ``open_interval_wire`` vs
encoding ``open_interval``, the MAC cut from the wire bytes vs the MAC of a
re-encoding, ``SubsetInterpolator`` vs ``reconstruct`` and ``expand_many`` vs
``expand_bytes``; plus a fresh dropout pattern every interval (cold
Lagrange coefficients) still gives exact totals.
"""

from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest

from privmeter.crypto import masks, shamir
from privmeter.errors import InvalidSignature, RemoteProtocolError
from privmeter.protocol.aggregation import _mac
from privmeter.protocol.aggregation_messages import MaskedInput, decode_input
from privmeter.protocol.codec import decode, encode
from privmeter.sim.aggregation_group import make_group


def _reading(meter: str, t: int) -> int:
    return (int(meter[1:]) * 7919 + t * 104_729) % 23_000 - 3_000


def _inputs(n: int = 12) -> tuple[object, list[bytes]]:
    """A set-up group after two intervals, and the raw inputs of the third."""
    g = make_group(n, seed=5)
    g.setup()
    g.step(_reading)
    g.step(_reading)
    starts = g.headend.open_interval_wire()
    t = g.headend.current
    outs = [encode(g.meters[m].handle_start(d, _reading(m, t))) for m, d in starts.items()]
    return g, outs


def _outcome(data: bytes, fn: object) -> object:
    try:
        return fn(data)  # type: ignore[operator]
    except RemoteProtocolError as exc:
        return type(exc)


def test_decode_input_equals_codec_on_valid_and_mutated_bytes() -> None:
    _, outs = _inputs()
    rng = random.Random(7)
    cases = list(outs)
    for data in outs[:4]:
        for _ in range(150):
            b = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
        cases.append(data[:-1])
        cases.append(data + b"\x00")
    agree = 0
    for data in cases:
        fast = _outcome(data, decode_input)
        slow = _outcome(data, lambda d: decode(d, expect=MaskedInput))
        assert fast == slow
        agree += isinstance(fast, MaskedInput)
    assert agree >= len(outs)  # every valid input decoded by the fast path


def test_decode_input_non_canonical_forms_go_through_the_codec() -> None:
    _, outs = _inputs()
    msg = decode(outs[0], expect=MaskedInput)
    raw = msgpack.unpackb(outs[0], raw=False)
    # a small int as a codec big-int ext: the codec accepts it, so must we
    fields = dict(raw[2])
    fields["epoch"] = msgpack.ExtType(1, msg.epoch.to_bytes(1, "big"))
    data = msgpack.packb([1, "agg.input.v2", fields], use_bin_type=True)
    assert decode_input(data) == decode(data, expect=MaskedInput) == msg
    # a bool where an int belongs, an extra field, another tag: all the codec's errors
    for bad in ({**raw[2], "interval": True}, {**raw[2], "x": 1}):
        data = msgpack.packb([1, "agg.input.v2", bad], use_bin_type=True)
        assert _outcome(data, decode_input) == _outcome(data, decode) != msg
    data = msgpack.packb([1, "agg.bundle", raw[2]], use_bin_type=True)
    assert _outcome(data, decode_input) == _outcome(data, lambda d: decode(d, expect=MaskedInput))


def test_open_interval_wire_is_byte_identical_to_encoding() -> None:
    a = make_group(9, seed=3)
    b = make_group(9, seed=3)
    a.setup()
    b.setup()
    for t in range(4):
        off = {"m00002"} if t == 2 else set()
        wire = a.headend.open_interval_wire()
        objs = b.headend.open_interval()
        assert wire == {m: encode(s) for m, s in objs.items()}
        for m in sorted(wire):
            if m in off:
                continue
            # the signed announcement is made fresh each time (Ed25519 is deterministic)
            a.headend.handle_input(encode(a.meters[m].handle_start(wire[m], _reading(m, t))))
            b.headend.handle_input(encode(b.meters[m].handle_start(objs[m], _reading(m, t))))
        assert a.headend.close_interval() == b.headend.close_interval()


def test_mac_from_wire_equals_mac_of_reencoding_and_still_rejects_tampering() -> None:
    g, outs = _inputs()
    he = g.headend  # type: ignore[attr-defined]
    for data in outs:
        msg = decode(data, expect=MaskedInput)
        w = he.roster.index(msg.meter_id)
        assert _mac(he._macs[w], msg, data) == _mac(he._macs[w], msg) == msg.tag
    # a flipped bit in a bytes field keeps the message well-formed: MAC fails
    msg = decode(outs[3], expect=MaskedInput)
    bad = dataclasses.replace(msg, recovery=bytes([msg.recovery[0] ^ 1]) + msg.recovery[1:])
    with pytest.raises(InvalidSignature):
        he.handle_input(encode(bad))
    with pytest.raises(InvalidSignature):
        he.handle_input(bad)


def test_subset_interpolator_equals_reconstruct_from_any_large_enough_subset() -> None:
    rng = random.Random(11)
    for thr, n in ((1, 1), (2, 3), (17, 33), (33, 65)):
        xs = tuple(rng.sample(range(1, 400), n))
        (ip,) = shamir.subset_interpolators([xs])
        for _ in range(20):
            secret = rng.getrandbits(127)
            ys = shamir.share(secret, list(xs), thr, rng=rng)
            present = sorted(rng.sample(range(n), rng.randint(thr, n)))
            sub = [ys[k] for k in present]
            assert shamir.interpolate_subsets([(ip, present, sub)], thr) == [secret]
            both = list(zip(present, sub, strict=True))
            rng.shuffle(both)  # any order of the points
            assert shamir.interpolate_subsets(
                [(ip, [p for p, _ in both], [y for _, y in both])], thr
            ) == [secret]
            every = list(range(n))  # all points, shuffled
            rng.shuffle(every)
            assert shamir.interpolate_subsets([(ip, every, [ys[k] for k in every])], thr) == [
                secret
            ]
            pts = [(xs[k], ys[k]) for k in present]
            rng.shuffle(pts)
            assert shamir.reconstruct(pts, thr) == secret
    (ip,) = shamir.subset_interpolators([(1, 2, 3)])
    with pytest.raises(ValueError, match="need"):
        shamir.interpolate_subsets([(ip, [0], [5])], 2)
    with pytest.raises(ValueError, match="field"):
        shamir.interpolate_subsets([(ip, [0, 1], [5, shamir.PRIME])], 2)
    with pytest.raises(ValueError, match="distinct positions"):
        shamir.interpolate_subsets([(ip, [0, 0], [5, 6])], 2)
    with pytest.raises(ValueError, match="distinct positions"):
        shamir.interpolate_subsets([(ip, [0, 3], [5, 6])], 2)


def test_expand_many_is_the_concatenation() -> None:
    seed = bytes(range(16))
    items = [(3, 8), (7, 64), (9, 200), (0, 16)]
    want = b"".join(
        masks.expand_bytes(seed, nb, domain=masks.DOMAIN_RECOVERY, interval=5, index=i)
        for i, nb in items
    )
    assert masks.expand_many(seed, items, domain=masks.DOMAIN_RECOVERY, interval=5) == want
    with pytest.raises(ValueError):
        masks.expand_many(b"short", items, domain=1, interval=0)


def test_fresh_dropout_pattern_every_interval_is_exact() -> None:
    shamir.lagrange_at_zero.cache_clear()
    shamir._MANY_CACHE.clear()
    g = make_group(60, seed=9)
    g.setup()
    rng = random.Random(4)
    ids = sorted(g.meters)
    seen = 0
    for _ in range(6 + g.headend.lag):
        res = g.step(_reading, offline=set(rng.sample(ids, 3)))
        if res is not None:
            assert res.total == (sum(_reading(m, res.interval) for m in res.survivors),)
            seen += 1
    assert seen == 5  # the priming interval and the lag (2 in this sparse graph) fill the pipeline


def test_lagrange_many_matches_the_single_version() -> None:
    rng = random.Random(13)
    sets = [tuple(rng.sample(range(1, 201), 17)) for _ in range(40)]
    sets += [(1,), (3, 5), (9, 2, 7), tuple(rng.sample(range(1, 20_001), 33)), (1 << 40, 3)]
    shamir._MANY_CACHE.clear()
    want = [shamir.lagrange_at_zero(xs) for xs in sets]
    assert shamir.lagrange_many(sets) == want
    assert shamir.lagrange_many(sets) == want  # from the cache
    secrets = [rng.getrandbits(127) for _ in sets]
    ips = shamir.subset_interpolators(sets)
    jobs = []
    for secret, xs, ip in zip(secrets, sets, ips, strict=True):
        ys = shamir.share(secret, list(xs), len(xs), rng=rng)
        jobs.append((ip, list(range(len(xs))), ys))
    assert shamir.interpolate_subsets(jobs, 1) == secrets
    with pytest.raises(ValueError, match="distinct"):
        shamir.lagrange_many([(4, 4)])


def test_inputs_in_any_arrival_order_give_exact_totals() -> None:
    """Over a network the head-end gets the inputs in any order (a reveal's
    position among a peer's holders must not depend on arrival order)."""
    g = make_group(9, seed=5)
    g.setup()
    rng = random.Random(9)
    for t in range(6):
        starts = g.headend.open_interval_wire()
        outs = [
            encode(g.meters[m].handle_start(d, _reading(m, g.headend.current)))
            for m, d in starts.items()
            if not (t == 3 and m == "m00004")
        ]
        rng.shuffle(outs)
        for o in outs:
            g.headend.handle_input(o)
        res = g.headend.close_interval()
        if res is not None:
            assert res.error == "", res
            assert res.total == (sum(_reading(m, res.interval) for m in res.survivors),)
