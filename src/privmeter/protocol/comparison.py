"""Secure comparison ``[x >= T]`` with the key on the meter's side (sans-IO).

What it is for: the utility learns whether a meter's reading ``x`` is at
least its private threshold ``T``, and **nothing the utility sends can make
the meter reveal more than that one bit** (issue 12, attack 2: a utility
that owned the comparison key could read whole readings with a malformed
key or broadcast).  So the roles of DGK/Veugen are swapped (the Erkin et al.
/ Veugen setting where the party with the private input holds the key), and
the key is used once:

1. Meter, per comparison (:class:`MeterComparison`): draws a fresh
   :class:`~privmeter.crypto.elgamal.OneUseKey` from its own randomness and
   sends (:class:`ComparisonOffer`) the one-hot encryptions
   ``E([a_i = d])`` of every digit ``a_i`` of its (offset, clamped) reading
   for every ``d = 0 .. radix-1``.
2. Utility (:class:`UtilityComparison`), knowing ``T``, picks a secret
   uniform sign ``s`` and computes for every digit ``i``, with ``t`` the
   digits of ``T`` (``s = 0``) or of ``T - 1`` (``s = 1``)::

       s = 0:  c_i = sum_{d >= t_i} [a_i = d] + sum_{j > i} [a_j != t_j]
       s = 1:  c_i = sum_{d <= t_i} [a_i = d] + sum_{j > i} [a_j != t_j]

   (linear in the one-hot encryptions: products of ciphertexts, no
   inversion).  ``c_i = 0`` iff digits above ``i`` agree and ``a_i < t_i``
   (``s = 0``) or ``a_i > t_i`` (``s = 1``): a zero exists iff ``x < T``
   (``s = 0``) or ``x > T - 1``, i.e. ``x >= T`` (``s = 1``).  It blinds
   each ``c_i`` as ``c_i**r_i * E(0)`` (``r_i`` non-zero of
   :data:`BLIND_MIN_BITS` or more bits, fresh randomness under the meter's
   key), shuffles, and sends the ``D`` values
   (:class:`ComparisonChallenge`).
3. Meter: checks the challenge names its offer and has exactly ``D`` subgroup
   elements, zero-tests **all** of them, erases the key, and releases one
   bit ``z`` = "some value is zero".  Utility: ``[x >= T] = z`` if ``s = 1``
   else ``not z``.

Correctness: every term is non-negative and at most ``D + 1`` (far below
the group order ``q``), so nothing wraps; exactly one zero when the
condition holds (at the first differing digit), none otherwise, including
``x = T`` (tested on every edge and by hypothesis for all radices).

The bound (whatever the utility sends): per :class:`MeterComparison` the
meter outputs exactly one bit, once; before that the utility holds only
semantically secure encryptions under a key it never sees (DDH), and after
it the key is erased, so old ciphertexts cannot be zero-tested again and
ciphertexts under one key say nothing under another.  Malformed challenges
(wrong count, wrong offer digest, values outside the subgroup) are refused
with a specific error *before* any secret is used, so a refusal depends
only on public data.  The meter tests every value (no early exit), so the
position of a zero is not in its timing either (bignum arithmetic itself is
not constant-time: a residual we accept for a network peer).

What the meter learns: ``z = [x < T] xor s`` with ``s`` uniform and secret:
nothing about ``T``; non-zero values are ``g**(m r)`` with a fresh ``r``, and
the extra ``E(0)`` hides which ciphertexts were combined (DDH).  This is the
utility's side of the bargain and assumes the meter's group is a named safe
prime group (the utility refuses others).

Cost (measured by ``privmeter bench comparison``): meter ``radix * D``
encryptions (fixed-base, no per-key table) plus ``D`` exponentiations;
utility ``D`` blindings (three exponentiations each); bytes
``2 radix D + 2 D`` group elements.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from privmeter.crypto import numtheory as nt
from privmeter.crypto.elgamal import Group, OneUseKey, get_group
from privmeter.errors import (
    InvalidArgument,
    InvalidArgumentType,
    InvalidCiphertext,
    InvalidKey,
    MalformedMessage,
    PlaintextOverflow,
    UnexpectedMessage,
)
from privmeter.protocol.codec import encode, message
from privmeter.protocol.states import Machine, Refusal, register

__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_RADIX",
    "RADICES",
    "ComparisonChallenge",
    "ComparisonOffer",
    "MeterComparison",
    "SessionEvent",
    "SessionState",
    "UtilityComparison",
    "clamp_value",
    "digits_of",
    "num_digits",
    "offset_value",
]

DEFAULT_BITS = 24  # readings in W up to +-8.3 MW: any household or feeder
DEFAULT_RADIX = (
    4  # same offer size as radix 2 (radix * D = 48 at 24 bits), half the blindings and tests
)
RADICES = (2, 4, 8, 16)
MIN_BITS, MAX_BITS = 2, 64
MIN_GROUP_BITS = 2048  # the utility refuses smaller groups unless told otherwise (tests)
# The utility's blinding exponent r_i: a non-zero c_i becomes g**(c_i r_i); to learn c_i (and so
# something of T) the meter would need a discrete log in an interval of 2**(bits + 4): kangaroo
# costs 2**(bits/2 + 2), at least 2**66.  It protects the utility's threshold, not the reading.
BLIND_MIN_BITS = 128
Y_WINDOW = 5  # per-offer fixed-base table for the meter's y: built once, used D times
_LOG2 = {2: 1, 4: 2, 8: 3, 16: 4}


def num_digits(bits: int, radix: int) -> int:
    """Digits of base ``radix`` needed for ``bits``-bit values."""
    if radix not in _LOG2:
        raise InvalidArgument(f"radix must be one of {RADICES}, got {radix!r}")
    return -(-bits // _LOG2[radix])


def offset_value(x: int, bits: int) -> int:
    """Map a signed ``bits``-bit value to ``[0, 2**bits)``; PlaintextOverflow outside."""
    half = 1 << (bits - 1)
    if not isinstance(x, int) or isinstance(x, bool):
        raise InvalidArgumentType(f"value must be int, got {type(x).__name__}")
    if not -half <= x < half:
        raise PlaintextOverflow(f"{x!r} outside the signed {bits}-bit range")
    return x + half


def clamp_value(x: int, bits: int) -> int:
    """Clamp a reading into the signed ``bits``-bit range.

    Clamping preserves ``[x >= T]`` for every threshold the utility may use
    (``-2**(bits-1) < T < 2**(bits-1)``), so a meter can always answer: a
    reading beyond the range compares like the range's end.
    """
    half = 1 << (bits - 1)
    return min(max(x, -half), half - 1)


def digits_of(v: int, radix: int, count: int) -> list[int]:
    """Little-endian base-``radix`` digits of ``v >= 0`` (exactly ``count`` of them)."""
    out = []
    for _ in range(count):
        v, d = divmod(v, radix)
        out.append(d)
    if v:
        raise PlaintextOverflow("value has more digits than the comparison length")
    return out


def _check_shape(bits: int, radix: int) -> int:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidArgument(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if radix not in RADICES:
        raise InvalidArgument(f"radix must be one of {RADICES}, got {radix!r}")
    return num_digits(bits, radix)


def _ints(values: tuple[int, ...], what: str) -> None:
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise InvalidArgument(f"{what} must be positive ints")


# -- messages --------------------------------------------------------------------


@message("cmp.offer")
@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonOffer:
    """The meter's one-use public key and the one-hot encryptions of its digits.

    ``values`` is flat: for digit ``i`` (least significant first) and
    ``d = 0 .. radix-1``, the pair ``(a, b)`` of ``E([a_i = d])`` at
    ``values[2 (i radix + d)]``, ``values[2 (i radix + d) + 1]``.
    """

    group: str
    public: int
    bits: int
    radix: int
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        d = _check_shape(self.bits, self.radix)
        if not self.group or len(self.group) > 32:
            raise InvalidArgument("group must be a short name")
        if len(self.values) != 2 * self.radix * d:
            raise InvalidArgument(f"expected {2 * self.radix * d} values, got {len(self.values)}")
        _ints((self.public, *self.values), "offer values")

    def digest(self) -> bytes:
        return hashlib.sha256(b"privmeter.cmp.offer/1" + encode(self)).digest()


@message("cmp.challenge")
@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonChallenge:
    """The utility's blinded, shuffled ``c_i`` for one offer: ``D`` pairs, flat."""

    offer_digest: bytes
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.offer_digest) != 32:
            raise InvalidArgument("offer_digest must be 32 bytes")
        if not 2 <= len(self.values) <= 2 * MAX_BITS or len(self.values) % 2:
            raise InvalidArgument(
                f"2-{2 * MAX_BITS} values (pairs) expected, got {len(self.values)}"
            )
        _ints(self.values, "challenge values")

    def digest(self) -> bytes:
        return hashlib.sha256(b"privmeter.cmp.challenge/1" + encode(self)).digest()


