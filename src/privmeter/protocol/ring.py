"""The founding paper's ring secure sum, and its Paillier variant (baseline).

What it is for: fidelity to "Secure multiparty computation based privacy
preserving smart metering system" (NAPS 2012), and a baseline that shows why
the default is masked aggregation (:mod:`privmeter.protocol.aggregation`).

Random-number ring: meters ``r_0 .. r_{n-1}`` in a fixed order.  The leader
``r_0`` draws a secret mask R (uniform mod 2**64) and sends ``S_0 = R + x_0``
to ``r_1``; each ``r_i`` receives ``S_{i-1}``, sends ``S_i = S_{i-1} + x_i``;
the last hop returns to the leader, which removes R and reports the total.
Every hop is encrypted (ChaCha20-Poly1305) under the X25519-agreed key of
that pair of neighbours, so the relaying network or head-end sees nothing.

Paillier variant: the leader sends ``E(x_0)`` under the utility's key; each
meter multiplies in ``E(x_i)`` (re-randomised); the last meter sends the
ciphertext to the utility, which decrypts the total.

Weaknesses, kept and tested rather than hidden:

* a single dropout stalls the round: no one else can continue it; the runner
  declares the timeout and :meth:`RingCoordinator.timeout` raises
  :class:`~privmeter.errors.AggregationError`;
* two colluding neighbours of a victim (predecessor and successor) learn
  its exact reading: ``x_i = S_i - S_{i-1}``;
* in the Paillier variant the utility can decrypt any hop it relays, i.e.
  every partial sum and hence every reading, unless hops bypass it.

States: every role keeps one state per round, moved only along its table
(checked before anything changes; ``docs/states.md``): :data:`RING_LEADER`
(``idle`` -> ``started`` -> ``done``), :data:`RING_MEMBER` (``idle`` ->
``done``), :data:`PAILLIER_RING_METER` and :data:`RING_COORDINATOR`
(``idle`` -> ``open`` -> ``done`` or ``stalled``; both coordinators).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from privmeter.crypto.keyagreement import AgreementKey
from privmeter.crypto.masks import MODULUS
from privmeter.crypto.numtheory import SYSTEM_RNG, RandomSource
from privmeter.crypto.paillier import PaillierPrivateKey, PaillierPublicKey
from privmeter.errors import (
    AggregationError,
    InvalidArgument,
    InvalidCiphertext,
    MalformedMessage,
    ReplayedMessage,
    UnexpectedMessage,
)
from privmeter.protocol.codec import message
from privmeter.protocol.states import Machine, Refusal, register

__all__ = [
    "PAILLIER_RING_METER",
    "RING_COORDINATOR",
    "RING_LEADER",
    "RING_MEMBER",
    "CoordinatorInput",
    "CoordinatorState",
    "PaillierRingCoordinator",
    "PaillierRingMeter",
    "PaillierToken",
    "RingCoordinator",
    "RingMeter",
    "RingStart",
    "RingToken",
    "RingTotal",
    "RoundInput",
    "RoundState",
]


@message("ring.start")
@dataclass(frozen=True, slots=True, kw_only=True)
class RingStart:
    group: str
    round: int

    def __post_init__(self) -> None:
        if not 0 <= self.round < 1 << 62:
            raise InvalidArgument("round out of range")


@message("ring.token")
@dataclass(frozen=True, slots=True, kw_only=True)
class RingToken:
    """The running sum from ``sender`` to ``receiver``, AEAD-encrypted for the receiver."""

    group: str
    round: int
    sender: str
    receiver: str
    ciphertext: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.round < 1 << 62 or len(self.ciphertext) != 8 + 16:
            raise InvalidArgument("ring token: bad round or ciphertext size")


@message("ring.total")
@dataclass(frozen=True, slots=True, kw_only=True)
class RingTotal:
    group: str
    round: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.round < 1 << 62 or not -(1 << 63) <= self.total < 1 << 63:
            raise InvalidArgument("ring total out of range")


@message("ring.ptoken")
@dataclass(frozen=True, slots=True, kw_only=True)
class PaillierToken:
    """Paillier variant: the running encrypted sum (``final`` when it goes to the utility)."""

    group: str
    round: int
    sender: str
    ciphertext: int
    final: bool


class RoundState(enum.Enum):
    """One round, as a meter of the ring sees it."""

    IDLE = "idle"  # not started (leader) / no token yet (member)
    STARTED = "started"  # leader only: the mask drawn, the first token sent
    DONE = "done"  # the token passed on (or, at the leader, the total reported)


class RoundInput(enum.Enum):
    START = "start"  # RingStart
    TOKEN = "token"  # RingToken / PaillierToken from the predecessor


_R, _RI = RoundState, RoundInput
_STARTED = Refusal(ReplayedMessage, "round already started")
_HANDLED = Refusal(ReplayedMessage, "round already handled")
_NOT_LEADER = Refusal(UnexpectedMessage, "only the leader starts a round")
RING_LEADER = register(
    Machine(
        "ring round (leader)",
        RoundState,
        RoundInput,
        _R.IDLE,
        {_R.IDLE: {_RI.START: _R.STARTED}, _R.STARTED: {_RI.TOKEN: _R.DONE}},
        {
            (_R.STARTED, _RI.START): _STARTED,
            (_R.DONE, _RI.START): _STARTED,
            (_R.IDLE, _RI.TOKEN): Refusal(UnexpectedMessage, "token for a round we did not start"),
            (_R.DONE, _RI.TOKEN): _HANDLED,
        },
    )
)


class MemberRoundState(enum.Enum):
    """One round, as a ring member (not the leader) or a Paillier-ring meter sees it."""

    IDLE = "idle"  # no token (no start, at the Paillier leader) yet
    DONE = "done"  # the running sum passed on


_MR = MemberRoundState
RING_MEMBER = register(
    Machine(
        "ring round (member)",
        MemberRoundState,
        RoundInput,
        _MR.IDLE,
        {_MR.IDLE: {_RI.TOKEN: _MR.DONE}},
        {(_MR.IDLE, _RI.START): _NOT_LEADER, (_MR.DONE, _RI.START): _NOT_LEADER},
        default=_HANDLED,
    )
)
# the Paillier ring: the leader starts, the others take a token; either way once a round
# (who may start is the leader's role, checked before the table)
PAILLIER_RING_METER = register(
    Machine(
        "Paillier ring round (meter)",
        MemberRoundState,
        RoundInput,
        _MR.IDLE,
        {_MR.IDLE: {_RI.START: _MR.DONE, _RI.TOKEN: _MR.DONE}},
        {(_MR.DONE, _RI.START): _STARTED},
        default=_HANDLED,
    )
)


class CoordinatorState(enum.Enum):
    """One round, as the head-end sees it (either ring)."""

    IDLE = "idle"  # never started
    OPEN = "open"  # started, the total awaited
    DONE = "done"  # the total received
    STALLED = "stalled"  # the runner's deadline passed first (the round is lost)


class CoordinatorInput(enum.Enum):
    START = "start"  # local: a RingStart sent (a round may be started again)
    TOTAL = "total"  # RingTotal / the final PaillierToken
    TIMEOUT = "timeout"  # local: the runner's deadline


_C, _CI = CoordinatorState, CoordinatorInput
RING_COORDINATOR = register(
    Machine(
        "ring round (coordinator)",
        CoordinatorState,
        CoordinatorInput,
        _C.IDLE,
        {
            **{st: {_CI.START: _C.OPEN, _CI.TIMEOUT: st} for st in (_C.IDLE, _C.DONE, _C.STALLED)},
            _C.OPEN: {_CI.START: _C.OPEN, _CI.TOTAL: _C.DONE, _CI.TIMEOUT: _C.STALLED},
        },
        default=Refusal(UnexpectedMessage, "total for a round not open"),
    )
)


def _to_signed(v: int) -> int:
    v %= MODULUS
    return v - MODULUS if v >= 1 << 63 else v


def _nonce(round_: int, sender_pos: int) -> bytes:
    return struct.pack(">QI", round_, sender_pos)


class RingMeter:
    """One meter of the random-number ring."""

    def __init__(
        self,
        meter_id: str,
        ring: Sequence[str],
        key: AgreementKey,
        publics: Mapping[str, bytes],
        *,
        group: str,
        epoch: int = 1,
        rng: RandomSource = SYSTEM_RNG,
    ) -> None:
        self.meter_id, self.group, self.ring = meter_id, group, tuple(ring)
        self.pos = self.ring.index(meter_id)
        self.pred = self.ring[self.pos - 1]
        self.succ = self.ring[(self.pos + 1) % len(self.ring)]

        def agree(peer: str) -> ChaCha20Poly1305:
            return ChaCha20Poly1305(
                key.agree(
                    publics[peer], group=group, epoch=epoch, id_a=meter_id, id_b=peer
                ).aead_key
            )

        self._to_succ, self._from_pred = agree(self.succ), agree(self.pred)
        self._rng = rng
        self._mask: dict[int, int] = {}
        self.machine: Machine[RoundState, RoundInput] | Machine[MemberRoundState, RoundInput] = (
            RING_LEADER if self.pos == 0 else RING_MEMBER
        )
        self._rounds: dict[int, RoundState | MemberRoundState] = {}
        # what this meter sees (a colluder would share these)
        self.last_sent: int | None = None
        self.last_received: int | None = None

    def state(self, round_: int) -> RoundState | MemberRoundState:
        """Round ``round_``'s state (:data:`RING_LEADER` / :data:`RING_MEMBER`)."""
        return self._rounds.get(round_, self.machine.initial)

    def _next(self, round_: int, inp: RoundInput) -> RoundState | MemberRoundState:
        return self.machine.next(self.state(round_), inp, interval=round_)  # type: ignore[arg-type]

    def _send(self, round_: int, value: int) -> RingToken:
        self.last_sent = value % MODULUS
        ct = self._to_succ.encrypt(
            _nonce(round_, self.pos), self.last_sent.to_bytes(8, "big"), self.group.encode()
        )
        return RingToken(
            group=self.group, round=round_, sender=self.meter_id, receiver=self.succ, ciphertext=ct
        )

    def handle_start(self, start: RingStart, reading: int) -> RingToken:
        nxt = self._next(start.round, RoundInput.START)
        r = self._rng.getrandbits(64)
        self._mask[start.round] = r
        self._rounds[start.round] = nxt
        return self._send(start.round, r + reading)

    def handle_token(self, token: RingToken, reading: int) -> RingToken | RingTotal:
        if (
            token.receiver != self.meter_id
            or token.sender != self.pred
            or token.group != self.group
        ):
            raise MalformedMessage("ring token not from our predecessor to us")
        nxt = self._next(token.round, RoundInput.TOKEN)
        try:
            pt = self._from_pred.decrypt(
                _nonce(token.round, (self.pos - 1) % len(self.ring)),
                token.ciphertext,
                self.group.encode(),
            )
        except InvalidTag:
            raise InvalidCiphertext("ring token does not authenticate") from None
        s = int.from_bytes(pt, "big")
        self.last_received = s
        self._rounds[token.round] = nxt
        if self.pos == 0:
            mask = self._mask.pop(token.round)
            return RingTotal(group=self.group, round=token.round, total=_to_signed(s - mask))
        return self._send(token.round, s + reading)


