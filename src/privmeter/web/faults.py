"""The operator's fault injection: each control is a real action of a real party.

What it is for: the dashboard's controls that make something go wrong, so the
demo can show which party's check catches it.  :class:`Faults` holds what the
operator asked for and acts on it when the engine reaches the step concerned:

* :meth:`Faults.force_event` -- the operator tightens a feeder's Cmax to its
  Cmin for one interval (:meth:`Faults.tightened`, around the head-end's close
  of the interval), so a demand-management event opens if the total allows;
* :meth:`Faults.set_offline` -- a meter stops answering; the masked
  aggregation recovers the total without it, or refuses below the minimum
  group size;
* :meth:`Faults.cheat_bill` -- the utility inflates the meter's next
  statement: E(bill) + :data:`CHEAT_INFLATION`, re-signed with the head-end's
  real key (:func:`forge_statement`); the household disputes, the auditor fails;
* :meth:`Faults.underreport` -- the household claims :data:`UNDERREPORT_FRACTION`
  of its bill in its :class:`~privmeter.protocol.settlement.BillProof`; the
  head-end rejects it (:class:`~privmeter.errors.InvalidProof`);
* :meth:`Faults.probe` -- the curious utility binary-searches one meter's power
  with repeated comparison events; the meter refuses once its privacy budget
  is used (:class:`~privmeter.errors.BudgetExceeded`).

Security: none of its own; every check that catches a fault is in the parties.
Threading: the engine thread only (the controls run through
:meth:`~privmeter.web.engine.DemoEngine.call`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from privmeter.errors import ConfigError, NotFound
from privmeter.parties.headend import HeadEndCore
from privmeter.protocol.demand import DemandManager
from privmeter.protocol.demand_messages import ComparisonAnswer, Echo
from privmeter.protocol.settlement import BillProof, Statement, sign_statement
from privmeter.web.alerts import Alerts

__all__ = ["CHEAT_INFLATION", "UNDERREPORT_FRACTION", "Deliver", "Faults", "forge_statement"]

CHEAT_INFLATION = 5_000_000  # micro-minor-units the cheating utility adds to E(bill) (5 p)
UNDERREPORT_FRACTION = 0.5  # the dishonest household claims half its bill
PROBE_ATTEMPTS = 4  # comparison events one probe tries (each halves the interval searched)
PROBE_RANGE_W = 16_384  # the power range the probe binary-searches, [0, PROBE_RANGE_W) W


class Deliver(Protocol):
    """The engine's delivery of head-end messages to meters and of their answers back
    (:meth:`privmeter.web.engine.DemoEngine._deliver`): the meters whose answer of type
    ``expect`` the head-end accepted; a meter's refusal goes to ``refusals``."""

    def __call__(
        self,
        outgoing: Mapping[str, Sequence[Any]],
        *,
        now: int,
        interval: int,
        expect: type | tuple[type, ...] | None = ...,
        refusals: dict[str, str] | None = ...,
    ) -> set[str]: ...


def forge_statement(core: HeadEndCore, st: Statement) -> Statement:
    """The cheating utility: E(bill) + :data:`CHEAT_INFLATION`, re-signed (a valid head-end signature)."""
    pk = core.household_keys[st.meter_id]
    inflated = pk.ciphertext_from_bytes(st.bill_ciphertext) + CHEAT_INFLATION
    fields = {f.name: getattr(st, f.name) for f in dataclasses.fields(st) if f.name != "signature"}
    fields["bill_ciphertext"] = inflated.to_bytes()
    return sign_statement(core.signing_key, **fields)


