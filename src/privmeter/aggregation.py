"""privmeter.aggregation: every feeder's total, no household's reading (masked aggregation).

The stable entry points for a library user (``docs/api.md``, ``docs/aggregation.md``):

* :class:`AggregationMeter`: a meter's side -- ``advertise()``,
  ``handle_bundle(bundle)``, ``handle_start(start, reading) -> MaskedInput``;
* :class:`AggregationHeadEnd`: the head-end's side -- ``handle_advert``,
  ``make_bundle``, ``open_interval()``, ``handle_input``,
  ``close_interval() -> AggregateResult | None`` (the total of the interval
  before, exact, and who survived);
* the messages between them (:class:`KeyAdvert`, :class:`KeyBundle`,
  :class:`IntervalStart`, :class:`MaskedInput`), encoded with :func:`encode`
  and decoded with :func:`decode` (both sides also take bytes);
* :class:`MembershipPolicy`: the roster rules a meter enforces against
  differencing attacks (from its plan's :class:`PrivacyBudget`);
* :func:`degree_for`: the neighbour count for a group size and dropout rate.

Both parties are sans-IO: they take and return messages; the caller moves
them and decides when an interval's deadline has passed.
"""

from __future__ import annotations

from privmeter.grid.tariff.plans import PrivacyBudget
from privmeter.protocol.aggregation import AggregateResult, AggregationHeadEnd, AggregationMeter
from privmeter.protocol.aggregation_messages import (
    IntervalStart,
    KeyAdvert,
    KeyBundle,
    MaskedInput,
    degree_for,
)
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.membership import MembershipPolicy

__all__ = [
    "AggregateResult",
    "AggregationHeadEnd",
    "AggregationMeter",
    "IntervalStart",
    "KeyAdvert",
    "KeyBundle",
    "MaskedInput",
    "MembershipPolicy",
    "PrivacyBudget",
    "decode",
    "degree_for",
    "encode",
]
