"""The simulation's seeded identities and outage model (shared by every sim runner).

What it is for: the in-memory runner (:mod:`privmeter.sim.runner`), the network
runner (:mod:`privmeter.sim.network`), the separate processes
(:mod:`privmeter.sim.parties`) and the demo's wire derive the same household
and concentrator keys and the same outages from the scenario's seed.  This
module sits below all of them, so they need not import one another for it.

Security: simulation keys from the seed.  Never use these for real households.
"""

from __future__ import annotations

import hashlib

from privmeter.crypto.signing import SigningKey

__all__ = ["concentrator_key", "household_identity", "is_offline"]


def household_identity(seed: int, meter_id: str) -> SigningKey:
    """The simulation's household identity key (deterministic from the scenario seed)."""
    return SigningKey.from_seed(
        hashlib.sha256(f"privmeter-sim-household/{seed}/{meter_id}".encode()).digest()
    )


def concentrator_key(seed: int, concentrator_id: str) -> SigningKey:
    """The simulation's key of a concentrator (deterministic from the scenario seed)."""
    return SigningKey.from_seed(
        hashlib.sha256(f"privmeter-sim-dc/{seed}/{concentrator_id}".encode()).digest()
    )


def is_offline(seed: int, meter_id: str, interval: int, dropout: float) -> bool:
    """The seeded outage model: is ``meter_id`` down for ``interval``?"""
    if dropout <= 0:
        return False
    h = hashlib.sha256(f"privmeter-outage/{seed}/{meter_id}/{interval}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < dropout