class Faults:
    """What the operator asked to go wrong, and the probes the utility ran."""

    def __init__(
        self,
        *,
        groups: Mapping[str, Sequence[str]],
        meter_ids: Iterable[str],
        alerts: Alerts,
        core: Callable[[], HeadEndCore],
        deliver: Deliver,
        current: Callable[[], int],
        interval_seconds: int,
    ) -> None:
        self._groups = groups
        self._group_of = {m: g for g, ms in groups.items() for m in ms}
        self._meters = frozenset(meter_ids)
        self._alerts = alerts
        self._core = core  # the running head-end core (raises before the deployment is set up)
        self._deliver = deliver
        self._current = current  # the last interval stepped
        self._interval_seconds = interval_seconds
        self.offline: set[str] = set()  # meters that stopped answering
        self.probes: list[dict[str, Any]] = []  # one row per probe, oldest first
        self._force: set[str] = set()  # feeders whose next close runs with Cmax tightened
        self._cheat: set[str] = set()  # meters whose next statement is forged
        self._underreport: set[str] = set()  # households that will under-report

    # -- controls ------------------------------------------------------------------------------
    def force_event(self, group: str) -> dict[str, Any]:
        if group not in self._groups:
            raise NotFound(group)
        self._force.add(group)
        self._alerts.add(
            "info",
            "control",
            f"operator: demand event requested on {group} (Cmax tightened for the next interval)",
            group=group,
        )
        return {"group": group, "pending": True}

    def set_offline(self, meter: str, offline: bool) -> dict[str, Any]:
        self._known(meter)
        (self.offline.add if offline else self.offline.discard)(meter)
        self._alerts.add(
            "info",
            "control",
            f"meter {meter} {'taken offline' if offline else 'back online'}",
            meter=meter,
        )
        return {"meter": meter, "offline": offline}

    def cheat_bill(self, meter: str) -> dict[str, Any]:
        self._known(meter)
        self._cheat.add(meter)
        self._alerts.add(
            "info", "control", f"utility will inflate {meter}'s next statement", meter=meter
        )
        return {"meter": meter, "pending": True}

    def underreport(self, meter: str) -> dict[str, Any]:
        self._known(meter)
        self._underreport.add(meter)
        self._alerts.add(
            "info", "control", f"household {meter} will under-report its next bill", meter=meter
        )
        return {"meter": meter, "pending": True}

    def probe(self, meter: str, *, attempts: int = PROBE_ATTEMPTS) -> dict[str, Any]:
        """The curious utility binary-searches one meter's power with repeated comparison events."""
        core = self._core()
        self._known(meter)
        g = self._group_of[meter]
        dm = core.groups[g].dm
        if dm is None:
            raise ConfigError("this deployment runs no demand management")
        current = self._current()
        now = (current + 1) * self._interval_seconds
        lo, hi = 0, PROBE_RANGE_W
        steps: list[dict[str, Any]] = []
        for k in range(attempts):
            thr = (lo + hi) // 2
            ev = dm.open_event(
                thr,
                side="above",
                action="curtail",
                start_interval=current + 1,
                now=now,
                rng=core.rng,
            )
            refusals: dict[str, str] = {}
            echoed = self._deliver(
                {m: [ev] for m in self._groups[g]},
                now=now,
                interval=current,
                expect=Echo,
                refusals=refusals,
            )
            if meter not in echoed:
                steps.append(_unanswered(k, thr, refusals.get(meter, "no answer")))
                break
            q = dm.queries(ev.event_id, now=now, meters=[meter], rng=core.rng)
            got = self._deliver(
                {meter: [dm.echo_bundle(ev.event_id), *q]},
                now=now,
                interval=current,
                expect=ComparisonAnswer,
                refusals=refusals,
            )
            if meter not in got:
                steps.append(_unanswered(k, thr, refusals.get(meter, "no answer")))
                break
            bit = dm.results(ev.event_id)[meter]
            steps.append({"attempt": k + 1, "threshold_w": thr, "answered": True, "bit": bit})
            lo, hi = (thr, hi) if bit else (lo, thr)
        learned = sum(1 for s in steps if s["answered"])
        refused: str | None = next((s["refused"] for s in steps if not s["answered"]), None)
        row = {
            "meter": meter,
            "group": g,
            "time": now,
            "interval": current,
            "steps": steps,
            "bits_learned": learned,
            "refused": refused,
        }
        self.probes.append(row)
        self._alerts.add(
            "caught" if refused else "warn",
            "probe",
            f"utility probed {meter}: {learned} bit(s) learned, then "
            f"{'refused by the meter: ' + refused if refused else 'no refusal'}",
            meter=meter,
            error=refused,
        )
        return row

    # -- hooks: where the engine reaches the step a fault acts on ------------------------------
    def forced(self, group: str) -> bool:
        """True while an event the operator forced on ``group`` has not been opened or refused."""
        return group in self._force

    def force_done(self, group: str) -> None:
        """The forced event on ``group`` was opened or refused: the request is used up."""
        self._force.discard(group)

    @contextlib.contextmanager
    def tightened(self, group: str, dm: DemandManager | None) -> Iterator[bool]:
        """Around the head-end's close of ``group``'s interval: if the operator forced an event
        there, Cmax is lowered to Cmin for that close and restored after; yields whether it was."""
        if dm is None or not self.forced(group):
            yield False
            return
        saved = (dm.cmin_w, dm.cmax_w)
        dm.cmax_w = dm.cmin_w
        try:
            yield True
        finally:
            dm.cmin_w, dm.cmax_w = saved

    def statement(self, core: HeadEndCore, period: int, st: Statement) -> tuple[Statement, bool]:
        """The statement the head-end sends: ``st``, or, once, its forgery if the operator asked
        the utility to cheat on this meter (the core then holds the forgery as issued);
        with whether it was forged."""
        m = st.meter_id
        if m not in self._cheat:
            return st, False
        self._cheat.discard(m)
        forged = forge_statement(core, st)
        core._statements[(m, period)] = forged  # the utility's own record of what it issued
        return forged, True

    def answer(self, meter: str, proof: BillProof) -> tuple[BillProof, bool]:
        """The household's proof as sent: ``proof``, or, once, the same with
        :data:`UNDERREPORT_FRACTION` of the bill if the operator asked it to under-report;
        with whether it was altered."""
        if meter not in self._underreport:
            return proof, False
        self._underreport.discard(meter)
        return (
            BillProof(
                meter_id=proof.meter_id,
                statement_digest=proof.statement_digest,
                bill=int(proof.bill * UNDERREPORT_FRACTION),
                r=proof.r,
            ),
            True,
        )

    def _known(self, meter: str) -> None:
        if meter not in self._meters:
            raise NotFound(meter)


def _unanswered(k: int, threshold: int, refused: str) -> dict[str, Any]:
    return {"attempt": k + 1, "threshold_w": threshold, "answered": False, "refused": refused}
