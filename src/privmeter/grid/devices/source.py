"""Where a meter's readings come from: the load-source interface.

A load source yields one :class:`IntervalReading` per interval, in order.
Simulated households, CSV files and real meters (DSMR P1, DLMS/COSEM) all
implement :class:`LoadSource`, so the meter agent does not care which it has.

Units: ``energy_wh`` is the net energy of the interval in watt-hours (import
positive, export to the grid negative); ``power_w`` is the latest
instantaneous net power in watts (used by demand-management comparisons), or
None when the source has none.  A source never invents a reading: a missing
interval is yielded with ``energy_wh=None`` and the protocols treat that
meter as dropped for that interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from privmeter.errors import DataFormatError, InvalidArgument

__all__ = ["IntervalReading", "LoadSource", "readings_in_executor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalReading:
    interval: int  # floor(unix_seconds / interval_seconds)
    energy_wh: int | None  # None: missing (meter dropped for this interval)
    power_w: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval < 0:
            raise InvalidArgument(f"interval must be a non-negative int, got {self.interval!r}")
        for name in ("energy_wh", "power_w"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidArgument(f"{name} must be int or None, got {type(v).__name__}")


@runtime_checkable
class LoadSource(Protocol):
    """Anything that yields a meter's interval readings in order."""

    interval_seconds: int

    def readings(self) -> Iterator[IntervalReading]: ...


async def readings_in_executor(
    readings: Iterator[IntervalReading], close: Callable[[], None]
) -> AsyncIterator[IntervalReading]:
    """Drive a blocking ``readings()`` iterator from asyncio.

    Each ``next`` runs in the loop's default executor, so a source that
    blocks on a device or socket does not stall the event loop; ``close`` is
    called when the consumer stops (or the stream ends).
    """
    loop = asyncio.get_running_loop()
    done = object()
    try:
        while True:
            item = await loop.run_in_executor(None, next, readings, done)
            if item is done:
                return
            if not isinstance(item, IntervalReading):
                raise DataFormatError(
                    f"a load source yielded {type(item).__name__}, not an IntervalReading"
                )
            yield item
    finally:
        close()
