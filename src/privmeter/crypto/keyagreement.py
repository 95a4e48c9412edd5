"""X25519 key agreement with signed public keys, and HKDF key derivation.

What it is for: the meters of an aggregation group agree pairwise secrets
(mask seeds and share-encryption keys) while every message travels through
the head-end.  Each meter's X25519 public key is signed with its Ed25519
meter key (:mod:`privmeter.crypto.signing`) over (group, epoch, meter id,
public key, nonce), and peers check that signature against the registered
meter keys, so the relaying head-end cannot substitute its own keys (no
man-in-the-middle).  A meter also agrees a MAC key with the head-end's
X25519 key (signed with the head-end's Ed25519 key) to authenticate its
per-interval messages cheaply.

Security assumptions: CDH in Curve25519 (X25519, RFC 7748), HKDF-SHA256 as
a KDF (RFC 5869), Ed25519 unforgeability.  Guarantee: two honest meters
derive the same :class:`PairSecrets` and nobody else can compute them; the
derivation binds group, epoch and both ids, so secrets never repeat across
groups, epochs or pairs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privmeter.crypto._numtheory import SYSTEM_RNG, RandomSource
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import InvalidKey

__all__ = [
    "ADVERT_CONTEXT",
    "PUBLIC_BYTES",
    "AgreementKey",
    "PairSecrets",
    "advert_payload",
    "sign_advert",
    "verify_advert",
]

PUBLIC_BYTES = 32
ADVERT_CONTEXT = b"privmeter/agg/advert/v1"
_KDF_INFO = b"privmeter/agg/kdf/v1"


def _lp(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: an unambiguous encoding of a tuple."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def advert_payload(group: str, epoch: int, party_id: str, public: bytes, nonce: bytes) -> bytes:
    """The exact bytes an X25519 public key advertisement is signed over."""
    return _lp(group.encode(), struct.pack(">Q", epoch), party_id.encode(), public, nonce)


def sign_advert(
    key: SigningKey, group: str, epoch: int, party_id: str, public: bytes, nonce: bytes
) -> bytes:
    return key.sign(ADVERT_CONTEXT, advert_payload(group, epoch, party_id, public, nonce))


def verify_advert(
    key: VerifyKey,
    group: str,
    epoch: int,
    party_id: str,
    public: bytes,
    nonce: bytes,
    signature: bytes,
) -> None:
    """Raise :class:`~privmeter.errors.InvalidSignature` unless ``party_id`` signed it."""
    key.verify(ADVERT_CONTEXT, advert_payload(group, epoch, party_id, public, nonce), signature)


@dataclass(frozen=True, slots=True)
class PairSecrets:
    """What two parties share after agreement.

    ``mask_seed`` keys the pairwise mask PRG; ``aead_key`` encrypts the
    Shamir shares they relay to each other; ``mac_key`` authenticates
    meter -> head-end messages (only for a meter/head-end pair).
    """

    mask_seed: bytes  # 16 bytes
    aead_key: bytes  # 32 bytes (ChaCha20-Poly1305)
    mac_key: bytes  # 32 bytes (HMAC-SHA256)


class AgreementKey:
    """An X25519 private key for one membership epoch."""

    __slots__ = ("_key", "public")

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.public: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls, rng: RandomSource = SYSTEM_RNG) -> AgreementKey:
        """A fresh key (``rng`` makes tests and simulations reproducible)."""
        raw = rng.getrandbits(256).to_bytes(32, "little")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def agree(
        self, peer_public: bytes, *, group: str, epoch: int, id_a: str, id_b: str
    ) -> PairSecrets:
        """Derive the secrets shared with ``peer_public`` (ids in any order)."""
        if not isinstance(peer_public, bytes) or len(peer_public) != PUBLIC_BYTES:
            raise InvalidKey("X25519 public key must be 32 bytes")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # low-order point: all-zero shared secret
            raise InvalidKey("X25519 public key is a low-order point") from None
        lo, hi = sorted((id_a, id_b))
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=80,
            salt=None,
            info=_KDF_INFO
            + _lp(group.encode(), struct.pack(">Q", epoch), lo.encode(), hi.encode()),
        ).derive(shared)
        return PairSecrets(mask_seed=okm[:16], aead_key=okm[16:48], mac_key=okm[48:80])

    def __repr__(self) -> str:
        return f"AgreementKey(public={self.public.hex()[:16]}...)"
