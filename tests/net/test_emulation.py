from __future__ import annotations

import statistics

import pytest

from privmeter.net.emulation import LinkProfile, NetworkEmulator, OutageSchedule


def decisions(emu: NetworkEmulator, peer: str, n: int, *, step: float = 1.0, nbytes: int = 100):
    return [emu.decide(peer, "up", nbytes, i * step) for i in range(n)]


def test_deterministic_given_seed():
    p = LinkProfile(latency_ms=50, jitter_ms=10, loss=0.2)
    a = decisions(NetworkEmulator(p, seed=42), "m1", 200)
    b = decisions(NetworkEmulator(p, seed=42), "m1", 200)
    c = decisions(NetworkEmulator(p, seed=43), "m1", 200)
    assert a == b
    assert a != c


def test_links_independent_of_interleaving():
    p = LinkProfile(latency_ms=20, jitter_ms=5, loss=0.3)
    alone = decisions(NetworkEmulator(p, seed=1), "m1", 50)
    emu = NetworkEmulator(p, seed=1)
    mixed = []
    for i in range(50):
        emu.decide("m2", "up", 100, i * 1.0)
        emu.decide("m1", "down", 100, i * 1.0)
        mixed.append(emu.decide("m1", "up", 100, i * 1.0))
    assert mixed == alone


def test_loss_rate_and_latency_statistics():
    p = LinkProfile(latency_ms=80, jitter_ms=20, loss=0.1)
    ds = decisions(NetworkEmulator(p, seed=7), "m1", 4000, step=1.0)
    lost = sum(d.drop for d in ds)
    assert 0.08 < lost / len(ds) < 0.12
    delays = [d.deliver_at - i * 1.0 for i, d in enumerate(ds) if not d.drop]
    assert 78 < 1000 * statistics.mean(delays) < 82
    assert 17 < 1000 * statistics.pstdev(delays) < 23
    assert min(delays) >= 0


def test_in_order_delivery():
    p = LinkProfile(latency_ms=100, jitter_ms=80)
    ds = decisions(NetworkEmulator(p, seed=3), "m1", 500, step=0.001)
    at = [d.deliver_at for d in ds]
    assert at == sorted(at)


def test_bandwidth_serialises():
    emu = NetworkEmulator(LinkProfile(bandwidth_bps=8000), seed=0)  # 1000 bytes/s
    ds = [emu.decide("m1", "down", 500, 0.0) for _ in range(4)]
    assert [d.deliver_at for d in ds] == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_ideal_link_and_per_peer_profile():
    emu = NetworkEmulator(links={"slow": LinkProfile(latency_ms=1000)})
    assert emu.profile("x").is_ideal
    assert emu.decide("x", "up", 10, 5.0).deliver_at == 5.0
    assert emu.decide("slow", "up", 10, 5.0).deliver_at == pytest.approx(6.0)
    assert emu.stats() == {"slow/up": 1, "x/up": 1}


def test_total_loss():
    ds = decisions(NetworkEmulator(LinkProfile(loss=1.0)), "m", 20)
    assert all(d.drop for d in ds)


def test_scheduled_outages():
    emu = NetworkEmulator(outages=OutageSchedule(windows={"m1": [(10.0, 20.0), (30.0, 31.0)]}))
    assert not emu.is_down("m1", 9.99)
    assert emu.is_down("m1", 10.0) and emu.is_down("m1", 19.9)
    assert not emu.is_down("m1", 20.0)
    assert emu.is_down("m1", 30.5)
    assert not emu.is_down("m2", 15.0)
    assert emu.next_outage("m1", 0.0) == 10.0
    assert emu.next_outage("m1", 15.0) == 30.0
    assert emu.next_outage("m1", 40.0) is None


def test_random_outages_seeded():
    sched = OutageSchedule(mtbf_s=3600.0, mttr_s=300.0, random_peers=frozenset({"m1", "m2"}))
    a = NetworkEmulator(outages=sched, seed=5)
    b = NetworkEmulator(outages=sched, seed=5)
    wa = a.windows("m1", 86400 * 10)
    assert wa == b.windows("m1", 86400 * 10)
    assert wa != a.windows("m2", 86400 * 10)
    assert a.windows("m3", 86400 * 10) == []
    down = sum(e - s for s, e in wa if e <= 86400 * 10) / (86400 * 10)
    assert 0.04 < down < 0.14  # ~ mttr / (mtbf + mttr) = 7.7 %
    s, e = wa[0]
    assert a.is_down("m1", (s + e) / 2) and not a.is_down("m1", s - 1e-6)


@pytest.mark.parametrize(
    "kw", [dict(loss=1.5), dict(latency_ms=-1), dict(bandwidth_bps=0), dict(jitter_ms=float("nan"))]
)
def test_profile_validation(kw):
    with pytest.raises(ValueError):
        LinkProfile(**kw)


def test_outage_validation():
    with pytest.raises(ValueError):
        OutageSchedule(windows={"m": [(5.0, 5.0)]})
    with pytest.raises(ValueError):
        OutageSchedule(mtbf_s=0)
