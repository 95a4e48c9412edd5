"""Simulated time: accelerated (days in minutes) or real time.

What it is for: the head-end's interval loop asks a :class:`SimClock` for
"now" (unix seconds of *simulated* time) and waits on it for the end of each
interval.  ``speed=0`` runs as fast as the parties answer (accelerated: a
day of 15-minute intervals takes as long as 96 protocol rounds);
``speed=1`` is real time (each interval lasts ``interval_seconds`` of wall
time); any other speed scales wall time (``speed=60``: an hour a minute).

Security: none; time is passed into the sans-IO protocol objects, never read
by them.  Guarantee: ``now`` never goes backwards.
"""

from __future__ import annotations

import asyncio
import time

from privmeter.errors import InvalidArgument

__all__ = ["SimClock"]


class SimClock:
    """Simulated unix time starting at ``start_unix``, advancing ``speed`` x wall time (0: on demand)."""

    def __init__(self, start_unix: int, *, speed: float = 0.0) -> None:
        if speed < 0:
            raise InvalidArgument("speed must be >= 0")
        self.start_unix = int(start_unix)
        self.speed = speed
        self._t = int(start_unix)
        self._wall0 = time.monotonic()

    def now(self) -> int:
        if self.speed > 0:
            return max(
                self._t, self.start_unix + int((time.monotonic() - self._wall0) * self.speed)
            )
        return self._t

    async def wait_until(self, unix: int) -> None:
        """Return when simulated time reaches ``unix`` (at once when accelerated)."""
        if self.speed > 0:
            wall = (unix - self.start_unix) / self.speed + self._wall0
            delay = wall - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        self._t = max(self._t, int(unix))

    def advance(self, unix: int) -> None:
        self._t = max(self._t, int(unix))
