"""``privmeter bench aggregation``: masked aggregation vs a Paillier baseline.

For each case (meters, group size, dropout) both protocols run side by side in
this process and we report CPU seconds per interval for one meter and for the
head-end, and bytes a meter sends per interval:

* ``masked``: :mod:`privmeter.protocol.aggregation` (pairwise + self masks,
  Shamir recovery, default sparse graph); every message goes through the
  codec.  Steady state: after the priming interval and the lag (one more
  interval in a complete graph, two in a sparse one, whose reveals wait for
  the quorum certificate) fill the pipeline, we measure ``MEASURED_INTERVALS``
  open + inputs + close cycles and average them.  Each measured close
  finalises the interval ``lag`` before it, recovering that interval's
  dropouts; every published total must equal
  the plaintext sum over the meters that sent a value for it ("exact"), and
  the result's survivors must be exactly those meters.  An interval that
  could not be unmasked (too few holders answered: see "Availability" in
  docs/aggregation.md) publishes nothing; it is counted in
  ``intervals_failed``, not hidden, and its cheaper close is in the mean.
* ``paillier``: meters encrypt their reading under the utility's key (the
  project's own Paillier, DJN fixed-base encryption, 3072-bit by default) and
  MAC it exactly like the masked input (keyed BLAKE2b over the encoding with
  an empty tag, cut from the received bytes); per message the head-end pays
  the codec decode, the MAC check and the ciphertext validation
  (range and unit mod n^2), then multiplies survivors' ciphertexts and
  decrypts the total once per group.  The masked head-end pays the same
  three per-message steps (decode, MAC, size/roster checks).  Same number of
  warm-up and measured intervals.

Dropouts: every interval (warm-up ones included) a FRESH set of
``round(dropout * group_size)`` meters is drawn uniformly at random (iid over
intervals, seeded by the group); both protocols see the same sets.
Extra masked-only rows force the neighbour degree (64: the meter target).

Groups are independent, so for many groups (10,000 meters in groups of 200)
we run ``--groups`` of them (default 5; ``--full`` runs all) and scale the
head-end time by ``groups / groups_measured``; the JSON says so.
Timings are ``time.process_time`` (one core).  The JSON's ``summary`` holds
the issue's targets and whether this run met them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from privmeter.argtypes import at_least
from privmeter.bench._common import add_json_flag, emit, progress
from privmeter.crypto.paillier import generate_keypair
from privmeter.errors import SelfCheckFailed
from privmeter.protocol.aggregation import input_mac
from privmeter.protocol.aggregation_messages import MaskedInput
from privmeter.protocol.codec import decode, encode, encode_field, message
from privmeter.sim.aggregation_group import GroupSimulation, make_group

__all__ = [
    "MEASURED_INTERVALS",
    "TARGETS",
    "WARMUP_INTERVALS",
    "PaillierReading",
    "add_arguments",
    "run",
    "run_cases",
]

WARMUP_INTERVALS = 3  # the priming interval and the lag (at most 2): then the pipeline is full
MEASURED_INTERVALS = 3  # steady-state open + inputs + close cycles averaged per group
# issue 3's targets (one core): head-end s/interval for 10,000 meters (groups of 200) at 5 %
# dropout, meter s/interval with 64 neighbours, and Paillier/masked ratios at 0 % dropout
TARGETS: dict[str, float] = {
    "headend_10k_5pct_s": 1.0,
    "meter_64_s": 0.002,
    "headend_ratio": 10,
    "bytes_ratio": 50,
}


@message("agg.bench.paillier")
@dataclass(frozen=True, slots=True, kw_only=True)
class PaillierReading:
    """The baseline's per-interval meter message: E(reading) and a MAC."""

    meter_id: str
    interval: int
    ciphertext: bytes
    tag: bytes


def _reading(meter: str, t: int) -> int:
    return (
        int.from_bytes(hashlib.sha256(f"{meter}/{t}".encode()).digest()[:4], "big") % 20_000 - 3_000
    )


