"""Masked aggregation, honest runs: exact totals against the plaintext sum.

Groups of 5 to 1,000 meters with 0 %, 10 %, 30 % dropouts, meters that drop
before sending, after sending their masked value (i.e. during recovery),
meters leaving and rejoining, a new epoch with a new meter, vectors.
"""

from __future__ import annotations

import hashlib

import pytest

from privmeter.protocol.aggregation_messages import (
    DENSE_RECORD_BYTES,
    IntervalStart,
    KeyBundle,
    MaskedInput,
    default_degree,
    neighbours,
    threshold_for,
)
from privmeter.protocol.codec import decode, encode
from privmeter.sim.aggregation_group import GroupSimulation, make_group


def reading(meter: str, t: int) -> int:
    """A deterministic signed reading in Wh (negative = export)."""
    h = int.from_bytes(hashlib.sha256(f"{meter}/{t}".encode()).digest()[:4], "big")
    return h % 23_000 - 3_000


def expected(res_survivors: tuple[str, ...], t: int) -> int:
    return sum(reading(m, t) for m in res_survivors)


@pytest.mark.parametrize(
    ("n", "dropout", "degree"),
    [
        (5, 0.0, None),
        (5, 0.1, None),
        (5, 0.3, None),
        (40, 0.1, None),
        (40, 0.3, 39),
        (100, 0.3, 99),
        pytest.param(1000, 0.0, None, marks=pytest.mark.slow),
        pytest.param(1000, 0.1, 40, marks=pytest.mark.slow),  # 40: the floor a meter accepts
        pytest.param(1000, 0.3, 96, marks=pytest.mark.slow),
    ],  # 30 %: a denser graph (see docs)
)
def test_exact_totals_with_dropouts(n: int, dropout: float, degree: int | None) -> None:
    g = make_group(n, degree=degree, seed=n)
    g.setup()
    ids = sorted(g.meters)
    ndrop = max(int(n * dropout), 1 if dropout else 0)
    early = set(ids[1 : 1 + ndrop])  # offline from interval 1002 on: never send y_1002
    late = {ids[-1]} if dropout else set()  # send y_1002, then vanish: drop during recovery
    lag = g.headend.lag  # 1 in a complete graph, 2 in a sparse one (certified reveals)
    assert lag == (1 if g.headend._require_epoch().dense else 2)
    assert g.step(reading) is None  # 1000: priming, shares for 1001
    assert g.step(reading) is None  # 1001: everyone; nothing final yet
    got = [g.step(reading, offline=early)]  # 1002 opens; 1001 final in a complete graph
    for _ in range(lag + 1):  # late meters send y_1002, then are gone when its reveals are due
        got.append(g.step(reading, offline=early | late))
    final = {r.interval: r for r in got if r is not None}
    assert sorted(final) == [1001, 1002, 1003]
    r1001, r1002, r1003 = final[1001], final[1002], final[1003]
    assert r1001.error == ""
    assert r1001.survivors == tuple(ids) and r1001.dropped == ()
    assert r1001.total == (expected(r1001.survivors, 1001),)
    assert r1002.error == "", r1002
    assert set(r1002.dropped) == early
    assert set(r1002.survivors) == set(ids) - early
    assert r1002.total == (expected(r1002.survivors, 1002),)
    assert r1003.error == ""
    assert set(r1003.dropped) == late
    assert r1003.total == (expected(r1003.survivors, 1003),)


def test_common_interval_is_one_message_per_meter() -> None:
    g = make_group(12)
    g.setup()
    for _ in range(4):
        g.step(reading)
    assert g.messages_up == 4 * 12


def test_no_reading_is_a_dropout_but_still_helps() -> None:
    g = make_group(6)
    g.setup()
    g.step(reading)
    g.step(reading, no_reading={"m00002"})
    res = g.step(reading)
    assert res is not None and res.dropped == ("m00002",)
    assert res.total == (expected(res.survivors, 1001),)


