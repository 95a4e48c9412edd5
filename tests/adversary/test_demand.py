"""Reproductions of issue 12, attacks 2 and 4, against the utility-keyed DGK protocol (before the fix)."""

from __future__ import annotations

import math
import random

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.dgk import DGKPublicKey
from privmeter.protocol import comparison as cmp

BITS = 16


def _smooth_prime(rng: random.Random, u: int) -> tuple[int, list[int]]:
    """p = 2*u*prod(small primes) + 1 with p - 1 smooth: discrete logs mod p are easy."""
    while True:
        fs = [nt.random_prime(18, rng) for _ in range(12)]
        p = 2 * u * math.prod(fs) + 1
        if nt.is_prime(p):
            return p, [2, u, *fs]


def _dlog(y: int, g: int, p: int, factors: list[int]) -> int:
    """Pohlig-Hellman with brute force per (small, distinct) prime factor of p - 1."""
    order = p - 1
    res, mod = 0, 1
    for f in sorted(set(factors)):
        e = order // f
        gf, yf = pow(g, e, p), pow(y, e, p)
        acc, k = 1, 0
        while acc != yf:
            acc = acc * gf % p
            k += 1
            if k > f:
                raise ValueError("no log")
        # CRT
        res = res + mod * ((k - res) * pow(mod, -1, f) % f)
        mod *= f
    return res % mod


def test_smooth_order_key_and_non_one_hot_broadcast_read_the_whole_reading() -> None:
    rng = random.Random(3)
    u = 67
    p, fs = _smooth_prime(rng, u)
    q = nt.random_prime(p.bit_length(), rng)
    n = p * q
    # g generates Z*_p (order p - 1, smooth); h = 1 mod p so it vanishes there
    while True:
        gp = rng.randrange(2, p - 1)
        if all(pow(gp, (p - 1) // f, p) != 1 for f in set(fs)):
            break
    qinv = nt.invert(q, p)
    g = nt.crt_pair(gp, p, rng.randrange(2, q - 1), q, qinv)
    h = nt.crt_pair(1, p, rng.randrange(2, q - 1), q, qinv)
    pk = DGKPublicKey(n, g, h, u)
    pk.check(min_bits=n.bit_length())  # the meter's checks pass
    order = p - 1
    # radix-2 broadcast E(w_j) that is not one-hot: w_0 = -1, w_j = -K * 2**j (superincreasing)
    k = 64
    ws = [order - 1] + [(-k * (1 << j)) % order for j in range(1, BITS)]
    rows = tuple((nt.powmod(g, w, n),) for w in ws)
    msg = cmp.EncryptedThreshold(key_id=pk.key_id, bits=BITS, radix=2, digits=rows)
    prepared = cmp.prepare_threshold(pk, msg)
    secret = rng.randrange(-(1 << (BITS - 1)), 1 << (BITS - 1))
    reply = cmp.meter_reply(prepared, secret, rng=rng)
    # c_0 = 1 + (1 - a_0) + sum_{j>=1} w_j + sum_{j>=1} a_j (1 + 2 K 2**j)   (mod ord g)
    base = (1 + sum(ws[1:])) % order
    found = set()
    for v in reply.values:
        e = _dlog(v % p, gp, p, fs)  # r * c_i mod (p - 1)
        for r in range(1, u):
            gd = math.gcd(r, order)
            if e % gd:
                continue
            m = order // gd
            c1 = (e // gd) * pow(r // gd, -1, m) % m
            for c in (c1 + i * m for i in range(gd)):
                rest = (c - base) % order
                if rest >= 1 << (BITS + 10):
                    continue
                for a0 in (0, 1):
                    acc, bits = rest - (1 - a0), []
                    for j in range(BITS - 1, 0, -1):
                        wgt = 1 + 2 * k * (1 << j)
                        bits.append(1 if acc >= wgt else 0)
                        acc -= wgt if bits[-1] else 0
                    if acc == 0:
                        off = a0 + sum(b << j for j, b in zip(range(BITS - 1, 0, -1), bits, strict=True))
                        found.add(off - (1 << (BITS - 1)))
    assert secret in found and len(found) <= 2  # the whole reading (to one bit), from one comparison


def test_tick_days_ahead_refreshes_the_budget_on_the_same_reading() -> None:
    from privmeter.crypto import dgk
    from privmeter.crypto.signing import SigningKey
    from privmeter.protocol import demand as dm

    _, sk = dgk.generate_keypair(512, subgroup_bits=48, rng=random.Random(11), insecure_for_tests=True)
    he = SigningKey.from_seed(b"H" * 32)
    mk = SigningKey.from_seed(b"M" * 32)
    mgr = dm.DemandManager(sk, he, "g", {"m": mk.verify_key}, cmin_w=0, cmax_w=10, level_above_w=0,
                           level_below_w=0, bits=16)
    agent = dm.MeterDemandAgent("m", "g", mk, he.verify_key, sk.public_key,
                                dm.ComparisonBudget(comparisons_per_interval=1, comparisons_per_day=1,
                                                    same_threshold_for_group=False),
                                roster={"m": mk.verify_key})
    secret, lo, hi = 12_345, -(1 << 15), 1 << 15
    now = 1_700_000_000
    for _day in range(16):  # the head-end's tick moves the meter's "now" a day ahead each time
        t = (lo + hi) // 2
        ev = mgr.open_event(t, side="above", action="curtail", start_interval=now // 900 + 1, now=now)
        agent.receive_event(ev, now=now)
        q = mgr.queries(ev.event_id, now=now, meters=["m"])[0]
        if mgr.receive_answer(agent.receive_query(q, reading_w=secret, now=now), now=now):
            lo = t
        else:
            hi = t
        now += 86_400
    assert lo == secret  # 16 comparisons against one reading with a budget of 1 a day
