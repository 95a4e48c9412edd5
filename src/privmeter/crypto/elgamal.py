"""Exponential ElGamal with one-use keys: the meter's comparison keys.

What it is for: in a demand-management comparison the *meter* holds the
key (:mod:`privmeter.protocol.comparison`).  For each comparison it draws a
fresh key pair from its own randomness, encrypts the digits of its reading,
lets the utility compute on the ciphertexts, zero-tests the values the
utility returns, releases one bit, and erases the key.  Because the key is
the meter's and is used for exactly one zero-test batch, nothing the utility
sends (keys, broadcasts, crafted ciphertexts) can make the meter reveal more
than that one bit, and ciphertexts from earlier comparisons are useless
(their key is gone).

The scheme
----------
* A named safe-prime group: ``p = 2q + 1`` with ``q`` prime, ``g = 2``
  generating the subgroup of quadratic residues (order ``q``).  The product
  groups are RFC 7919's ``ffdhe3072`` (default, ~128-bit security) and
  ``ffdhe2048`` (~112-bit); ``test512`` is a 512-bit safe prime for fast
  tests only (refused unless explicitly allowed).
* Key: ``x`` uniform on :attr:`Group.exp_bits` bits, ``y = g**x``.
* ``E(m) = (g**r, g**m * y**r)``; additively homomorphic in ``m`` (pairs
  multiply componentwise); ``E(m)**k = E(k m)``.
* Zero test (key holder): ``b == a**x``, i.e. ``m = 0 mod q``.  No full
  decryption is ever needed (the discrete log of ``g**m`` is not computed).

Security assumptions
--------------------
* DDH in the order-``q`` subgroup, with short exponents (``x`` and ``r`` of
  ``exp_bits``: 225 bits for ffdhe2048, 275 for ffdhe3072, the minimum
  exponent sizes RFC 7919 section 5.2 gives for each group's strength).
* Elements from a peer are checked to be quadratic residues in ``[1, p)``
  (Legendre symbol: cheap), so every value the key holder exponentiates
  lies in the prime-order subgroup.

Guarantees
----------
* :meth:`OneUseKey.zero_tests` can be called once; the secret exponent is
  erased afterwards (:class:`~privmeter.errors.LocalProtocolError` on reuse).
* :meth:`Group.check_element` raises
  :class:`~privmeter.errors.InvalidCiphertext` for anything outside the
  subgroup.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from privmeter.crypto import _numtheory as nt
from privmeter.errors import InvalidCiphertext, InvalidKey, LocalProtocolError

__all__ = [
    "DEFAULT_GROUP",
    "GROUPS",
    "Group",
    "OneUseKey",
    "get_group",
    "group_for_bits",
]

# RFC 7919 appendix A: p = 2**b - 2**(b-64) + (floor(2**(b-130) * e) + X) * 2**64 - 1
# (tests/crypto/test_elgamal.py recomputes both from that formula and checks p and q are prime)
_FFDHE2048 = int(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695"
    "a9e13641146433fbcc939dce249b3ef97d2fe363630c75d8f681b202aec4617a"
    "d3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935"
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797a"
    "bc0ab182b324fb61d108a94bb2c8e3fbb96adab760d7f4681d4f42a3de394df4"
    "ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61"
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005"
    "c58ef1837d1683b2c6f34a26c1b2effa886b423861285c97ffffffffffffffff",
    16,
)
_FFDHE3072 = int(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695"
    "a9e13641146433fbcc939dce249b3ef97d2fe363630c75d8f681b202aec4617a"
    "d3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935"
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797a"
    "bc0ab182b324fb61d108a94bb2c8e3fbb96adab760d7f4681d4f42a3de394df4"
    "ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61"
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005"
    "c58ef1837d1683b2c6f34a26c1b2effa886b4238611fcfdcde355b3b6519035b"
    "bc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91c"
    "aefe130985139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff"
    "5cae82ab9c9df69ee86d2bc522363a0dabc521979b0deada1dbf9a42d5c4484e"
    "0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b66c62e37ffffffffffffffff",
    16,
)
# a 512-bit safe prime with p = 7 mod 8 (so 2 is a residue): fast tests only, INSECURE
_TEST512 = int(
    "83142633533b9efe2e95a04da2cb3e1e145f0dbedd7a675b3cbec3ff5b9fcfc9"
    "27fa4a62a6762fa46a8c051e09ae1831c7c74507ad073d5113195441336811f7",
    16,
)

G_WINDOW = 6  # fixed-base window for g: ~(2 exp_bits)/6 multiplications per power


@dataclass(frozen=True, slots=True)
class Group:
    """A safe-prime group ``p = 2q + 1`` with ``g = 2`` of order ``q``."""

    name: str
    p: int
    exp_bits: int
    insecure: bool = False

    @property
    def q(self) -> int:
        return (self.p - 1) // 2

    @property
    def g(self) -> int:
        return 2

    @property
    def bits(self) -> int:
        return self.p.bit_length()

    @property
    def nbytes(self) -> int:
        return (self.bits + 7) // 8

    def check_element(self, v: object) -> int:
        """``v`` as an element of the order-``q`` subgroup, or InvalidCiphertext."""
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < self.p:
            raise InvalidCiphertext(f"group element must be an int in (0, p) of {self.name}")
        if nt.legendre(v, self.p) != 1:
            raise InvalidCiphertext(f"value is not in the prime-order subgroup of {self.name}")
        return v

    def g_pow(self, e: int) -> nt.mpz:
        """``g**e mod p`` for ``0 <= e < 2**(2 exp_bits + 2)`` (fixed-base table, built once)."""
        return _g_table(self).pow(e)

    def random_exponent(self, rng: nt.RandomSource) -> int:
        """Uniform on ``[1, 2**exp_bits)``."""
        while True:
            e = rng.getrandbits(self.exp_bits)
            if e:
                return e


@cache
def _g_table(group: Group) -> nt.FixedBaseTable:
    return nt.FixedBaseTable(group.g, group.p, 2 * group.exp_bits + 2, G_WINDOW)


GROUPS: dict[str, Group] = {
    "ffdhe3072": Group("ffdhe3072", _FFDHE3072, 275),
    "ffdhe2048": Group("ffdhe2048", _FFDHE2048, 225),
    "test512": Group("test512", _TEST512, 128, insecure=True),
}
DEFAULT_GROUP = (
    "ffdhe3072"  # ~128-bit security, like the Paillier default: readings are kept for years
)


def get_group(name: str, *, allow_insecure: bool = False) -> Group:
    """The named group; InvalidKey for an unknown one or an insecure one not allowed."""
    grp = GROUPS.get(name) if isinstance(name, str) else None
    if grp is None:
        raise InvalidKey(f"unknown comparison group {name!r:.40}; expected one of {sorted(GROUPS)}")
    if grp.insecure and not allow_insecure:
        raise InvalidKey(f"comparison group {name!r} is for tests only")
    return grp


def group_for_bits(bits: int, *, insecure_for_tests: bool = False) -> Group:
    """ffdhe3072 for >= 3072, ffdhe2048 for >= 2048, the test group below (tests only)."""
    if bits >= 3072:
        return GROUPS["ffdhe3072"]
    if bits >= 2048:
        return GROUPS["ffdhe2048"]
    return get_group("test512", allow_insecure=insecure_for_tests)


class OneUseKey:
    """A meter's comparison key pair: encrypt, then one batch of zero tests, then erased."""

    __slots__ = ("_x", "group", "y")

    def __init__(self, group: Group, *, rng: nt.RandomSource = nt.SYSTEM_RNG) -> None:
        self.group = group
        self._x: int | None = group.random_exponent(rng)
        self.y = int(group.g_pow(self._x))

    @property
    def used(self) -> bool:
        return self._x is None

    def encrypt(self, m: int, *, rng: nt.RandomSource = nt.SYSTEM_RNG) -> tuple[int, int]:
        """``(g**r, g**(m + x r))`` for a small ``m >= 0``: two fixed-base powers, no per-key table."""
        if self._x is None:
            raise LocalProtocolError("comparison key already used and erased")
        r = self.group.random_exponent(rng)
        return int(self.group.g_pow(r)), int(self.group.g_pow(m + self._x * r))

    def zero_tests(self, pairs: list[tuple[int, int]]) -> list[bool]:
        """Test every pair (no early exit: the work does not depend on which is zero), then erase ``x``.

        The pairs must have been checked with :meth:`Group.check_element`.
        """
        x = self._x
        if x is None:
            raise LocalProtocolError("comparison key already used and erased")
        self._x = None
        p = self.group.p
        return [nt.powmod(a, x, p) == b for a, b in pairs]