def test_holder_back_after_missing_an_interval_still_reveals_for_it() -> None:
    """Shares for t are relayed at t; a holder that missed t gets them again
    at t+1 (``IntervalStart.late``) and reveals for t, so a share holder only
    has to be online when the reveals are due.  Complete graph of 7: holders
    7, threshold 4.  At 1002 three meters are away; at 1003 one more survivor
    of 1002 goes.  Without the late records only 3 holders (those online at
    both 1002 and 1003) could reveal for 1002 (< 4): the interval would fail."""
    g = make_group(7, seed=3)
    g.setup()
    ids = sorted(g.meters)
    away, later = set(ids[:3]), {ids[3]}
    g.step(reading)
    g.step(reading)
    g.step(reading, offline=away)  # 1002: only 4 answer
    starts = g.headend.open_interval()  # 1003, driven by hand to look inside
    for mid in away:  # 1002's records from the 6 peers enrolled for 1002
        assert len(starts[mid].late) == DENSE_RECORD_BYTES * 6  # complete graph: with view keys
    for mid in set(ids) - away:
        assert starts[mid].late == b""
    for mid, start in starts.items():
        if mid not in later:
            g.headend.handle_input(
                encode(g.meters[mid].handle_start(encode(start), reading(mid, 1003)))
            )
    res = g.headend.close_interval()  # 1002 final
    assert res is not None and res.error == "", res
    assert set(res.survivors) == set(ids) - away and set(res.dropped) == away
    assert res.total == (expected(res.survivors, 1002),)
    res = g.step(reading)
    assert res is not None and res.error == "", res
    assert set(res.dropped) == later
    assert res.total == (expected(res.survivors, 1003),)


def test_sparse_holder_back_after_missing_an_interval_still_reveals_for_it() -> None:
    """Sparse graph of 40 (degree 32, lag 2): the reveals for t ride in the
    answers for t+2, under the certificate of the announcement of t+1.  A
    holder that missed t gets t's records again at t+2 (``late``, only with a
    certificate) and reveals; the total of t is exact."""
    g = make_group(40, seed=5)
    g.setup()
    ids = sorted(g.meters)
    away = set(ids[:6])
    assert g.headend.lag == 2
    g.step(reading)  # 1000
    g.step(reading)  # 1001
    g.step(reading, offline=away)  # 1002: six away
    assert g.step(reading) is not None  # 1003 (1001 final); the six answer again
    starts = g.headend.open_interval()  # 1004, by hand: reveals for 1002
    for mid, start in starts.items():
        assert start.certificate is not None
        assert start.certificate.announcement.interval == 1003
        assert (start.late != b"") == (mid in away)
        out = g.meters[mid].handle_start(encode(start), reading(mid, 1004))
        assert out.reveal_interval == 1002 and out.reveals
        g.headend.handle_input(encode(out))
    res = g.headend.close_interval()
    assert res is not None and res.interval == 1002 and res.error == "", res
    assert set(res.dropped) == away
    assert res.total == (expected(res.survivors, 1002),)


def test_sparse_interval_without_a_quorum_fails_and_the_next_ones_are_exact() -> None:
    """Sparse graph of 40: committee 33, quorum 17.  If only 16 committee
    members answer 1002, nobody endorsed the announcement of 1002 enough:
    no certificate goes out at 1003, nobody reveals for 1001, and 1001
    fails with the reason; 1002 and later are exact again."""
    g = make_group(40, seed=6)
    g.setup()
    ep = g.headend._require_epoch()
    assert len(ep.committee) == 33 and ep.quorum == 17
    away = {g.headend.roster[w] for w in ep.committee[16:]}
    g.step(reading)  # 1000
    g.step(reading)  # 1001
    g.step(reading, offline=away)  # 1002: 16 of 33 committee members answer
    res = g.step(reading)  # 1003: no certificate, so 1001 cannot be unmasked
    assert res is not None and res.interval == 1001 and res.total is None
    assert "no quorum of 17" in res.error
    for t in (1002, 1003):
        res = g.step(reading)
        assert res is not None and res.interval == t and res.error == "", res
        assert res.total == (expected(res.survivors, t),)


