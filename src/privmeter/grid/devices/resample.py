"""Exact integer resampling: 1-minute power to interval energy, and between intervals.

Purpose: turn simulated 1-minute power (W) into the watt-hours per billing /
aggregation interval that a meter reports, and move real interval data (e.g.
LCL half-hours) to another interval length, with integers only.

Rounding rule (guarantee): energy is accumulated in watt-minutes and each
interval reports ``floor(cum_end / 60) - floor(cum_start / 60)`` where
``cum`` is the running sum from the start of the series.  The remainder of a
watt-hour is therefore *carried* into the next interval instead of being
dropped, so for every prefix of the series the reported watt-hours differ from
the exact energy by less than 1 Wh, and the total never drifts, whatever the
interval length.  Negative power (export) uses the same floor, so import and
export are treated alike.

Splitting a coarse interval into finer ones (:func:`refine_energy`) divides
the energy evenly and distributes the remainder with the same carry rule; it
invents a flat shape inside the coarse interval and says so -- real data is
never finer than its source.  Coarsening (:func:`coarsen_energy`) sums; a
coarse interval with any missing fine interval is missing (a source never
invents a reading).

Security assumption: none; this is plain arithmetic on local data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from privmeter.errors import InvalidArgument, InvalidArgumentType

__all__ = [
    "coarsen_energy",
    "interval_energy_wh",
    "minutes_per_interval",
    "refine_energy",
    "resample_energy",
]

MIN_INTERVAL_SECONDS = 60  # the simulation's resolution: one minute


def minutes_per_interval(interval_seconds: int) -> int:
    """How many 1-minute samples make one interval; the interval must be whole minutes."""
    if (
        not isinstance(interval_seconds, int)
        or isinstance(interval_seconds, bool)
        or interval_seconds < MIN_INTERVAL_SECONDS
        or interval_seconds % 60
    ):
        raise InvalidArgument(
            f"interval_seconds must be a positive multiple of 60, got {interval_seconds!r}"
        )
    return interval_seconds // 60


def _carry_floor_split(cum: npt.NDArray[np.int64], divisor: int) -> npt.NDArray[np.int64]:
    """Differences of floor(cum / divisor) with a leading zero: the carry rule."""
    floors = np.floor_divide(cum, divisor)
    return np.diff(np.concatenate([np.zeros(1, dtype=np.int64), floors])).astype(np.int64)


def interval_energy_wh(minute_w: npt.ArrayLike, interval_seconds: int) -> npt.NDArray[np.int64]:
    """Exact integer Wh per interval from 1-minute net power in W.

    ``minute_w`` must hold whole intervals (its length a multiple of
    ``interval_seconds / 60``).  Each minute contributes ``W * 1 min`` =
    ``W / 60`` Wh; the sub-Wh remainder is carried (see the module docstring),
    so ``result.sum() == floor(minute_w.sum() / 60)`` exactly.
    """
    m = minutes_per_interval(interval_seconds)
    w = np.asarray(minute_w)
    if w.ndim != 1:
        raise InvalidArgument(f"minute_w must be one-dimensional, got shape {w.shape!r}")
    if not np.issubdtype(w.dtype, np.integer):
        raise InvalidArgumentType(f"minute_w must hold integers (W), got dtype {w.dtype}")
    if len(w) % m:
        raise InvalidArgument(
            f"minute_w holds {len(w)} minutes, not a whole number of {m}-minute intervals"
        )
    wmin = w.astype(np.int64)
    cum_at_ends = np.cumsum(wmin)[m - 1 :: m]  # watt-minutes up to each interval's end
    return _carry_floor_split(cum_at_ends, 60)


def coarsen_energy(energy_wh: Sequence[int | None], factor: int) -> list[int | None]:
    """Sum groups of ``factor`` consecutive intervals; a group with a missing value is missing.

    A trailing partial group is dropped (it is not a whole coarse interval).
    """
    if not isinstance(factor, int) or factor < 1:
        raise InvalidArgument(f"factor must be a positive int, got {factor!r}")
    out: list[int | None] = []
    for i in range(0, len(energy_wh) - factor + 1, factor):
        group = energy_wh[i : i + factor]
        if any(v is None for v in group):
            out.append(None)
        else:
            out.append(sum(int(v) for v in group if v is not None))
    return out


def refine_energy(energy_wh: Sequence[int | None], factor: int) -> list[int | None]:
    """Split each interval into ``factor`` equal parts, carrying the remainder.

    The parts of one interval sum exactly to it (``floor`` carry over the
    interval), and differ from each other by at most 1 Wh.  Missing stays
    missing in every part.  The shape inside the coarse interval is flat:
    this does not recover information the source never had.
    """
    if not isinstance(factor, int) or factor < 1:
        raise InvalidArgument(f"factor must be a positive int, got {factor!r}")
    out: list[int | None] = []
    for v in energy_wh:
        if v is None:
            out.extend([None] * factor)
            continue
        v = int(v)
        prev = 0
        for k in range(1, factor + 1):
            cur = (v * k) // factor
            out.append(cur - prev)
            prev = cur
    return out


def resample_energy(
    energy_wh: Sequence[int | None], from_seconds: int, to_seconds: int
) -> list[int | None]:
    """Move interval energy from one interval length to another (one must divide the other)."""
    for name, v in (("from_seconds", from_seconds), ("to_seconds", to_seconds)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise InvalidArgument(f"{name} must be a positive int, got {v!r}")
    if from_seconds == to_seconds:
        return list(energy_wh)
    if to_seconds % from_seconds == 0:
        return coarsen_energy(energy_wh, to_seconds // from_seconds)
    if from_seconds % to_seconds == 0:
        return refine_energy(energy_wh, from_seconds // to_seconds)
    raise InvalidArgument(
        f"cannot resample {from_seconds} s intervals to {to_seconds} s: neither divides the other"
    )