class RingCoordinator:
    """The head-end's side: starts rounds, receives totals, declares timeouts."""

    def __init__(self, group: str, ring: Sequence[str]) -> None:
        self.group, self.ring = group, tuple(ring)
        self._rounds: dict[int, CoordinatorState] = {}
        self.totals: dict[int, int] = {}

    def state(self, round_: int) -> CoordinatorState:
        """Round ``round_``'s state (:data:`RING_COORDINATOR`)."""
        return self._rounds.get(round_, CoordinatorState.IDLE)

    def _next(self, round_: int, inp: CoordinatorInput) -> CoordinatorState:
        return RING_COORDINATOR.next(self.state(round_), inp, interval=round_)

    def start(self, round_: int) -> RingStart:
        self._rounds[round_] = self._next(round_, CoordinatorInput.START)
        return RingStart(group=self.group, round=round_)

    def handle_total(self, msg: RingTotal) -> int:
        self._rounds[msg.round] = self._next(msg.round, CoordinatorInput.TOTAL)
        self.totals[msg.round] = msg.total
        return msg.total

    def timeout(self, round_: int) -> None:
        """The runner's deadline passed: an open round is lost (a ring cannot route around)."""
        was, self._rounds[round_] = self.state(round_), self._next(round_, CoordinatorInput.TIMEOUT)
        if was is CoordinatorState.OPEN:
            raise AggregationError(
                "ring round stalled: a meter did not pass the token", interval=round_
            )


