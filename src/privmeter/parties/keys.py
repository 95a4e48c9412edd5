"""Key files for every party, and the ``privmeter keygen`` command.

A key file is versioned JSON (``privmeter.keys/1``), never pickle:

* ``household``: the Paillier private key (its public half inside) and the
  key's well-formedness proof (so meters, the utility and auditors can trust
  that decryptions are unique).  Loading the public half runs the registration
  check (:func:`household_key_and_proof`): a key whose h_s is not the base
  derived from n (made before privmeter derived it) is refused with
  :class:`~privmeter.errors.BaseNotDerived` -- regenerate it with
  ``privmeter keygen household``;
* ``meter``: the meter's Ed25519 signing seed;
* ``utility``: the head-end's Ed25519 signing seed (statements, survivor
  lists, directives) and the price feed's signing seed.

Each private file has a public counterpart (``*.pub.json``) holding only
what others may see.  Private files are written atomically with mode 0600.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from privmeter.argtypes import at_least, out_dir
from privmeter.crypto.paillier import (
    DEFAULT_KEY_BITS,
    MIN_KEY_BITS,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
)
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import ConfigError, MalformedMessage, UnprovenKey, UnsupportedVersion
from privmeter.protocol.records import check_household_key

__all__ = [
    "KEYFILE_FORMAT",
    "HouseholdKeys",
    "add_arguments",
    "household_key_and_proof",
    "load_keyfile",
    "public_household_key",
    "run",
    "write_json_atomic",
]

KEYFILE_FORMAT = "privmeter.keys/1"
ROLES = ("household", "meter", "utility")


def write_json_atomic(path: Path, obj: Any, *, private: bool = False) -> None:
    """Write JSON to ``path`` atomically (temp file + fsync + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            if private:
                os.fchmod(f.fileno(), 0o600)
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class HouseholdKeys:
    """A household's Paillier key pair plus its well-formedness proof."""

    __slots__ = ("proof", "public_key", "secret_key")

    def __init__(self, secret_key: PaillierPrivateKey, proof: list[int] | None = None) -> None:
        self.secret_key = secret_key
        self.public_key: PaillierPublicKey = secret_key.public_key
        self.proof = proof if proof is not None else prove_wellformed(secret_key)

    @classmethod
    def generate(cls, bits: int = DEFAULT_KEY_BITS) -> HouseholdKeys:
        _, sk = generate_keypair(bits)
        return cls(sk)

    def public_dict(self) -> dict[str, Any]:
        return {
            "format": KEYFILE_FORMAT,
            "role": "household",
            "paillier_public_key": self.public_key.to_dict(),
            "wellformed_proof": [format(x, "x") for x in self.proof],
        }

    def private_dict(self) -> dict[str, Any]:
        d = self.public_dict()
        d["paillier_private_key"] = self.secret_key.to_dict()
        return d


def household_key_and_proof(
    d: dict[str, Any], *, min_bits: int = MIN_KEY_BITS
) -> tuple[PaillierPublicKey, list[int]]:
    """A household key file's public key and well-formedness proof, *verified*
    (:func:`~privmeter.protocol.records.check_household_key`: h_s derived from n,
    the proof; :class:`~privmeter.errors.UnprovenKey` if the proof is missing)."""
    pk = PaillierPublicKey.from_dict(d.get("paillier_public_key"), min_bits=min_bits)
    proof_hex = d.get("wellformed_proof")
    if not isinstance(proof_hex, list) or not all(isinstance(x, str) for x in proof_hex):
        raise UnprovenKey("household key file lacks its well-formedness proof")
    try:
        proof = [int(x, 16) for x in proof_hex]
    except ValueError:
        raise MalformedMessage("well-formedness proof is not hex") from None
    check_household_key(pk, proof, min_bits=min_bits)
    return pk, proof


def public_household_key(d: dict[str, Any], *, min_bits: int = MIN_KEY_BITS) -> PaillierPublicKey:
    """Load a household public key and *verify* it (:func:`household_key_and_proof`)."""
    return household_key_and_proof(d, min_bits=min_bits)[0]


def load_keyfile(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a key file, checking its format tag and role."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read key file {str(path)!r}: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != KEYFILE_FORMAT:
        raise UnsupportedVersion(f"{str(path)!r}: expected format {KEYFILE_FORMAT!r}")
    if d.get("role") not in ROLES:
        raise ConfigError(f"{str(path)!r}: unknown role {d.get('role')!r}")
    return d


def signing_key_from(d: dict[str, Any], field: str = "signing_seed") -> SigningKey:
    try:
        return SigningKey.from_seed(bytes.fromhex(d[field]))
    except (KeyError, ValueError, TypeError):
        raise ConfigError(f"key file lacks a valid {field!r}") from None


def verify_key_from(d: dict[str, Any], field: str = "verify_key") -> VerifyKey:
    try:
        return VerifyKey.from_hex(d[field])
    except (KeyError, TypeError):
        raise ConfigError(f"key file lacks {field!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("role", choices=ROLES, help="whose keys to generate")
    p.add_argument(
        "--out", type=out_dir, required=True, help="directory for NAME.json and NAME.pub.json"
    )
    p.add_argument("--name", default=None, help="file stem (default: the role)")
    p.add_argument(
        "--bits",
        type=at_least(MIN_KEY_BITS),
        default=DEFAULT_KEY_BITS,
        help=f"Paillier modulus size, household only (default {DEFAULT_KEY_BITS}, "
        f"at least {MIN_KEY_BITS})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite existing key files (the old secret key is lost)",
    )


def run(args: argparse.Namespace) -> int:
    name = args.name or args.role
    if not name or "/" in name or os.sep in name or name in (".", ".."):
        raise ConfigError(f"--name must be a plain file stem, got {name!r}")
    out: Path = args.out
    existing = [str(f) for f in (out / f"{name}.json", out / f"{name}.pub.json") if f.exists()]
    if existing and not args.force:
        raise ConfigError(
            f"{existing[0]} already exists (a secret key would be lost); "
            f"choose another --out or --name, or pass --force to overwrite it"
        )
    out.mkdir(parents=True, exist_ok=True)
    if args.role == "household":
        keys = HouseholdKeys.generate(args.bits)
        write_json_atomic(out / f"{name}.json", keys.private_dict(), private=True)
        write_json_atomic(out / f"{name}.pub.json", keys.public_dict())
    else:
        sk = SigningKey.generate()
        pub: dict[str, Any] = {
            "format": KEYFILE_FORMAT,
            "role": args.role,
            "verify_key": sk.verify_key.hex(),
        }
        priv = dict(pub, signing_seed=sk.seed().hex())
        if args.role == "utility":
            feed = SigningKey.generate()
            pub["feed_verify_key"] = feed.verify_key.hex()
            priv["feed_verify_key"] = feed.verify_key.hex()
            priv["feed_signing_seed"] = feed.seed().hex()
        write_json_atomic(out / f"{name}.json", priv, private=True)
        write_json_atomic(out / f"{name}.pub.json", pub)
    print(f"wrote {out / (name + '.json')} and {out / (name + '.pub.json')}")
    return 0