def test_leave_and_rejoin_within_epoch() -> None:
    g = make_group(10)
    g.setup()
    ids = sorted(g.meters)
    gone = {ids[3]}
    results = [g.step(reading)]
    results.append(g.step(reading))
    for _ in range(2):
        results.append(g.step(reading, offline=gone))
    for _ in range(3):  # back: first answer carries no value, enrolled again next interval
        results.append(g.step(reading))
    final = [r for r in results if r is not None]
    assert [r.interval for r in final] == list(range(1001, 1006))
    for r in final:
        assert r.error == ""
        assert r.total == (expected(r.survivors, r.interval),)
    by_t = {r.interval: r for r in final}
    assert ids[3] in by_t[1001].survivors
    assert ids[3] in by_t[1002].dropped  # offline at 1002
    assert ids[3] not in by_t[1003].survivors + by_t[1003].dropped  # not enrolled
    assert ids[3] not in by_t[1004].survivors  # rejoining: shares only
    assert ids[3] in by_t[1005].survivors


def test_new_epoch_with_a_new_meter() -> None:
    g1 = make_group(6, epoch=1)
    g1.setup()
    for _ in range(3):
        g1.step(reading)
    g2 = make_group(7, epoch=2, first_interval=1003)  # a meter joined: fresh keys, new epoch
    g2.setup()
    for _ in range(3):
        res = g2.step(reading)
    assert res is not None and len(res.survivors) == 7
    assert res.total == (expected(res.survivors, res.interval),)


def test_vector_readings() -> None:
    g = make_group(8, dim=3)
    g.setup()

    def vec(m: str, t: int) -> list[int]:
        return [reading(m, t), -reading(m, t), 7]

    g.step(vec)
    g.step(vec)
    res = g.step(vec, offline={"m00000"})
    assert res is not None
    want = tuple(sum(vec(m, res.interval)[i] for m in res.survivors) for i in range(3))
    assert res.total == want


def test_graph_is_symmetric_and_regular() -> None:
    nb = neighbours(200, 32, b"s" * 32)
    for i, lst in enumerate(nb):
        assert len(lst) == 32 and i not in lst
        assert all(i in nb[j] for j in lst)
    assert default_degree(5) == 4 and default_degree(1000) % 2 == 0
    assert threshold_for(32) == 17  # strict majority of 33 holders


def test_messages_round_trip_codec() -> None:
    g: GroupSimulation = make_group(5)
    g.setup()
    starts = g.headend.open_interval()
    start = next(iter(starts.values()))
    assert decode(encode(start), expect=IntervalStart) == start
    msg = g.meters["m00000"].handle_start(starts["m00000"], 5)
    assert decode(encode(msg), expect=MaskedInput) == msg
    bundle = g.headend.make_bundle.__self__._ep.bundle  # type: ignore[attr-defined]
    assert decode(encode(bundle), expect=KeyBundle) == bundle


def test_degree_for_meets_its_failure_target_and_grows_with_churn() -> None:
    from privmeter.protocol.aggregation_messages import degree_for, failure_chance

    for n in (40, 200, 1000, 10_000):
        last = 0
        for d in (0.0, 0.05, 0.1, 0.2, 0.3):
            k = degree_for(n, d)
            assert k >= last and k >= default_degree(n) and (k == n - 1 or k % 2 == 0)
            assert k == n - 1 or failure_chance(n, k, d) <= 1e-6
            last = k
    assert degree_for(200, 0.05) == 32  # the default suffices at 5 %
    assert failure_chance(200, 32, 0.2) > 1e-3 and degree_for(200, 0.2) > 32
    with pytest.raises(ValueError):
        degree_for(200, 1.0)
