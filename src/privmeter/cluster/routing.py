"""Which shard owns which feeder group, and how calls reach the shards.

What it is for: :class:`ShardMap` assigns groups to shards once, from the
configuration (largest group first, to the shard with the fewest meters so
far; ties to the lowest index), so every front door and the coordinator
route a meter's message to the same shard without asking anyone.  The
assignment is a pure function of the group list and the shard count: a
restarted coordinator computes the same one.

:class:`Shards` is how calls reach the shards: ``call_many`` sends one call to
each of several shards *concurrently* and returns, per call, the result or
the exception (a dead shard's calls fail, the others' succeed).
:class:`LocalShards` runs :class:`~privmeter.cluster.shard.ShardCore` objects
in this process (tests, one-machine pilots); the Ray implementation is
:class:`privmeter.cluster.ray_backend.RayShards`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from privmeter.errors import ConfigError, StoreError, UnknownParty

__all__ = ["Call", "LocalShards", "ShardMap", "ShardUnavailable", "Shards"]


class ShardUnavailable(StoreError):
    """A shard died (or its node) during a call, or is restarting: the call was not applied
    by a live shard.  Message batches are reported unacknowledged; control calls are retried."""

    code = "unavailable"


Call = tuple[int, str, tuple[Any, ...]]  # (shard index, method name, arguments)


class ShardMap:
    """Group -> shard, meter -> group (see the module docstring)."""

    def __init__(self, groups: Mapping[str, Sequence[str]], shards: int) -> None:
        if shards < 1:
            raise ConfigError(f"need at least one shard, got {shards}")
        self.shards = shards
        self.group_shard: dict[str, int] = {}
        self.meter_group: dict[str, str] = {}
        load = [0] * shards
        for g in sorted(groups, key=lambda g: (-len(groups[g]), g)):
            i = min(range(shards), key=lambda k: (load[k], k))
            self.group_shard[g] = i
            load[i] += len(groups[g])
            for m in groups[g]:
                if m in self.meter_group:
                    raise ConfigError(f"meter {m!r} is in two groups")
                self.meter_group[m] = g

    def load(self) -> list[int]:
        """Meters per shard."""
        out = [0] * self.shards
        for g in self.meter_group.values():
            out[self.group_shard[g]] += 1
        return out

    def place(self, group: str, members: Sequence[str], shard: int | None = None) -> int:
        """Add a group defined at run time (a deployment's enrolment), or give a known group its
        new roster; returns its shard.  A known group stays on its shard (its data is there); a
        new one goes to ``shard`` if given (where it already lives), else to the shard with the
        fewest meters (ties to the lowest index).  A member of another group moves to this one
        (the caller's registry is the authority)."""
        if group in self.group_shard:
            shard = self.group_shard[group]
        elif shard is None:
            load = self.load()
            shard = min(range(self.shards), key=lambda k: (load[k], k))
        elif not 0 <= shard < self.shards:
            raise ConfigError(
                f"group {group!r} lives on shard {shard}, beyond the {self.shards} shards"
            )
        for m in [m for m, g in self.meter_group.items() if g == group]:
            del self.meter_group[m]
        self.group_shard[group] = shard
        for m in members:
            self.meter_group[m] = group
        return shard

    def forget_meter(self, meter_id: str) -> None:
        self.meter_group.pop(meter_id, None)

    def groups_of(self, shard: int) -> list[str]:
        return sorted(g for g, i in self.group_shard.items() if i == shard)

    def shard_of_group(self, group: str) -> int:
        return self.group_shard[group]

    def shard_of_meter(self, meter_id: str) -> int:
        """The shard serving a meter (its household's line ``hh:<meter>`` too)."""
        m = meter_id[3:] if meter_id.startswith("hh:") else meter_id
        g = self.meter_group.get(m)
        if g is None:
            raise UnknownParty("meter is in no group", meter_id=m)
        return self.group_shard[g]


class Shards(Protocol):
    """Reaches the shards (see the module docstring)."""

    def call_many(self, calls: Sequence[Call]) -> list[Any]:
        """Run the calls concurrently; per call its result, or the exception it raised."""
        ...

    def close(self) -> None: ...


class LocalShards:
    """Shard objects in this process (calls run one after the other, also across threads: a
    front door forwards from a worker thread while the interval loop calls from its own)."""

    def __init__(self, shards: Sequence[Any]) -> None:
        self.shards = list(shards)
        self._lock = threading.Lock()

    def call_many(self, calls: Sequence[Call]) -> list[Any]:
        out: list[Any] = []
        with self._lock:
            for i, name, args in calls:
                try:
                    out.append(getattr(self.shards[i], name)(*args))
                except Exception as exc:  # reported per call, as a remote shard's would be
                    out.append(exc)
        return out

    def close(self) -> None:
        for s in self.shards:
            s.close()