@dataclass
class _Measured:
    """One group's steady-state figures (per interval, averaged over the measured ones)."""

    meter_s: float  # CPU per meter message
    headend_s: float  # CPU of the group's head-end work
    bytes_per_meter: float  # encoded bytes per meter message
    exact: bool  # every measured interval unmasked to the plaintext sum of its survivors
    failed: int  # measured intervals whose total could not be unmasked (total None)
    degree: int | None = None  # neighbours per meter (masked), from the share records sent
    breakdown: dict[str, float] = field(default_factory=dict)  # bytes per meter message by field


def _drop_sets(
    ids: Sequence[str], dropout: float, seed: int, warmup: int = WARMUP_INTERVALS
) -> list[set[str]]:
    """A fresh uniformly random offline set per interval (warm-up and measured), seeded."""
    rng = random.Random(seed)
    k = round(len(ids) * dropout)
    return [set(rng.sample(ids, k)) for _ in range(warmup + MEASURED_INTERVALS)]


def _input_breakdown(msg: MaskedInput, wire: bytes) -> dict[str, int]:
    """Bytes of one encoded input by field; ``other`` is ids, MAC tag and codec framing."""
    parts = {
        "masked_value": 8 * len(msg.masked),
        "shares": len(msg.shares),
        "recovery_pads": len(msg.recovery),
        "reveals": len(msg.reveals),
        "endorsement": len(msg.endorsement),
    }
    return {**parts, "other": len(wire) - sum(parts.values())}