class PaillierRingMeter:
    """One meter of the Paillier ring: multiplies in E(reading) under the utility's key."""

    def __init__(
        self,
        meter_id: str,
        ring: Sequence[str],
        utility_key: PaillierPublicKey,
        *,
        group: str,
        rng: RandomSource = SYSTEM_RNG,
    ) -> None:
        self.meter_id, self.group, self.ring = meter_id, group, tuple(ring)
        self.pos = self.ring.index(meter_id)
        self.pred = self.ring[self.pos - 1]
        self._pk, self._rng = utility_key, rng
        self._rounds: dict[int, MemberRoundState] = {}

    def state(self, round_: int) -> MemberRoundState:
        """Round ``round_``'s state (:data:`PAILLIER_RING_METER`)."""
        return self._rounds.get(round_, MemberRoundState.IDLE)

    def _out(self, round_: int, value: int, nxt: MemberRoundState) -> PaillierToken:
        self._rounds[round_] = nxt
        return PaillierToken(
            group=self.group,
            round=round_,
            sender=self.meter_id,
            ciphertext=value,
            final=self.pos == len(self.ring) - 1,
        )

    def handle_start(self, start: RingStart, reading: int) -> PaillierToken:
        if self.pos != 0:
            raise UnexpectedMessage("only the leader starts a round")
        nxt = PAILLIER_RING_METER.next(
            self.state(start.round), RoundInput.START, interval=start.round
        )
        return self._out(start.round, self._pk.encrypt(reading, rng=self._rng).value, nxt)

    def handle_token(self, token: PaillierToken, reading: int) -> PaillierToken:
        if token.sender != self.pred or token.group != self.group or token.final:
            raise MalformedMessage("Paillier token not from our predecessor")
        nxt = PAILLIER_RING_METER.next(
            self.state(token.round), RoundInput.TOKEN, interval=token.round
        )
        c = self._pk.ciphertext(token.ciphertext)  # validates range and unit-ness
        return self._out(token.round, (c + self._pk.encrypt(reading, rng=self._rng)).value, nxt)


