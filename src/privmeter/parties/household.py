"""The household agent: holds the Paillier secret key and settles its bills.

What it is for: the household (the user's app) reads its own readings from
its meter's local port, knows its plan and the published tariff / price
feed, and answers each statement of the head-end with
:func:`privmeter.protocol.settlement.settle`: it recomputes its bill in
plaintext *first* and reveals ``(bill, r)`` only if the statement's E(bill)
encrypts exactly that bill; otherwise it disputes with a reason code.

Security assumption: the household is the only holder of its secret key and
may be malicious towards billing (it cannot make an under-reported bill
verify: the proof binds).  Guarantee: the household never decrypts a
ciphertext that is not its expected bill, so a head-end that disguises one
reading as a "bill" learns only that the household disputes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from privmeter.crypto.paillier import PaillierPrivateKey
from privmeter.crypto.signing import VerifyKey
from privmeter.grid.plans import Plan
from privmeter.grid.pricefeed import PriceFeed
from privmeter.parties.messages import FeedPublished, SettleRequest
from privmeter.protocol.codec import decode
from privmeter.protocol.periods import period_bounds, period_of
from privmeter.protocol.settlement import BillProof, Dispute, Statement, settle

__all__ = ["HouseholdAgent"]

LocalPort = Callable[[], tuple[Mapping[int, int], Mapping[tuple[str, str, int], int]]]


class HouseholdAgent:
    """One household: settle statements against the meter's local readings."""

    def __init__(
        self,
        meter_id: str,
        secret_key: PaillierPrivateKey,
        plan: Plan,
        headend_key: VerifyKey,
        local_port: LocalPort,
        *,
        period_intervals: int | None = None,
        period_start: int | None = None,
    ) -> None:
        self.meter_id = meter_id
        self.secret_key = secret_key
        self.plan = plan
        self.headend_key = headend_key
        self.local_port = local_port
        self.feed: PriceFeed | None = None
        self.period_intervals = period_intervals
        self.period_start = period_start
        self.answers: list[BillProof | Dispute] = []

    def receive_feed(self, feed_json: str) -> None:
        """A published feed: verified against the plan's feed key before use."""
        feed = PriceFeed.from_json(feed_json)
        vk = self.plan.tariff.verify_key
        if vk is not None:
            feed.verify(vk)
        self.feed = feed if self.feed is None else self.feed.merge(feed)

    def settle(self, statement: Statement) -> BillProof | Dispute:
        readings, adjustments = self.local_port()
        period = None
        if self.period_intervals is not None and self.period_start is not None:
            layout = (self.period_start, self.period_intervals, self.plan.interval_seconds)
            period = range(*period_bounds(period_of(statement.start, *layout), *layout))
        lo, hi = statement.start, statement.end
        mine = {t: v for t, v in readings.items() if lo <= t < hi}
        adj = {k: v for k, v in adjustments.items() if lo <= k[2] < hi}
        ans = settle(statement, headend_key=self.headend_key, secret_key=self.secret_key,
                     meter_id=self.meter_id, plan=self.plan, readings=mine, feed=self.feed,
                     adjustments=adj, period=period)
        self.answers.append(ans)
        return ans

    def handle(self, msg: object) -> list[object]:
        """Message-driven form (the household service)."""
        if isinstance(msg, FeedPublished):
            self.receive_feed(msg.feed_json)
            return []
        if isinstance(msg, SettleRequest):
            st = decode(msg.statement, expect=Statement)
            return [self.settle(st)]
        from privmeter.errors import UnexpectedMessage
        raise UnexpectedMessage(f"a household does not take {type(msg).__name__} messages")
