"""A party's state directory: its own keys, generated on its own machine, and its databases.

What it is for: ``privmeter init ROLE --dir DIR`` creates the directory
(mode 0700) and the party's fresh keys, every secret file written atomically
(temp file, fsync, rename) with mode 0600; the services load them from here.

=============  ====================================================================
role           files (``*.pub.json``: public halves, safe to hand out)
=============  ====================================================================
headend        ``headend.key.json`` (Ed25519 signing seed, price-feed seed),
               ``headend.db`` (no comparison key: meters draw one-use keys),
               ``registry.db``, ``headend.log``
household      ``meter.key.json`` (the meter's Ed25519 signing seed),
               ``household.key.json`` (Paillier secret key + well-formedness
               proof), ``enrolment.json`` (pinned head-end key, group, plan),
               ``state.db`` (readings, unacknowledged records, privacy ledgers,
               the bill proofs paid: one per billing period)
concentrator   ``concentrator.key.json`` (Ed25519 identity), ``roster.json`` (the
               last roster of its feeder the head-end signed: who may connect)
=============  ====================================================================

Randomness: every key comes from the OS CSPRNG (``secrets`` /
``os.urandom``); nothing here takes a seed, so no option of a production
command can select a seeded generator.

Security assumption: the directory is on the party's own machine and
readable only by the service's user.  Guarantee: an existing secret key is
never overwritten unless ``force`` is given (:class:`~privmeter.errors.ConfigError`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from privmeter.crypto.paillier import DEFAULT_KEY_BITS, MIN_KEY_BITS, PaillierPrivateKey
from privmeter.crypto.signing import SigningKey
from privmeter.errors import ConfigError
from privmeter.parties.keys import (
    KEYFILE_FORMAT,
    HouseholdKeys,
    load_keyfile,
    signing_key_from,
    write_json_atomic,
)

__all__ = [
    "SECRET_FILES",
    "HeadendKeys",
    "HouseholdState",
    "ensure_dir",
    "generate",
    "load_concentrator",
    "load_headend",
    "load_household",
    "write_secret",
]

SECRET_FILES: dict[str, tuple[str, ...]] = {
    "headend": ("headend.key.json",),
    "household": ("meter.key.json", "household.key.json"),
    "concentrator": ("concentrator.key.json",),
}


def ensure_dir(d: Path) -> None:
    """Create ``d`` (mode 0700) or tighten an existing one to 0700."""
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)


def write_secret(path: Path, obj: Any, *, force: bool = False) -> None:
    """Write a secret JSON file atomically with mode 0600; refuse to overwrite without ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: refusing to overwrite a secret key (use --force)")
    write_json_atomic(path, obj, private=True)


def _signing_files(d: Path, stem: str, role: str, force: bool, **extra: str) -> SigningKey:
    sk = SigningKey.generate()  # os.urandom
    pub = {"format": KEYFILE_FORMAT, "role": role, "verify_key": sk.verify_key.hex(), **extra}
    write_secret(d / f"{stem}.key.json", dict(pub, signing_seed=sk.seed().hex()), force=force)
    write_json_atomic(d / f"{stem}.pub.json", pub)
    return sk


def generate(
    role: str, d: Path, *, force: bool = False, key_bits: int = DEFAULT_KEY_BITS
) -> list[Path]:
    """Fresh keys for ``role`` in ``d`` (see the module docstring); returns the files written."""
    ensure_dir(d)
    if not force:
        for name in SECRET_FILES[role]:
            if (d / name).exists():
                raise ConfigError(
                    f"{d / name} exists: refusing to overwrite a secret key (use --force)"
                )
    if role == "headend":
        feed = SigningKey.generate()
        _signing_files(d, "headend", "utility", force, feed_verify_key=feed.verify_key.hex())
        doc = json.loads((d / "headend.key.json").read_text())
        doc["feed_signing_seed"] = feed.seed().hex()
        write_secret(d / "headend.key.json", doc, force=True)
    elif role == "household":
        if key_bits < MIN_KEY_BITS:
            raise ConfigError(
                f"household keys below {MIN_KEY_BITS} bits are refused, got {key_bits}"
            )
        _signing_files(d, "meter", "meter", force)
        hk = HouseholdKeys.generate(key_bits)
        write_secret(d / "household.key.json", hk.private_dict(), force=force)
        write_json_atomic(d / "household.pub.json", hk.public_dict())
    elif role == "concentrator":
        _signing_files(d, "concentrator", "meter", force)
    else:
        raise ConfigError(f"unknown role {role!r}")
    return sorted(p for p in d.iterdir() if p.name.endswith(".json"))


class HeadendKeys:
    """The utility's keys as loaded from its state directory."""

    def __init__(self, d: Path) -> None:
        doc = load_keyfile(d / "headend.key.json")
        self.signing_key = signing_key_from(doc)
        self.feed_key = signing_key_from(doc, "feed_signing_seed")


def load_headend(d: Path) -> HeadendKeys:
    if not (d / "headend.key.json").exists():
        raise ConfigError(f"no head-end keys in {d}: run `privmeter init headend --dir {d}` first")
    return HeadendKeys(d)


def load_concentrator(d: Path) -> SigningKey:
    """The concentrator's identity key from its state directory."""
    if not (d / "concentrator.key.json").exists():
        raise ConfigError(
            f"no concentrator key in {d}: run `privmeter init concentrator --dir {d}` first"
        )
    return signing_key_from(load_keyfile(d / "concentrator.key.json"))


class HouseholdState:
    """The household's keys and (after enrolment) what the utility told it, from its state dir."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.meter_key = signing_key_from(load_keyfile(d / "meter.key.json"))
        hh = load_keyfile(d / "household.key.json")
        self.secret_key = PaillierPrivateKey.from_dict(hh["paillier_private_key"])
        self.public_json = json.dumps(
            HouseholdKeys(
                self.secret_key, [int(x, 16) for x in hh["wellformed_proof"]]
            ).public_dict(),
            sort_keys=True,
        )
        self.enrolment_path = d / "enrolment.json"

    def enrolment(self) -> dict[str, Any] | None:
        if not self.enrolment_path.exists():
            return None
        doc = json.loads(self.enrolment_path.read_text())
        if not isinstance(doc, dict):
            raise ConfigError(f"{self.enrolment_path} is damaged")
        return doc


def load_household(d: Path) -> HouseholdState:
    if not (d / "meter.key.json").exists() or not (d / "household.key.json").exists():
        raise ConfigError(
            f"no household keys in {d}: run `privmeter init household --dir {d}` first"
        )
    return HouseholdState(d)
