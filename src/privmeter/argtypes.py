"""Argument types for the ``privmeter`` commands: nonsense is refused while the
command line is parsed, with the reason in the user's terms.

Each function is an ``argparse`` ``type=``: it takes the string the user
typed and returns the value, or raises :class:`argparse.ArgumentTypeError`,
which the CLI prints as one line (``privmeter CMD: error: argument --port:
expected a TCP port 1..65535, got '99999'``).  Checks that need more than one
argument (households against the feeder minimum) live with the scenario and
configuration they describe.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "at_least",
    "fraction",
    "iso_date",
    "listen_port",
    "non_negative",
    "out_dir",
    "port",
    "positive",
    "verify_key_hex",
]


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def at_least(low: int) -> Callable[[str], int]:
    """A whole number >= ``low``."""

    def check(text: str) -> int:
        v = int(_number(text, int))
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text!r}")
        return v

    check.__name__ = f"whole number >= {low}"  # argparse names the type in its messages
    return check


def positive(text: str) -> float:
    """A number > 0 (a speed, a timeout, a bandwidth)."""
    v = float(_number(text, float))
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return v


def non_negative(text: str) -> float:
    """A number >= 0 (a latency, a jitter, a speed where 0 means 'as fast as possible')."""
    v = float(_number(text, float))
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return v


def fraction(text: str) -> float:
    """A share or probability in [0, 1] (``--loss``, ``--dropout``, ``--prosumers``)."""
    v = float(_number(text, float))
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction between 0 and 1 (e.g. 0.05), got {text!r}"
        )
    return v


def port(text: str) -> int:
    """A TCP port to connect to: 1..65535."""
    v = int(_number(text, int))
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1..65535, got {text!r}")
    return v


def listen_port(text: str) -> int:
    """A TCP port to listen on: 1..65535, or 0 for one the system picks."""
    v = int(_number(text, int))
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a TCP port 0..65535 (0: any free port), got {text!r}"
        )
    return v


def iso_date(text: str) -> datetime.date:
    """A calendar date, YYYY-MM-DD."""
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date as YYYY-MM-DD (e.g. 2013-01-07), got {text!r}"
        ) from None


def verify_key_hex(text: str) -> str:
    """An Ed25519 public key as 64 hex digits (what a head-end prints when it starts)."""
    t = text.strip()
    try:
        ok = len(bytes.fromhex(t)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"expected the head-end's public key as 64 hex digits (printed when it starts), got {text!r}"
        )
    return t


def out_dir(text: str) -> Path:
    """A directory to write into: it may exist (as a directory) or be creatable; nothing is created yet."""
    p = Path(text)
    if p.exists():
        if not p.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"cannot write into {text!r} (permission denied)")
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"cannot create {text!r}: {str(parent)!r} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: {str(parent)!r} is not writable")
    return p
