"""The household agent: holds the Paillier secret key and settles its bills.

What it is for: the household (the user's app) reads its own readings from
its meter's local port, knows its plan, the published tariff / price feed,
its meter's verify key and its billing periods, and answers each statement of
the head-end with :func:`privmeter.protocol.settlement.settle`: it rebuilds
E(bill) itself from the meter-signed records the statement is built from (the
statement's log, sent with it) and the published prices, and pays -- reveals
``(bill, r)`` -- only if the statement's E(bill) is exactly that, for exactly
one of its billing periods, and its own readings give that bill; otherwise it
disputes with a reason code.  It never decrypts anything.

At most one payment per billing period: once a statement of a period is
paid, the same statement gets the same proof again (a retransmission) and any
other statement of that period the dispute ``settled``
(:class:`~privmeter.errors.AlreadySettled`).  A disputed period may be
answered again (a corrected statement).

Security assumption: the household is the only holder of its secret key and
may be malicious towards billing (it cannot make an under-reported bill
verify: the proof binds); its meter is trusted.  Guarantee (the bound, see
:mod:`privmeter.protocol.settlement`): whatever statements and logs the
head-end sends, each answer is a function of data the head-end holds, except
the one proof per period, which carries the period's true bill.  The paid
periods survive a restart when the agent is given the ones paid before
(``paid``) and a hook that saves each new proof before it leaves
(``on_paid``; the deployed household keeps them in its ``state.db``,
:meth:`~privmeter.parties.meter_state.MeterLedgerStore.put_paid`).

States: each billing period is ``open``, ``disputed`` or ``paid``
(:class:`PeriodState`), moved only along :data:`HOUSEHOLD_PERIOD` (the
table is in ``docs/states.md``): a statement takes the period to
``checking`` (every check of :func:`~privmeter.protocol.settlement.settle`,
the rebuild of E(bill) included, on a local value: nothing is committed
while it runs), then ``pay`` or ``dispute`` commits the outcome.  Only
``paid`` is persisted (the ``paid`` table, unchanged); a restarted household
finds its disputed periods ``open``, which take statements alike.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping

from privmeter.crypto.paillier import PaillierPrivateKey
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import (
    AlreadySettled,
    LocalProtocolError,
    PrivmeterError,
    UnexpectedMessage,
)
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.parties.messages import FeedPublished, SettleRequest
from privmeter.protocol.codec import decode
from privmeter.protocol.periods import check_layout, period_bounds, period_of
from privmeter.protocol.settlement import (
    BillProof,
    Dispute,
    Statement,
    records_from_log,
    settle,
    statement_digest,
)
from privmeter.protocol.states import Machine, Refusal, register

__all__ = ["HOUSEHOLD_PERIOD", "HouseholdAgent", "LocalPort", "PeriodInput", "PeriodState"]

# the meter's local port: (readings {interval: Wh}, demand-response amounts {(kind, event, interval): Wh})
LocalPort = Callable[[], tuple[Mapping[int, int], Mapping[tuple[str, str, int], int]]]


class PeriodState(enum.Enum):
    """One billing period, as the household sees it."""

    OPEN = "open"  # no statement of it answered yet (or the household restarted since)
    CHECKING = "checking"  # a statement received: checked, E(bill) rebuilt, our bill opened
    DISPUTED = "disputed"  # the last statement disputed: a corrected one may still be paid
    PAID = "paid"  # one proof given (kept in state.db): never a second one


class PeriodInput(enum.Enum):
    STATEMENT = "statement"  # a statement of the period, other than the one paid
    RETRANSMISSION = "retransmission"  # the very statement paid, again: the same proof
    PAY = "pay"  # local: every check passed; the proof saved (on_paid), then sent
    DISPUTE = "dispute"  # local: a check failed; the dispute sent


_P, _PI = PeriodState, PeriodInput
HOUSEHOLD_PERIOD = register(
    Machine(
        "billing period (household)",
        PeriodState,
        PeriodInput,
        _P.OPEN,
        {
            _P.OPEN: {_PI.STATEMENT: _P.CHECKING},
            _P.CHECKING: {_PI.PAY: _P.PAID, _PI.DISPUTE: _P.DISPUTED},
            _P.DISPUTED: {_PI.STATEMENT: _P.CHECKING},
            _P.PAID: {_PI.RETRANSMISSION: _P.PAID},
        },
        {(_P.PAID, _PI.STATEMENT): Refusal(AlreadySettled, "a second statement of a paid period")},
        default=Refusal(LocalProtocolError, "the household's own step out of order"),
    )
)


class HouseholdAgent:
    """One household: settle statements against the meter's local readings and signed records."""

    def __init__(
        self,
        meter_id: str,
        secret_key: PaillierPrivateKey,
        plan: Plan,
        headend_key: VerifyKey,
        local_port: LocalPort,
        *,
        meter_key: VerifyKey,
        period_start: int,
        period_intervals: int,
        paid: Mapping[int, BillProof] | None = None,
        on_paid: Callable[[int, BillProof], None] | None = None,
    ) -> None:
        check_layout(period_start, period_intervals, plan.interval_seconds)
        self.meter_id = meter_id
        self.secret_key = secret_key
        self.plan = plan
        self.headend_key = headend_key
        self.meter_key = meter_key
        self.local_port = local_port
        self.feed: PriceFeed | None = None
        self.period_intervals = period_intervals
        self.period_start = period_start
        self.answers: list[BillProof | Dispute] = []
        self.paid: dict[int, BillProof] = dict(
            paid or {}
        )  # billing period -> the one proof given for it
        self.on_paid = on_paid  # saves a new proof (durably) before it is sent; raising stops it
        self._states: dict[int, PeriodState] = {}  # periods answered since the start

    def state(self, period: int) -> PeriodState:
        """Billing period ``period``'s state (:data:`HOUSEHOLD_PERIOD`): ``paid`` is a proof
        in :attr:`paid` (restored after a restart), the rest is this run's."""
        if period in self.paid:
            return PeriodState.PAID
        return self._states.get(period, PeriodState.OPEN)

    def receive_feed(self, feed_json: str) -> None:
        """A published feed: verified against the plan's feed key before use."""
        feed = PriceFeed.from_json(feed_json)
        vk = self.plan.tariff.verify_key
        if vk is not None:
            feed.verify(vk)
        self.feed = feed if self.feed is None else self.feed.merge(feed)

    def period_of(self, statement: Statement) -> tuple[int, range]:
        """The billing period a statement's range starts in, and that period's intervals
        (:mod:`privmeter.protocol.periods`: fixed lengths or calendar months)."""
        layout = (self.period_start, self.period_intervals, self.plan.interval_seconds)
        k = period_of(statement.start, *layout)
        return k, range(*period_bounds(k, *layout))

    def settle(self, statement: Statement, log: Iterable[bytes] = ()) -> BillProof | Dispute:
        """Answer one statement; ``log``: the records it is built from (canonical bytes)."""
        k, period = (
            self.period_of(statement) if statement.start >= self.period_start else (-1, range(0))
        )
        sd = statement_digest(statement)
        if k < 0:  # before the first billing period: not one of ours
            ans: BillProof | Dispute = Dispute(
                meter_id=statement.meter_id, statement_digest=sd, reason="range"
            )
            self.answers.append(ans)
            return ans
        state = self.state(k)
        done = self.paid.get(k)
        again = done is not None and done.statement_digest == sd
        inp = PeriodInput.RETRANSMISSION if again else PeriodInput.STATEMENT
        try:
            checking = HOUSEHOLD_PERIOD.next(state, inp, period=k)
        except AlreadySettled:
            ans = Dispute(meter_id=statement.meter_id, statement_digest=sd, reason="settled")
        else:
            if done is not None and again:
                ans = done
            else:
                ans = self._check(statement, log, period)
                outcome = PeriodInput.PAY if isinstance(ans, BillProof) else PeriodInput.DISPUTE
                nxt = HOUSEHOLD_PERIOD.next(checking, outcome, period=k)
                if isinstance(ans, BillProof):
                    if self.on_paid is not None:
                        self.on_paid(k, ans)
                    self.paid[k] = ans
                self._states[k] = nxt
        self.answers.append(ans)
        return ans

    def _check(
        self, statement: Statement, log: Iterable[bytes], period: range
    ) -> BillProof | Dispute:
        """The ``checking`` state: settle's checks and rebuild, on public data until the last."""
        try:
            records = records_from_log(log)
        except PrivmeterError:
            return Dispute(
                meter_id=statement.meter_id,
                statement_digest=statement_digest(statement),
                reason="log",
            )
        readings, adjustments = self.local_port()
        return settle(
            statement,
            headend_key=self.headend_key,
            meter_key=self.meter_key,
            secret_key=self.secret_key,
            meter_id=self.meter_id,
            plan=self.plan,
            period=period,
            readings=readings,
            records=records,
            feed=self.feed,
            adjustments=adjustments,
        )

    def handle(self, msg: object) -> list[object]:
        """Message-driven form (the household service)."""
        if isinstance(msg, FeedPublished):
            self.receive_feed(msg.feed_json)
            return []
        if isinstance(msg, SettleRequest):
            st = decode(msg.statement, expect=Statement)
            return [self.settle(st, msg.log)]
        raise UnexpectedMessage(f"a household does not take {type(msg).__name__} messages")
