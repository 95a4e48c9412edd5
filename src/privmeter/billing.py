"""privmeter.billing: verifiable bills on any tariff, without the utility seeing a reading.

The stable entry points for a library user (``docs/api.md``, ``docs/billing.md``):

* the tariff: :class:`Plan` (:func:`builtin_plan`, :func:`load_plan`,
  :func:`parse_plan`) and, for real-time prices, a signed :class:`PriceFeed`;
* the meter: :func:`make_record` signs a reading encrypted under the
  household's key into a :class:`ReadingRecord` (kinds :data:`ENERGY`,
  :data:`DR_EXCESS`, :data:`DR_REBATE`);
* the head-end: :class:`BillingLedger` checks each record, answers with a
  :class:`Receipt`, folds it into the encrypted bill and issues a signed
  :class:`Statement` per billing period;
* the household: :func:`settle` rebuilds E(bill) from the statement's log and
  either pays with a :class:`BillProof` or answers with a :class:`Dispute`
  (a code from :data:`DISPUTE_REASONS`);
* anyone: :func:`audit` checks a statement and its proof offline, with
  public data only (an :class:`AuditReport`, or a specific error).

Units: energy Wh, prices milli-minor-units per kWh, bills micro-minor-units.
"""

from __future__ import annotations

from privmeter.grid.tariff.plan_toml import builtin_plan, builtin_plan_names, load_plan, parse_plan
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.records import (
    DR_EXCESS,
    DR_REBATE,
    ENERGY,
    BillAccumulator,
    ReadingRecord,
    Receipt,
    make_record,
    record_from_bytes,
    verify_record,
)
from privmeter.protocol.settlement import (
    DISPUTE_REASONS,
    AuditReport,
    BillProof,
    Dispute,
    Statement,
    audit,
    check_proof,
    settle,
)

__all__ = [
    "DISPUTE_REASONS",
    "DR_EXCESS",
    "DR_REBATE",
    "ENERGY",
    "AuditReport",
    "BillAccumulator",
    "BillProof",
    "BillingLedger",
    "Dispute",
    "Plan",
    "PriceFeed",
    "ReadingRecord",
    "Receipt",
    "Statement",
    "audit",
    "builtin_plan",
    "builtin_plan_names",
    "check_proof",
    "load_plan",
    "make_record",
    "parse_plan",
    "record_from_bytes",
    "settle",
    "verify_record",
]