class PaillierRingCoordinator:
    """The utility: decrypts the final ciphertext of a Paillier ring."""

    def __init__(self, group: str, ring: Sequence[str], key: PaillierPrivateKey) -> None:
        self.group, self.ring, self._sk = group, tuple(ring), key
        self._rounds: dict[int, CoordinatorState] = {}

    def state(self, round_: int) -> CoordinatorState:
        """Round ``round_``'s state (:data:`RING_COORDINATOR`)."""
        return self._rounds.get(round_, CoordinatorState.IDLE)

    def _next(self, round_: int, inp: CoordinatorInput) -> CoordinatorState:
        return RING_COORDINATOR.next(self.state(round_), inp, interval=round_)

    def start(self, round_: int) -> RingStart:
        self._rounds[round_] = self._next(round_, CoordinatorInput.START)
        return RingStart(group=self.group, round=round_)

    def handle_final(self, token: PaillierToken) -> int:
        if not token.final or token.sender != self.ring[-1]:
            raise UnexpectedMessage("not the final token of an open round", interval=token.round)
        nxt = self._next(token.round, CoordinatorInput.TOTAL)
        total = self._sk.decrypt(self._sk.public_key.ciphertext(token.ciphertext))
        self._rounds[token.round] = nxt
        return total

    def timeout(self, round_: int) -> None:
        was, self._rounds[round_] = self.state(round_), self._next(round_, CoordinatorInput.TIMEOUT)
        if was is CoordinatorState.OPEN:
            raise AggregationError("Paillier ring round stalled", interval=round_)
