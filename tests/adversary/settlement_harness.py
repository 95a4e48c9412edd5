"""A malicious head-end for settlement (issue 12, attacks 3 and 5).

The head-end here holds exactly what a real one holds -- its own signing key,
every meter-signed record of the household, the published plan, the
household's public key -- and may sign and send *any* statement with *any*
log: arbitrary E(bill) (re-randomised, recombined from records, an oracle
built to test a guess), range, tariff, feed and log digests, record count,
fixed charge, key id.  Each statement reaches a real
:class:`~privmeter.parties.household.HouseholdAgent` the way it does in a
deployment: a ``sys.settle`` message through the wire codec.

:class:`World` is one household for one billing period (its meter's records
made by an honest meter, the honest ledger's statement); two worlds that
differ only in one reading let a test check that the household's answers to
lying statements are the same in both (the bound in
:mod:`privmeter.protocol.settlement`).  :class:`Lie` is a recipe for a lying
statement that is applied identically in any world (same choices, same
randomness), so property tests can generate lies with hypothesis.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

from privmeter.crypto.paillier import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.tariffs import Tariff
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.messages import SettleRequest
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.records import (
    BillAccumulator,
    ReadingRecord,
    make_record,
    price_bits,
    record_bytes,
)
from privmeter.protocol.settlement import BillProof, Dispute, Statement, log_digest, sign_statement

DAY0 = 1699920000 // 900  # 2023-11-14 00:00 UTC, 15-minute intervals
N = 16  # intervals in the billing period (kept short: property tests build many statements)
METER = SigningKey.from_seed(b"m" * 32)
HEADEND = SigningKey.from_seed(b"h" * 32)


def flat_plan() -> Plan:
    return Plan(
        plan_id="adv-flat",
        name="Flat",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="flat", price=14228),
        standing_charge_per_day=45_000,
    )


def readings_for(seed: int, n: int = N) -> dict[int, int]:
    r = random.Random(seed)
    return {DAY0 + i: r.randint(-900, 2500) for i in range(n)}


class World:
    """One household, its honest meter's signed records for one period, and the honest statement."""

    def __init__(
        self,
        keys: tuple[PaillierPublicKey, PaillierPrivateKey],
        plan: Plan,
        readings: Mapping[int, int],
        *,
        meter_rng_seed: int = 11,
    ) -> None:
        self.pk, self.sk = keys
        self.plan = plan
        self.readings = dict(readings)
        self.period = range(DAY0, DAY0 + N)
        self.ledger = BillingLedger(HEADEND, [plan], min_key_bits=self.pk.bits)
        self.ledger.register(
            "m1",
            METER.verify_key,
            self.pk,
            plan,
            wellformed_proof=prove_wellformed(self.sk),
            period_start=DAY0,
            period_intervals=N,
        )
        self.records: list[ReadingRecord] = []
        for t, wh in sorted(self.readings.items()):
            # the meter's randomness is its own; the same seed in every world keeps the worlds
            # differing only where their readings differ
            ct = self.pk.encrypt(wh, rng=random.Random(meter_rng_seed * 1_000_003 + t))
            rec = make_record(METER, "m1", t, self.pk, ct)
            self.ledger.receive(rec, current_interval=t)
            self.records.append(rec)
        self.statement = self.ledger.statement("m1", 0, now=1_700_000_000)

    def household(self) -> HouseholdAgent:
        """A fresh household agent reading this world's meter port."""
        return HouseholdAgent(
            "m1",
            self.sk,
            self.plan,
            HEADEND.verify_key,
            lambda: (self.readings, {}),
            meter_key=METER.verify_key,
            period_start=DAY0,
            period_intervals=N,
        )

    def true_bill(self) -> int:
        return self.plan.total_charge(self.readings, self.period)


class LyingHeadEnd:
    """The utility: signs and sends whatever it likes (see the module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pk = world.pk
        self.issued = 0

    # -- building blocks -------------------------------------------------------------
    def sign(self, **changes: Any) -> Statement:
        """The honest statement with ``changes``, validly signed by the head-end (fresh issued_at)."""
        self.issued += 1
        fields = {
            f.name: getattr(self.world.statement, f.name) for f in dataclasses.fields(Statement)
        }
        fields.pop("signature")
        fields["issued_at"] = self.world.statement.issued_at + self.issued
        fields.update(changes)
        return sign_statement(HEADEND, **fields)

    def ct(self, data: bytes) -> EncryptedNumber:
        return self.pk.ciphertext_from_bytes(data)

    def bill_ct(self) -> EncryptedNumber:
        return self.ct(self.world.statement.bill_ciphertext)

    def record_ct(self, interval: int) -> EncryptedNumber:
        return self.ct(next(r.ciphertext for r in self.world.records if r.interval == interval))

    def oracle(self, interval: int, guess: int, rng: random.Random) -> bytes:
        """E(bill) * E(x_t) * E(-guess), re-randomised: encrypts the bill iff x_t == guess."""
        return (self.bill_ct() + self.record_ct(interval) - guess).rerandomize(rng=rng).to_bytes()

    def recombined(self, prices: Mapping[int, int]) -> bytes:
        """E(sum x_t * price_t + fixed) from the meter's records at prices of the head-end's choosing."""
        acc = BillAccumulator(
            self.pk, max(price_bits(self.world.plan), max(prices.values()).bit_length())
        )
        for rec in self.world.records:
            acc.add(self.ct(rec.ciphertext).value, prices[rec.interval])
        return acc.bill(self.world.statement.fixed_charge).to_bytes()

    def log(self, records: Sequence[ReadingRecord] | None = None) -> tuple[bytes, ...]:
        return tuple(record_bytes(r) for r in (self.world.records if records is None else records))

    # -- sending -----------------------------------------------------------------------
    def send(
        self, household: HouseholdAgent, statement: Statement, log: tuple[bytes, ...] | None = None
    ) -> BillProof | Dispute:
        """One ``sys.settle`` through the wire codec; the household's single answer."""
        req = SettleRequest(
            period=0, statement=encode(statement), log=self.log() if log is None else log
        )
        (answer,) = household.handle(decode(encode(req)))
        assert isinstance(answer, BillProof | Dispute)
        return answer


