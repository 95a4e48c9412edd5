"""privmeter.demand: reach the right households in a demand event, learning one bit each.

The stable entry points for a library user (``docs/api.md``,
``docs/demand-management.md``):

* :class:`DemandManager`: the head-end's side -- from a feeder total outside
  its limits (``check_total``) or an operator's decision (``open_event``) to
  signed :class:`DemandEvent` s, comparison queries, the one bit per meter
  (``results``) and :class:`Directive` s for the meters on the chosen side;
* :class:`MeterDemandAgent`: a meter's side -- it checks the event, offers,
  answers one secure comparison of its own fresh reading against the
  utility's threshold within its :class:`ComparisonBudget`, and turns a
  directive into a :class:`LoadInstruction`;
* :func:`choose_threshold`, :func:`plaintext_targets` (the plaintext
  reference the tests compare against) and the plan's :class:`DemandResponse`
  terms (cap, penalty and rebate prices).
"""

from __future__ import annotations

from privmeter.grid.tariff.plans import DemandResponse
from privmeter.protocol.demand import DemandManager, MeterDemandAgent
from privmeter.protocol.demand_budget import ComparisonBudget, choose_threshold, plaintext_targets
from privmeter.protocol.demand_messages import ACTIONS, DemandEvent, Directive, LoadInstruction

__all__ = [
    "ACTIONS",
    "ComparisonBudget",
    "DemandEvent",
    "DemandManager",
    "DemandResponse",
    "Directive",
    "LoadInstruction",
    "MeterDemandAgent",
    "choose_threshold",
    "plaintext_targets",
]