def _masked_case(
    group_size: int, dropout: float, seed: int, degree: int | None = None
) -> _Measured:
    # no verification cache shared between the meters: each pays its own signature checks
    g: GroupSimulation = make_group(
        group_size, seed=seed, min_survivors=3, degree=degree, share_verified=False
    )
    g.setup()
    he = g.headend
    warmup = WARMUP_INTERVALS  # priming, then the lag (at most 2) fills the pipeline
    sent_value: dict[int, set[str]] = {}  # interval -> meters whose input carried a value
    meter_cpu = head_cpu = 0.0
    nmsg = failed = 0
    exact = True
    sizes: dict[str, int] = {}
    degrees: set[int] = set()
    for i, off in enumerate(_drop_sets(sorted(g.meters), dropout, seed, warmup)):
        measured = i >= warmup
        c0 = time.process_time()
        starts = he.open_interval_wire()
        head = time.process_time() - c0
        meter = 0.0
        t = he.current
        sent_value[t] = set()
        for mid, data in starts.items():
            if mid in off:
                continue
            c0 = time.process_time()
            msg = g.meters[mid].handle_start(data, _reading(mid, t))
            out = encode(msg)
            c1 = time.process_time()
            he.handle_input(out)
            c2 = time.process_time()
            meter += c1 - c0
            head += c2 - c1
            if msg.masked:
                sent_value[t].add(mid)
            if measured:
                nmsg += 1
                degrees.add(len(msg.recovery) // 8)  # one 8-byte pad per neighbour (dim 1)
                for k, v in _input_breakdown(msg, out).items():
                    sizes[k] = sizes.get(k, 0) + v
        c0 = time.process_time()
        res = he.close_interval()
        head += time.process_time() - c0
        if not measured:
            continue
        meter_cpu += meter
        head_cpu += head
        if res is None or res.total is None:
            failed += 1  # not unmasked (availability): nothing published, reason in res.error
        else:
            want = sent_value[res.interval]
            exact = (
                exact
                and set(res.survivors) == want
                and res.total == (sum(_reading(m, res.interval) for m in want),)
            )
    if len(degrees) != 1:
        raise SelfCheckFailed(f"meters used different degrees: {sorted(degrees)}")
    breakdown = {k: v / nmsg for k, v in sizes.items()}
    return _Measured(
        meter_cpu / nmsg,
        head_cpu / MEASURED_INTERVALS,
        sum(sizes.values()) / nmsg,
        exact,
        failed,
        degrees.pop(),
        breakdown,
    )


def _paillier_case(group_size: int, dropout: float, seed: int, pk: Any, sk: Any) -> _Measured:
    rng = random.Random(seed)
    ids = [f"m{i:05d}" for i in range(group_size)]  # make_group's ids: same drop sets as masked
    macs = {m: hashlib.sha256(f"mac/{m}".encode()).digest() for m in ids}
    pk.djn_table()  # fixed-base table built once per key (offline cost)
    tag_head = encode_field("tag", bytes(16))[:-16]  # the encoded tag field, less its 16 bytes
    tag_len = len(tag_head) + 16
    no_tag = encode_field("tag", b"")
    meter_cpu = head_cpu = 0.0
    nmsg = nbytes = 0
    exact = True
    for i, offline in enumerate(_drop_sets(ids, dropout, seed)):
        t = 1 + i
        meter = 0.0
        msgs = []
        for m in ids:
            if m in offline:
                continue
            c0 = time.process_time()
            ct = pk.encrypt(_reading(m, t), rng=rng).to_bytes()
            body = PaillierReading(meter_id=m, interval=t, ciphertext=ct, tag=b"")
            msgs.append(encode(dataclasses.replace(body, tag=input_mac(macs[m], encode(body)))))
            meter += time.process_time() - c0
        c0 = time.process_time()
        acc = pk.zero()
        for data in msgs:
            msg = decode(data, expect=PaillierReading)
            if data[-tag_len:-16] != tag_head:  # tag last, 16 bytes (as for masked inputs)
                raise SelfCheckFailed("baseline message not in canonical form")
            want = input_mac(macs[msg.meter_id], data[:-tag_len] + no_tag)
            if not hmac.compare_digest(want, msg.tag):
                raise SelfCheckFailed("baseline MAC failed")
            acc = acc + pk.ciphertext_from_bytes(msg.ciphertext)
        total = sk.decrypt(acc)
        head = time.process_time() - c0
        if i < WARMUP_INTERVALS:
            continue
        meter_cpu += meter
        head_cpu += head
        nmsg += len(msgs)
        nbytes += sum(map(len, msgs))
        exact = exact and total == sum(_reading(m, t) for m in ids if m not in offline)
    return _Measured(meter_cpu / nmsg, head_cpu / MEASURED_INTERVALS, nbytes / nmsg, exact, 0)


def _row(
    proto: str,
    meters: int,
    group_size: int,
    dropout: float,
    runs: list[_Measured],
    groups: int,
    *,
    key_bits: int | None = None,
    degree_forced: bool = False,
) -> dict[str, Any]:
    """One JSON case from the measured groups: means, head-end scaled to all ``groups``."""
    n = len(runs)
    breakdown = {k: round(sum(r.breakdown[k] for r in runs) / n, 1) for k in runs[0].breakdown}
    return {
        "protocol": proto,
        "meters": meters,
        "group_size": group_size,
        "dropout": dropout,
        "meter_s": sum(r.meter_s for r in runs) / n,
        "headend_s": sum(r.headend_s for r in runs) * groups / n,
        "bytes_per_meter": round(sum(r.bytes_per_meter for r in runs) / n, 1),
        "bytes_breakdown": breakdown or None,
        "degree": runs[0].degree,
        "degree_forced": degree_forced,
        "exact": all(r.exact for r in runs),
        "intervals_failed": sum(r.failed for r in runs),
        "intervals_measured": MEASURED_INTERVALS,
        "warmup_intervals": WARMUP_INTERVALS,
        "groups_measured": n,
        "key_bits": key_bits,
    }


def _summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets against this run (None: the run had no such case)."""

    def find(proto: str, meters: int, group_size: int, dropout: float) -> dict[str, Any] | None:
        return next(
            (
                c
                for c in cases
                if (c["protocol"], c["meters"], c["group_size"], c["dropout"])
                == (proto, meters, group_size, dropout)
                and not c["degree_forced"]
            ),
            None,
        )

    big = find("masked", 10_000, 200, 0.05)
    forced = [c["meter_s"] for c in cases if c["degree_forced"] and c["degree"] == 64]
    ratios = []
    for c in cases:
        if c["protocol"] != "masked" or c["dropout"] != 0.0 or c["degree_forced"]:
            continue
        base = find("paillier", c["meters"], c["group_size"], 0.0)
        if base is not None:
            ratios.append(
                {
                    "meters": c["meters"],
                    "group_size": c["group_size"],
                    "headend_ratio": base["headend_s"] / c["headend_s"],
                    "bytes_ratio": base["bytes_per_meter"] / c["bytes_per_meter"],
                }
            )
    s: dict[str, Any] = {
        "headend_10k_5pct_s": big["headend_s"] if big is not None else None,
        "meter_64_s": max(forced) if forced else None,
        "ratios_0pct": ratios,
        "targets": dict(TARGETS),
    }
    s["met"] = {
        "headend_10k_5pct_s": None
        if big is None
        else s["headend_10k_5pct_s"] <= TARGETS["headend_10k_5pct_s"],
        "meter_64_s": None if not forced else s["meter_64_s"] <= TARGETS["meter_64_s"],
        **{
            k: all(r[k] >= TARGETS[k] for r in ratios) if ratios else None
            for k in ("headend_ratio", "bytes_ratio")
        },
    }
    return s


def run_cases(
    sizes: list[tuple[int, int]],
    dropouts: list[float],
    *,
    key_bits: int,
    groups_measured: int,
    show_progress: bool | None = None,
    degree_cases: Sequence[tuple[int, int, float]] = (),
) -> dict[str, Any]:
    """``sizes``: (meters, group size), both protocols at each dropout; ``degree_cases``:
    (meters, degree, dropout), masked only, one group of ``meters`` with that degree."""
    pk, sk = generate_keypair(key_bits, insecure_for_tests=key_bits < 2048)
    cases = []
    with progress(show_progress) as bar:
        task = bar.add_task("aggregation", total=len(sizes) * len(dropouts) * 2 + len(degree_cases))
        for meters, group_size in sizes:
            groups = max(1, meters // group_size)
            measured = min(groups, groups_measured)
            for dropout in dropouts:
                where = f"{meters:,} meters, groups of {group_size:,}, {dropout:.0%} dropout"
                bar.update(task, description=f"masked sum: {where}", refresh=True)
                runs = [_masked_case(group_size, dropout, seed=1 + gi) for gi in range(measured)]
                cases.append(_row("masked", meters, group_size, dropout, runs, groups))
                bar.advance(task)
                bar.update(task, description=f"Paillier baseline: {where}", refresh=True)
                runs = [
                    _paillier_case(group_size, dropout, 1 + gi, pk, sk) for gi in range(measured)
                ]
                cases.append(
                    _row("paillier", meters, group_size, dropout, runs, groups, key_bits=key_bits)
                )
                bar.advance(task)
        for meters, degree, dropout in degree_cases:
            bar.update(
                task,
                description=f"masked sum: {meters:,} meters, {degree} neighbours, {dropout:.0%} dropout",
                refresh=True,
            )
            runs = [_masked_case(meters, dropout, seed=1, degree=degree)]
            cases.append(_row("masked", meters, meters, dropout, runs, 1, degree_forced=True))
            bar.advance(task)
    return {"cases": cases, "summary": _summary(cases)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json_flag(parser)
    parser.add_argument(
        "--full", action="store_true", help="run every group of the 10,000-meter case"
    )
    parser.add_argument(
        "--groups", type=at_least(1), default=5, help="groups measured per case (default 5)"
    )
    parser.add_argument(
        "--key-bits", type=at_least(1), default=3072, help="Paillier baseline key size"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke run (20 meters, 1,024-bit INSECURE baseline key)",
    )


def _ratio_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The summary as table rows: what, measured, target, met."""

    def ok(v: bool | None) -> str:
        return "-" if v is None else "yes" if v else "NO"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:.2f} ms"

    t, met = summary["targets"], summary["met"]
    rows = [
        [
            "head-end, 10,000 meters / 200, 5 %",
            ms(summary["headend_10k_5pct_s"]),
            f"<= {t['headend_10k_5pct_s'] * 1e3:.0f} ms",
            ok(met["headend_10k_5pct_s"]),
        ],
        [
            "meter, degree 64 (max)",
            ms(summary["meter_64_s"]),
            f"<= {t['meter_64_s'] * 1e3:.0f} ms",
            ok(met["meter_64_s"]),
        ],
    ]
    for r in summary["ratios_0pct"]:
        where = f"{r['meters']:,} / {r['group_size']:,}, 0 %"
        rows.append(
            [
                f"head-end paillier/masked, {where}",
                f"{r['headend_ratio']:.2f}x",
                f">= {t['headend_ratio']}x",
                ok(r["headend_ratio"] >= t["headend_ratio"]),
            ]
        )
        rows.append(
            [
                f"bytes paillier/masked, {where}",
                f"{r['bytes_ratio']:.3f}x",
                f">= {t['bytes_ratio']}x",
                ok(r["bytes_ratio"] >= t["bytes_ratio"]),
            ]
        )
    return rows


