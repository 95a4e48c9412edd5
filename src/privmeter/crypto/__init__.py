"""privmeter.crypto: pure math, no I/O.

Modules: ``paillier`` (billing), ``elgamal`` (the meters' one-use comparison keys), ``shamir``,
``masks``, ``keyagreement`` (X25519 + HKDF), ``signing`` (Ed25519),
``multiexp``; only ``_numtheory`` imports gmpy2.  Raw operations sit under a
small safe API in each module.

Paillier is split in three layers: :mod:`~privmeter.crypto.paillier_proofs`
(key and decryption proofs) over :mod:`~privmeter.crypto.paillier` (the safe
API: keys, ciphertexts, validation, formats) over
:mod:`~privmeter.crypto.hazmat.paillier` (raw operations on ints: correct
only when used exactly as documented; no validation, ints in and out).
Only ``privmeter.crypto`` and ``privmeter.bench`` import ``crypto.hazmat``
(an import-linter contract).
"""

__all__: list[str] = []
