"""privmeter.crypto.hazmat: the raw ("hazardous materials") layer under the safe crypto API.

The rule, after pyca/cryptography's ``hazmat`` package: a function here is
**correct only when used exactly as documented**.  It takes and returns
plain integers (residues, exponents, moduli) and objects holding integer
precomputations; it does **no validation** -- no range, unit, key-id or
plaintext-overflow check, no encoding of signed plaintexts -- and raises
nothing of :mod:`privmeter.errors` (a bad input gives a wrong answer or a
bare ``ZeroDivisionError``).  Use the safe modules instead
(:mod:`privmeter.crypto.paillier`, :mod:`privmeter.crypto.paillier_proofs`),
which validate everything from outside and are built on this layer.

Who may import it (an import-linter contract in ``pyproject.toml``):
``privmeter.crypto`` itself and ``privmeter.bench`` (which builds thousands
of ciphertexts from explicit randomisers, untimed, to set up a measurement).
Tests may, to check the raw layer and known-answer vectors.

Modules: :mod:`~privmeter.crypto.hazmat.paillier` (raw Paillier on ints).
"""

__all__: list[str] = []