def run(args: argparse.Namespace) -> int:
    if args.quick:
        sizes, dropouts, bits, groups = [(20, 20)], [0.0, 0.2], 1024, 1
        degree_cases = [(65, 64, 0.0)]  # 65 meters: the smallest group with 64 neighbours each
    else:
        sizes = [(100, 100), (1000, 1000), (10_000, 200)]
        dropouts, bits = [0.0, 0.05, 0.2], args.key_bits
        groups = 10**9 if args.full else args.groups
        degree_cases = [(1000, 64, 0.0), (1000, 64, 0.05)]
    result = run_cases(
        sizes, dropouts, key_bits=bits, groups_measured=groups, degree_cases=degree_cases
    )

    def exact(c: dict[str, Any]) -> str:
        n = c["intervals_measured"] * c["groups_measured"]
        failed = f" ({c['intervals_failed']}/{n} not unmasked)" if c["intervals_failed"] else ""
        return ("yes" if c["exact"] else "NO") + failed

    rows = [
        [
            f"masked, degree {c['degree']}" if c["degree_forced"] else c["protocol"],
            str(c["meters"]),
            str(c["group_size"]),
            "-" if c["degree"] is None else str(c["degree"]),
            f"{c['dropout']:.0%}",
            f"{c['meter_s'] * 1e3:.3f}",
            f"{c['headend_s'] * 1e3:.1f}",
            f"{c['bytes_per_meter']:.0f}",
            exact(c),
        ]
        for c in result["cases"]
    ]
    emit(
        result,
        as_json=args.json,
        title=f"aggregation: CPU per interval (one core), mean of {MEASURED_INTERVALS} steady-state "
        f"intervals, fresh dropouts each",
        rows=rows,
        columns=[
            "protocol",
            "meters",
            "group",
            "degree",
            "dropout",
            "meter ms",
            "head-end ms",
            "bytes/meter",
            "exact",
        ],
    )
    if not args.json:  # the targets, under the table
        emit(
            result["summary"],
            as_json=False,
            title="issue 3 targets (this run)",
            rows=_ratio_rows(result["summary"]),
            columns=["target", "measured", "goal", "met"],
        )
    return 0 if all(c["exact"] for c in result["cases"]) else 1
