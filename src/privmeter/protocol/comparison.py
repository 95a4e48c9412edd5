"""DGK secure comparison (with Veugen's corrections), utility and meter sides, sans-IO.

What it is for: the utility holds a DGK key and a private threshold ``T``;
a meter holds its reading ``x``.  The utility learns the single bit
``[x >= T]``; the meter learns nothing about ``T`` (it sees only DGK
ciphertexts under the utility's key).

Protocol (one broadcast per event, one reply per meter)
-------------------------------------------------------
Values are signed ints of ``bits`` bits, mapped to ``[0, 2**bits)`` by the
offset ``2**(bits-1)`` (so negative readings -- export -- compare
correctly).  They are written in ``D = ceil(bits / log2(radix))`` digits
base ``radix`` (2, 4, 8 or 16), least significant first.

1. Utility -> all meters, once per event (:class:`EncryptedThreshold`):
   for each digit ``i`` of ``T`` and each ``d = 1 .. radix-1``,
   ``E([t_i = d])`` (one-hot; ``[t_i = 0]`` is implied).  With
   ``radix = 2`` this is exactly DGK's ``E(t_i)`` for the bits of ``T``.
2. Meter, knowing its digits ``a_i``, computes homomorphically for every
   digit ``i``::

       c_i = 1 - [t_i > a_i] + sum_{j > i} [t_j != a_j]

   (``[t_i > a_i] = sum_{d > a_i} [t_i = d]`` and ``[t_j != a_j]`` are
   linear in the one-hot encryptions because the meter knows ``a``).  For
   ``radix = 2`` this is DGK's ``c_i = x_i - t_i + 1 + sum_{j>i} x_j XOR
   t_j`` up to a non-zero value at positions where ``x_i = 1``.  It blinds
   each ``c_i`` as ``c_i**r_i * h**rho_i`` with ``r_i`` uniform in
   ``[1, u-1]`` and fresh ``rho_i`` of the key's ``rand_bits``, shuffles
   the ``D`` values and returns them (:class:`ComparisonReply`).
3. Utility zero-tests the values; a zero exists iff ``x < T``.

Correctness: every term is non-negative except ``-[t_i > a_i]``, so
``c_i = 0`` iff all more significant digits are equal and ``t_i > a_i``,
i.e. iff ``i`` is the first digit where ``x`` and ``T`` differ and
``x < T``.  Hence exactly one zero when ``x < T`` and none when ``x >= T``
(including ``x = T``, the case Veugen (2012) showed the original protocol
gets wrong when the output bit is secret-shared with a random sign ``s``;
here the key holder learns the result, ``s = +1`` is fixed and there is no
spurious zero: the largest value is ``D <= bits < u``, so nothing wraps
modulo ``u``).

What the utility learns: the multiset of ``D`` blinded values.  Non-zero
``c_i`` become uniform on ``Z*_u`` (``r_i`` uniform, ``u`` prime) and the
``h**rho`` factor makes each ciphertext a fresh encryption of that value,
so the ciphertexts carry nothing but the plaintext.  The only zero sits at
the first differing digit; shuffling makes its position uniform, so
stopping the zero tests at the first zero (early exit) reveals nothing more
than the bit itself.

What the meter learns: nothing (semantic security of DGK).  It does *not*
learn the result either; it later learns whether it received a directive.

Not defended here (see ``docs/demand-management.md``): a malicious utility
may broadcast encryptions that are not one-hot digits.  Then several
``c_i`` may vanish and the count of zeros can leak up to ``log2(D+1)`` bits
per comparison instead of one; the meter's budget
(:mod:`privmeter.protocol.demand`) still bounds the number of comparisons.

Cost: utility ``<= D`` zero tests (``c mod p`` to the 256-bit ``v_p``);
meter ``D`` short re-randomisations plus one batched inversion.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.dgk import DGKPrivateKey, DGKPublicKey
from privmeter.errors import (
    InvalidCiphertext,
    KeyMismatch,
    LocalProtocolError,
    MalformedMessage,
    PlaintextOverflow,
    UnexpectedMessage,
)
from privmeter.protocol.codec import encode, message

__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_RADIX",
    "RADICES",
    "ComparisonReply",
    "EncryptedThreshold",
    "PreparedThreshold",
    "SessionState",
    "UtilityComparison",
    "clamp_value",
    "digits_of",
    "encrypt_threshold",
    "meter_reply",
    "num_digits",
    "offset_value",
    "prepare_threshold",
]

DEFAULT_BITS = 24  # readings in W up to +-8.3 MW: any household or feeder
DEFAULT_RADIX = 4  # halves the utility's zero tests against radix 2 (see docs)
RADICES = (2, 4, 8, 16)
MIN_BITS, MAX_BITS = 2, 64
_LOG2 = {2: 1, 4: 2, 8: 3, 16: 4}


def num_digits(bits: int, radix: int) -> int:
    """Digits of base ``radix`` needed for ``bits``-bit values."""
    if radix not in _LOG2:
        raise ValueError(f"radix must be one of {RADICES}, got {radix!r}")
    return -(-bits // _LOG2[radix])


def offset_value(x: int, bits: int) -> int:
    """Map a signed ``bits``-bit value to ``[0, 2**bits)``; PlaintextOverflow outside."""
    half = 1 << (bits - 1)
    if not isinstance(x, int) or isinstance(x, bool):
        raise TypeError(f"value must be int, got {type(x).__name__}")
    if not -half <= x < half:
        raise PlaintextOverflow(f"{x!r} outside the signed {bits}-bit range")
    return x + half


def clamp_value(x: int, bits: int) -> int:
    """Clamp a reading into the signed ``bits``-bit range.

    Clamping preserves ``[x >= T]`` for every threshold the utility may use
    (``-2**(bits-1) < T < 2**(bits-1)``, see :func:`encrypt_threshold`), so
    a meter can always answer: a reading beyond the range compares like the
    range's end.
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


