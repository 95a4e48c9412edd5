"""Ed25519 signatures for meters, the head-end and price feeds.

What it is for: every record a meter sends (and every price a feed
publishes, every statement the head-end issues) is signed so the receiver can
reject forgeries, and so an auditor can later check the log with public keys
only.

Security: Ed25519 (RFC 8032) from pyca/cryptography; ~128-bit security.
Signatures are over a domain-separated byte string (``context`` + payload)
so a signature made for one purpose can never be replayed as another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from privmeter.errors import InvalidArgument, InvalidKey, InvalidSignature

__all__ = ["SIGNATURE_BYTES", "SigningKey", "VerifyKey", "domain_message"]

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


def domain_message(context: bytes, payload: bytes) -> bytes:
    """Domain-separated message: ``len(context) || context || payload``."""
    if len(context) > 255:
        raise InvalidArgument("signature context longer than 255 bytes")
    return bytes([len(context)]) + context + payload


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_BYTES:
            raise InvalidKey(f"Ed25519 public key must be {PUBLIC_KEY_BYTES} bytes")
        try:
            key = Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError as exc:
            raise InvalidKey(f"not an Ed25519 public key: {exc}") from None
        object.__setattr__(self, "_key", key)  # parsed once; verify() is hot

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(b"privmeter-ed25519-v1" + self.raw).digest()[:16]

    def verify(self, context: bytes, payload: bytes, signature: bytes) -> None:
        """Raise :class:`~privmeter.errors.InvalidSignature` unless the signature is valid."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise InvalidSignature("signature must be 64 bytes")
        try:
            self._key.verify(signature, domain_message(context, payload))
        except _CryptoInvalidSignature:
            raise InvalidSignature(f"bad {context.decode(errors='replace')} signature") from None

    def hex(self) -> str:
        return self.raw.hex()

    @classmethod
    def from_hex(cls, s: str) -> VerifyKey:
        try:
            return cls(bytes.fromhex(s))
        except (ValueError, TypeError):
            raise InvalidKey("Ed25519 public key is not hex") from None


class SigningKey:
    """An Ed25519 private key."""

    __slots__ = ("_key", "verify_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.verify_key = VerifyKey(
            key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Deterministic key from 32 seed bytes (tests and simulations)."""
        if len(seed) != 32:
            raise InvalidKey("Ed25519 seed must be 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, context: bytes, payload: bytes) -> bytes:
        return self._key.sign(domain_message(context, payload))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.verify_key.raw.hex()[:16]}...)"