class SessionState(enum.Enum):
    """A comparison session, either side: waiting for the other side's move, or spent."""

    OFFERED = "offered"  # meter: offer sent; utility: challenge built, answer awaited
    DONE = "done"  # meter: one bit released, key erased; utility: bit read


class SessionEvent(enum.Enum):
    CHALLENGE = "challenge"  # meter: the utility's challenge arrives
    ANSWER = "answer"  # utility: the meter's bit arrives


_SPENT = Refusal(UnexpectedMessage, "comparison already answered")
METER_SESSION = register(
    Machine(
        "comparison session (meter)",
        SessionState,
        SessionEvent,
        SessionState.OFFERED,
        {SessionState.OFFERED: {SessionEvent.CHALLENGE: SessionState.DONE}},
        default=_SPENT,
    )
)
UTILITY_SESSION = register(
    Machine(
        "comparison session (utility)",
        SessionState,
        SessionEvent,
        SessionState.OFFERED,
        {SessionState.OFFERED: {SessionEvent.ANSWER: SessionState.DONE}},
        default=_SPENT,
    )
)


# -- meter side ----------------------------------------------------------------------


class MeterComparison:
    """One comparison, meter side: a fresh key, the offer, then one bit.

    ``answer(challenge)`` validates (offer digest, count, every element in the
    subgroup) before touching the key; a bad challenge raises and leaves the
    session waiting.  After one answer the key is erased and a second
    challenge is :class:`~privmeter.errors.UnexpectedMessage`.
    """

    __slots__ = ("_key", "digest", "ndig", "offer", "state")

    def __init__(
        self,
        group: Group,
        x: int,
        *,
        bits: int = DEFAULT_BITS,
        radix: int = DEFAULT_RADIX,
        rng: nt.RandomSource = nt.SYSTEM_RNG,
    ) -> None:
        self.ndig = _check_shape(bits, radix)
        a = digits_of(offset_value(clamp_value(x, bits), bits), radix, self.ndig)
        key = OneUseKey(group, rng=rng)
        vals: list[int] = []
        for ai in a:
            for d in range(radix):
                vals.extend(key.encrypt(1 if d == ai else 0, rng=rng))
        self._key = key
        self.offer = ComparisonOffer(
            group=group.name, public=key.y, bits=bits, radix=radix, values=tuple(vals)
        )
        self.digest = self.offer.digest()
        self.state = SessionState.OFFERED

    def check(self, ch: ComparisonChallenge) -> list[tuple[int, int]]:
        """Public checks only (no secret involved): raises, or returns the pairs."""
        METER_SESSION.next(self.state, SessionEvent.CHALLENGE)
        if not isinstance(ch, ComparisonChallenge):
            raise MalformedMessage(f"expected ComparisonChallenge, got {type(ch).__name__}")
        if ch.offer_digest != self.digest:
            raise UnexpectedMessage("challenge answers another offer")
        if len(ch.values) != 2 * self.ndig:
            raise MalformedMessage(f"expected {self.ndig} pairs, got {len(ch.values) // 2}")
        grp = self._key.group
        for v in ch.values:
            grp.check_element(v)
        return [(ch.values[k], ch.values[k + 1]) for k in range(0, len(ch.values), 2)]

    def answer(self, ch: ComparisonChallenge) -> bool:
        """The one bit: whether any value of the challenge encrypts zero (then the key is erased)."""
        pairs = self.check(ch)
        self.state = METER_SESSION.next(self.state, SessionEvent.CHALLENGE)
        return any(self._key.zero_tests(pairs))


