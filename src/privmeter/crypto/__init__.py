"""privmeter.crypto: pure math, no I/O.

Modules: ``paillier`` (billing), ``elgamal`` (the meters' one-use comparison keys), ``shamir``,
``masks``, ``keyagreement`` (X25519 + HKDF), ``signing`` (Ed25519),
``multiexp``; only ``_numtheory`` imports gmpy2.  Raw operations sit under a
small safe API in each module.
"""

__all__: list[str] = []