# -- messages --------------------------------------------------------------------

@message("cmp.threshold")
@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedThreshold:
    """The utility's encrypted threshold digits, broadcast once per event.

    ``digits[i][d-1] = E([t_i = d])`` for ``d = 1 .. radix-1``, digit ``i``
    least significant first, under the DGK key named by ``key_id``.
    """

    key_id: bytes
    bits: int
    radix: int
    digits: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.key_id) != 16:
            raise ValueError("key_id must be 16 bytes")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {self.bits!r}")
        if self.radix not in RADICES:
            raise ValueError(f"radix must be one of {RADICES}, got {self.radix!r}")
        if len(self.digits) != num_digits(self.bits, self.radix):
            raise ValueError(f"expected {num_digits(self.bits, self.radix)} digits, got {len(self.digits)}")
        for row in self.digits:
            if len(row) != self.radix - 1:
                raise ValueError(f"each digit needs {self.radix - 1} ciphertexts, got {len(row)}")
            for c in row:
                if c <= 0:
                    raise ValueError("ciphertexts must be positive")

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: what meters compare across a group."""
        return hashlib.sha256(b"privmeter.cmp.threshold/1" + encode(self)).digest()


@message("cmp.reply")
@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonReply:
    """The meter's shuffled, blinded ``c_i`` values for one broadcast."""

    key_id: bytes
    threshold_digest: bytes
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.key_id) != 16:
            raise ValueError("key_id must be 16 bytes")
        if len(self.threshold_digest) != 32:
            raise ValueError("threshold_digest must be 32 bytes")
        if not 1 <= len(self.values) <= MAX_BITS:
            raise ValueError(f"1-{MAX_BITS} values expected, got {len(self.values)}")


# -- utility side ------------------------------------------------------------------