# -- utility side ----------------------------------------------------------------------


def check_offer(
    offer: ComparisonOffer,
    *,
    bits: int,
    radix: int,
    min_group_bits: int = MIN_GROUP_BITS,
    allow_insecure: bool = False,
) -> Group:
    """Validate a meter's offer (group, shape, every element); returns its group."""
    if not isinstance(offer, ComparisonOffer):
        raise MalformedMessage(f"expected ComparisonOffer, got {type(offer).__name__}")
    grp = get_group(offer.group, allow_insecure=allow_insecure)
    if grp.bits < min_group_bits and not allow_insecure:
        raise InvalidKey(f"comparison group of {grp.bits} bits; at least {min_group_bits} required")
    if (offer.bits, offer.radix) != (bits, radix):
        raise MalformedMessage(
            f"offer for {offer.bits} bits radix {offer.radix}, event asks {bits}/{radix}"
        )
    grp.check_element(offer.public)
    if offer.public == 1:
        raise InvalidCiphertext("trivial public key")
    for v in offer.values:
        grp.check_element(v)
    return grp


class UtilityComparison:
    """One comparison with one meter, utility side: builds the challenge, reads the bit."""

    __slots__ = ("challenge", "result", "sign", "state")

    def __init__(
        self,
        offer: ComparisonOffer,
        threshold: int,
        *,
        bits: int = DEFAULT_BITS,
        radix: int = DEFAULT_RADIX,
        min_group_bits: int = MIN_GROUP_BITS,
        allow_insecure: bool = False,
        rng: nt.RandomSource = nt.SYSTEM_RNG,
    ) -> None:
        half = 1 << (bits - 1)
        if not -half < threshold < half:
            raise PlaintextOverflow(
                f"threshold {threshold!r} outside (-2**{bits - 1}, 2**{bits - 1})"
            )
        grp = check_offer(
            offer,
            bits=bits,
            radix=radix,
            min_group_bits=min_group_bits,
            allow_insecure=allow_insecure,
        )
        self.sign = rng.getrandbits(1)
        ndig = num_digits(bits, radix)
        t = digits_of(offset_value(threshold, bits) - self.sign, radix, ndig)
        self.challenge = ComparisonChallenge(
            offer_digest=offer.digest(), values=_blinded_values(grp, offer, t, self.sign, rng)
        )
        self.state = SessionState.OFFERED
        self.result: bool | None = None

    def receive(self, zero_found: bool) -> bool:
        """The meter's bit -> ``[x >= T]``."""
        nxt = UTILITY_SESSION.next(self.state, SessionEvent.ANSWER)
        if not isinstance(zero_found, bool):
            raise MalformedMessage("the meter's answer must be a bool")
        self.result = zero_found if self.sign else not zero_found
        self.state = nxt
        return self.result