@dataclasses.dataclass(frozen=True)
class Lie:
    """A recipe for one lying statement, applied the same way in any world.

    ``cipher``: how E(bill) is made -- ``honest``, ``rerandomized``,
    ``oracle`` (E(bill) E(x_t) E(-guess)), ``record`` (one reading's
    ciphertext), ``plus`` (E(bill) + delta), ``scaled`` (E(bill) * k),
    ``recombined`` (records at other prices), ``random`` (a random unit);
    ``fields``: other statement fields replaced; ``log``: ``honest``,
    ``drop`` / ``dup`` (of record ``index``), ``empty``, ``shuffled``.
    """

    cipher: str = "honest"
    interval_index: int = 0
    guess: int = 0
    delta: int = 1
    seed: int = 0
    fields: tuple[str, ...] = ()  # names from FIELD_LIES
    log: str = "honest"

    @property
    def is_honest(self) -> bool:
        return self.cipher == "honest" and not self.fields and self.log in ("honest", "shuffled")

    def statement(self, he: LyingHeadEnd) -> tuple[Statement, tuple[bytes, ...]]:
        w = he.world
        rng = random.Random(self.seed)
        t = DAY0 + self.interval_index % N
        c = w.statement.bill_ciphertext
        if self.cipher == "rerandomized":
            c = he.bill_ct().rerandomize(rng=rng).to_bytes()
        elif self.cipher == "oracle":
            c = he.oracle(t, self.guess, rng)
        elif self.cipher == "record":
            c = he.record_ct(t).to_bytes()
        elif self.cipher == "plus":
            c = (he.bill_ct() + self.delta).to_bytes()
        elif self.cipher == "scaled":
            c = (he.bill_ct() * self.delta).to_bytes()
        elif self.cipher == "recombined":
            c = he.recombined({u: rng.randint(0, 2**16) for u in w.period})
        elif self.cipher == "random":
            c = EncryptedNumber(w.pk, rng.randrange(2, w.pk.nsquare) | 1).to_bytes()
        elif self.cipher != "honest":
            raise ValueError(self.cipher)
        records = list(w.records)
        i = self.interval_index % len(records)
        if self.log == "drop":
            records.pop(i)
        elif self.log == "dup":
            records.append(records[i])
        elif self.log == "empty":
            records = []
        elif self.log == "shuffled":
            rng.shuffle(records)
        changes: dict[str, Any] = {"bill_ciphertext": c}
        for lie in self.fields:
            for name, value in FIELD_LIES[lie]:
                changes[name] = value(w) if callable(value) else value
        return he.sign(**changes), he.log(records)


# field lies by name: (field, value or rule on the world's public data) -- the same rule in every world
FIELD_LIES: dict[str, tuple[tuple[str, Any], ...]] = {
    "start+1": (("start", lambda w: w.statement.start + 1),),
    "end+1": (("end", lambda w: w.statement.end + 1),),
    "end-1": (("end", lambda w: w.statement.end - 1),),
    "next-period": (
        ("start", lambda w: w.statement.start + N),
        ("end", lambda w: w.statement.end + N),
    ),
    "count-1": (("record_count", lambda w: w.statement.record_count - 1),),
    "count+1": (("record_count", lambda w: w.statement.record_count + 1),),
    "tariff": (("tariff_digest", bytes(range(32))),),
    "log-digest": (("log_digest", bytes(32)),),
    "log-digest-of-fewer": (
        ("log_digest", lambda w: log_digest("m1", DAY0, DAY0 + N, w.records[1:])),
    ),
    "fixed+1": (("fixed_charge", lambda w: w.statement.fixed_charge + 1),),
    "plan": (("plan_id", "adv-other"),),
    "key": (("key_id", b"\x01" * 16),),
    "meter": (("meter_id", "m2"),),
    "feed": (("feed_digest", b"\x02" * 32),),
}