def encrypt_threshold(
    pk: DGKPublicKey,
    threshold: int,
    *,
    bits: int = DEFAULT_BITS,
    radix: int = DEFAULT_RADIX,
    rng: nt.RandomSource = nt.SYSTEM_RNG,
) -> EncryptedThreshold:
    """Encrypt the one-hot digits of the signed ``threshold`` (utility, once per event).

    ``threshold`` must satisfy ``-2**(bits-1) < T < 2**(bits-1)`` (the lowest
    value is excluded so that clamped meter readings compare correctly).
    """
    if threshold == -(1 << (bits - 1)):
        raise PlaintextOverflow("the threshold must be above the lowest representable value")
    if bits > pk.max_bits:
        raise LocalProtocolError(f"key supports at most {pk.max_bits}-bit comparisons, asked {bits}")
    d = num_digits(bits, radix)
    tdig = digits_of(offset_value(threshold, bits), radix, d)
    rows = tuple(
        tuple(pk.encrypt(1 if t == dv else 0, rng=rng) for dv in range(1, radix))
        for t in tdig
    )
    return EncryptedThreshold(key_id=pk.key_id, bits=bits, radix=radix, digits=rows)


class SessionState(enum.Enum):
    AWAITING_REPLY = "awaiting-reply"
    DONE = "done"


class UtilityComparison:
    """One comparison with one meter, utility side.

    ``receive(reply)`` validates (key id, broadcast digest, count, every
    ciphertext) before any zero test; a bad reply raises and leaves the
    session waiting.  A second reply after the result is
    :class:`~privmeter.errors.UnexpectedMessage`.
    """

    __slots__ = ("digest", "n_values", "result", "sk", "state")

    def __init__(self, sk: DGKPrivateKey, threshold: EncryptedThreshold) -> None:
        if threshold.key_id != sk.public_key.key_id:
            raise LocalProtocolError("broadcast made under another DGK key")
        self.sk = sk
        self.digest = threshold.digest()
        self.n_values = len(threshold.digits)
        self.state = SessionState.AWAITING_REPLY
        self.result: bool | None = None

    def receive(self, reply: ComparisonReply) -> bool:
        """Return ``[x >= T]`` for this meter."""
        if self.state is not SessionState.AWAITING_REPLY:
            raise UnexpectedMessage("comparison already answered")
        self.result = evaluate_reply(self.sk, reply, self.digest, self.n_values)
        self.state = SessionState.DONE
        return self.result


def evaluate_reply(sk: DGKPrivateKey, reply: ComparisonReply, digest: bytes, n_values: int) -> bool:
    """Validate a reply and return ``[x >= T]`` (no zero among the values)."""
    if not isinstance(reply, ComparisonReply):
        raise MalformedMessage(f"expected ComparisonReply, got {type(reply).__name__}")
    if reply.key_id != sk.public_key.key_id:
        raise KeyMismatch("reply made under another DGK key")
    if reply.threshold_digest != digest:
        raise UnexpectedMessage("reply answers another threshold broadcast")
    if len(reply.values) != n_values:
        raise MalformedMessage(f"expected {n_values} values, got {len(reply.values)}")
    vals = [sk.validate_value(c) for c in reply.values]
    if len(set(vals)) != len(vals):
        raise InvalidCiphertext("repeated ciphertext in a comparison reply")
    for c in vals:  # early exit: the zero's position is uniform (shuffled)
        if sk.raw_is_zero(c):
            return False
    return True


# -- meter side ----------------------------------------------------------------------

class PreparedThreshold:
    """A validated broadcast on the meter: ciphertexts checked once, reused per reply."""

    __slots__ = ("bits", "digest", "ndig", "pk", "radix", "rows")

    def __init__(self, pk: DGKPublicKey, msg: EncryptedThreshold) -> None:
        if msg.key_id != pk.key_id:
            raise KeyMismatch("threshold broadcast under another DGK key")
        if msg.bits > pk.max_bits:
            raise MalformedMessage(f"{msg.bits}-bit comparison exceeds the key's {pk.max_bits}")
        seen: set[int] = set()
        n = nt.mpz(pk.n)
        prod = nt.mpz(1)
        for row in msg.digits:
            for c in row:
                if not isinstance(c, int) or isinstance(c, bool) or not 0 < c < pk.n:
                    raise InvalidCiphertext("DGK ciphertext outside (0, n)")
                if c in seen:
                    raise InvalidCiphertext("repeated ciphertext in a threshold broadcast")
                seen.add(c)
                prod = prod * c % n
        # all are units iff their product is: one gcd instead of one per ciphertext
        if nt.gcd(int(prod), pk.n) != 1:
            raise InvalidCiphertext("a DGK ciphertext in the broadcast is not a unit of Z*_n")
        self.pk = pk
        self.bits = msg.bits
        self.radix = msg.radix
        self.ndig = len(msg.digits)
        self.rows = [[nt.mpz(c) for c in row] for row in msg.digits]
        self.digest = msg.digest()