def _blinded_values(
    grp: Group, offer: ComparisonOffer, t: list[int], sign: int, rng: nt.RandomSource
) -> tuple[int, ...]:
    p = nt.mpz(grp.p)
    radix, vals = offer.radix, offer.values
    ndig = len(t)

    def enc(i: int, d: int) -> tuple[nt.mpz, nt.mpz]:
        k = 2 * (i * radix + d)
        return nt.mpz(vals[k]), nt.mpz(vals[k + 1])

    def total(pairs: list[tuple[nt.mpz, nt.mpz]]) -> tuple[nt.mpz, nt.mpz]:
        a, b = nt.mpz(1), nt.mpz(1)
        for x, y in pairs:
            a, b = a * x % p, b * y % p
        return a, b

    out: list[tuple[int, int]] = []
    sa, sb = nt.mpz(1), nt.mpz(1)  # sum_{j > i} [a_j != t_j]
    y_table = nt.FixedBaseTable(grp.check_element(offer.public), grp.p, grp.exp_bits, Y_WINDOW)
    blind_bits = max(BLIND_MIN_BITS, grp.exp_bits // 2)
    for i in range(ndig - 1, -1, -1):
        ds = range(t[i], radix) if sign == 0 else range(t[i] + 1)
        la, lb = total([enc(i, d) for d in ds])
        ca, cb = la * sa % p, lb * sb % p
        na, nb = total([enc(i, d) for d in range(radix) if d != t[i]])
        sa, sb = sa * na % p, sb * nb % p
        r = 1 + rng.getrandbits(blind_bits)
        rho = grp.random_exponent(rng)
        a = nt.powmod_mpz(ca, r, grp.p) * grp.g_pow(rho) % p
        b = nt.powmod_mpz(cb, r, grp.p) * y_table.pow(rho) % p
        out.append((int(a), int(b)))
    for i in range(len(out) - 1, 0, -1):  # Fisher-Yates with the caller's rng
        j = nt.random_below(i + 1, rng)
        out[i], out[j] = out[j], out[i]
    return tuple(v for pair in out for v in pair)
