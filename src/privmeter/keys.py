"""privmeter.keys: every key a party owns, and the checks others run on them.

The stable entry points for a library user (``docs/api.md``):

* household billing keys: :func:`generate_keypair` (Paillier; 3072 bits by
  default, :data:`MIN_KEY_BITS` = 2048 the smallest accepted outside tests),
  :class:`PaillierPublicKey`, :class:`PaillierPrivateKey`,
  :class:`EncryptedNumber`, and :class:`HouseholdKeys` (a key pair with its
  well-formedness proof);
* the registration check every party runs on a household key before relying
  on it: :func:`check_household_key` (h_s derived from n, the proof, and that
  the plan's largest bill fits), :func:`verify_decryption`;
* identity keys: :class:`SigningKey` / :class:`VerifyKey` (Ed25519, domain
  separated by a context);
* key files (versioned JSON, never pickle): :func:`load_keyfile`,
  :func:`public_household_key`, :func:`household_key_and_proof`.

Everything else in ``privmeter.crypto`` and ``privmeter.parties.keys`` is
internal and may change.
"""

from __future__ import annotations

from privmeter.crypto.paillier import (
    DEFAULT_KEY_BITS,
    MIN_KEY_BITS,
    EncryptedNumber,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
)
from privmeter.crypto.paillier_proofs import verify_decryption
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.parties.keys import (
    HouseholdKeys,
    household_key_and_proof,
    load_keyfile,
    public_household_key,
)
from privmeter.protocol.records import check_household_key

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_KEY_BITS",
    "EncryptedNumber",
    "HouseholdKeys",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "SigningKey",
    "VerifyKey",
    "check_household_key",
    "generate_keypair",
    "household_key_and_proof",
    "load_keyfile",
    "public_household_key",
    "verify_decryption",
]
