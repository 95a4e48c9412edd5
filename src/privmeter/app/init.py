"""``privmeter init ROLE --dir DIR``: a party's starter config and its fresh keys.

What it is for: the first command on each machine of a deployment.  It
writes ``DIR/ROLE.toml`` (commented, see :func:`privmeter.app.config.starter`
and docs/deploy.md) and the party's keys (:func:`privmeter.app.state.generate`,
OS randomness, secrets 0600 in a 0700 directory), then prints what to hand
to the other side: the head-end's public key (it goes into no file of the
households: they pin it from their enrolment ticket; a concentrator's config
pins it), a concentrator's public key (the head-end's config lists it under
its feeder), or the household's key fingerprints (for the utility's records).

Guarantee: an existing config or secret key is never overwritten without
``--force``; errors propagate to :func:`privmeter.cli.main` (one line on stderr, status 2).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from privmeter.app.config import ROLES, starter
from privmeter.app.state import ensure_dir, generate
from privmeter.crypto.paillier import DEFAULT_KEY_BITS
from privmeter.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("role", choices=ROLES, help="which party this machine runs")
    p.add_argument(
        "--dir", type=Path, required=True, help="the party's state directory (created 0700)"
    )
    p.add_argument(
        "--meter-id", default="m-0001", help="household: the meter id on your enrolment ticket"
    )
    p.add_argument(
        "--key-bits",
        type=int,
        default=DEFAULT_KEY_BITS,
        choices=(2048, 3072, 4096),
        help="household: Paillier modulus size (default 3072)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing keys and config")


def run(args: argparse.Namespace) -> int:
    d: Path = args.dir
    cfg = d / f"{args.role}.toml"
    if cfg.exists() and not args.force:
        raise ConfigError(f"{cfg} exists: refusing to overwrite it (use --force)")
    ensure_dir(d)
    files = generate(args.role, d, force=args.force, key_bits=args.key_bits)
    cfg.write_text(starter(args.role, meter_id=args.meter_id))
    print(f"wrote {cfg}")
    for f in files:
        print(f"wrote {f}{' (secret, 0600)' if '.key.' in f.name else ''}")
    for f in files:
        if f.name.endswith(".pub.json"):
            fp = hashlib.sha256(f.read_bytes()).hexdigest()[:32]
            print(f"fingerprint {f.name}: {fp}")
    if args.role in ("headend", "concentrator"):
        key = json.loads((d / f"{args.role}.pub.json").read_text())["verify_key"]
        print(f"public key: {key}")
        if args.role == "concentrator":
            print(f'for the head-end\'s headend.toml, [concentrators]: <group> = "{key}"')
    return 0