def prepare_threshold(pk: DGKPublicKey, msg: EncryptedThreshold) -> PreparedThreshold:
    """Validate a broadcast (key id, shape, every ciphertext a unit of Z_n)."""
    return PreparedThreshold(pk, msg)


def _batch_invert(vals: Sequence[nt.mpz], n: int) -> list[nt.mpz]:
    """Montgomery's trick: all inverses for one modular inversion."""
    m = nt.mpz(n)
    prefix = []
    acc = nt.mpz(1)
    for v in vals:
        acc = acc * v % m
        prefix.append(acc)
    inv = nt.mpz(nt.invert(int(acc), n))
    out = [nt.mpz(0)] * len(vals)
    for i in range(len(vals) - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % m
        inv = inv * vals[i] % m
    if vals:
        out[0] = inv
    return out


def meter_reply(
    prepared: PreparedThreshold, x: int, *, rng: nt.RandomSource = nt.SYSTEM_RNG
) -> ComparisonReply:
    """The meter's answer for its reading ``x`` (clamped into the signed range)."""
    pk = prepared.pk
    n = nt.mpz(pk.n)
    radix, ndig, rows = prepared.radix, prepared.ndig, prepared.rows
    a = digits_of(offset_value(clamp_value(x, prepared.bits), prepared.bits), radix, ndig)
    g = pk.g_pows()[1]
    one = nt.mpz(1)
    # gt_i = E([t_i > a_i]); eq_i = E([t_i = a_i]) for a_i >= 1 (for a_i = 0 use the sum)
    gts: list[nt.mpz] = []
    to_invert: list[nt.mpz] = []
    for i in range(ndig):
        row, ai = rows[i], a[i]
        acc = one
        for d in range(ai + 1, radix):
            acc = acc * row[d - 1] % n
        gts.append(acc)
        to_invert.append(acc)
        if ai:
            to_invert.append(row[ai - 1])
    invs = _batch_invert(to_invert, pk.n)
    # neq_i = E([t_i != a_i]) = E(1) / E([t_i = a_i]), or the sum of the row when a_i = 0
    inv_gt: list[nt.mpz] = []
    neq: list[nt.mpz] = []
    k = 0
    for i in range(ndig):
        inv_gt.append(invs[k])
        k += 1
        if a[i]:
            neq.append(g * invs[k] % n)
            k += 1
        else:
            acc = one
            for c in rows[i]:
                acc = acc * c % n
            neq.append(acc)
    # c_i = E(1) * E(-gt_i) * prod_{j > i} neq_j, then blind and re-randomise
    table = pk.h_table()
    u = pk.u
    out: list[int] = []
    suffix = one
    for i in range(ndig - 1, -1, -1):
        ci = g * inv_gt[i] % n * suffix % n
        suffix = suffix * neq[i] % n
        r = 1 + nt.random_below(u - 1, rng)
        blinded = nt.powmod_mpz(ci, r, pk.n) * table.pow(rng.getrandbits(pk.rand_bits)) % n
        out.append(int(blinded))
    for i in range(len(out) - 1, 0, -1):  # Fisher-Yates with the caller's rng
        j = nt.random_below(i + 1, rng)
        out[i], out[j] = out[j], out[i]
    return ComparisonReply(key_id=pk.key_id, threshold_digest=prepared.digest, values=tuple(out))
