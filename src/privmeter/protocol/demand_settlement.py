"""Demand-response settlement inside the encrypted bill: the meter's records, the household's amounts.

During an event's window the meter emits, per interval, two encrypted
billing records (``dr_excess`` = Wh above the plan's cap, ``dr_rebate`` = Wh
of headroom below it) under the household's Paillier key
(:func:`event_records`); the utility bills them at the penalty and minus the
rebate price without learning either amount.  :func:`event_adjustments` is
the household's plaintext counterpart for ``settlement.settle``.
"""

from __future__ import annotations

from collections.abc import Mapping

from privmeter.crypto import numtheory as nt
from privmeter.crypto.paillier import PaillierPublicKey
from privmeter.crypto.signing import SigningKey
from privmeter.protocol.records import DR_EXCESS, DR_REBATE, ReadingRecord, make_record

__all__ = ["event_adjustments", "event_amounts", "event_records"]


def event_amounts(energy_wh: int, cap_wh: int) -> tuple[int, int]:
    """``(excess_wh, rebate_wh)`` for one event interval.

    ``excess = max(0, x - cap)``; ``rebate = max(0, cap - max(x, 0))`` (export
    earns no more rebate than zero consumption) -- exactly the plan's
    ``DemandResponse.event_charge`` split into its two priced parts.
    """
    return max(0, energy_wh - cap_wh), max(0, cap_wh - max(energy_wh, 0))


def event_adjustments(
    event_id: str, energy_wh: Mapping[int, int], cap_wh: int
) -> dict[tuple[str, str, int], int]:
    """The household's plaintext counterpart: ``(kind, event, interval) -> Wh`` for
    :func:`privmeter.protocol.settlement.settle` and ``expected_bill``."""
    out: dict[tuple[str, str, int], int] = {}
    for t, x in energy_wh.items():
        ex, rb = event_amounts(x, cap_wh)
        out[(DR_EXCESS, event_id, t)] = ex
        out[(DR_REBATE, event_id, t)] = rb
    return out


def event_records(
    signing_key: SigningKey,
    meter_id: str,
    household_key: PaillierPublicKey,
    event_id: str,
    energy_wh: Mapping[int, int],
    cap_wh: int,
    *,
    rng: nt.RandomSource = nt.SYSTEM_RNG,
) -> list[ReadingRecord]:
    """The meter side: per event interval, signed ``E(excess)`` and ``E(rebate)`` records.

    Both records are always sent (a zero is encrypted like any value), so the
    head-end learns neither amount nor which one is zero.
    """
    out = []
    for t in sorted(energy_wh):
        ex, rb = event_amounts(energy_wh[t], cap_wh)
        for kind, wh in ((DR_EXCESS, ex), (DR_REBATE, rb)):
            ct = household_key.encrypt(wh, rng=rng)
            out.append(
                make_record(
                    signing_key, meter_id, t, household_key, ct, kind=kind, event_id=event_id
                )
            )
    return out
