"""Deferrable loads: how a household responds to a demand-management directive.

Purpose: when the head-end's secure comparison finds a household above (or
below) its threshold, the household gets a directive for a window of time.
This module applies it to the household's 1-minute load, using only the
*deferrable* part (wet appliances, storage water and space heaters: see
:data:`privmeter.grid.synthetic.profiles.DEFERRABLE_APPLIANCES`); lights, cooking, TV
and cold appliances are never touched.

Actions, for the window ``[start, start + D)`` (``D = duration_minutes``):

* ``"curtail"``: the deferrable power in the window is switched off and not
  run later (service forgone).  Energy falls by the removed amount.
* ``"shift"``: the same power is removed from the window and run ``D``
  minutes later, same shape (each deferred cycle starts when the window
  ends).  Energy is conserved exactly: ``sum(new) + carried == sum(old)``;
  ``carried_wmin`` is what would run past the end of the arrays (zero when
  the profile is long enough) and belongs to the following period.
* ``"take_more"``: deferrable load planned for ``[start + D, start + 2D)``
  is run ``D`` minutes early, inside the window (energy conserved), plus an
  optional constant ``extra_w`` (e.g. a storage heater or battery switched
  on), which is the only energy added.

``limit_w`` makes the response proportional: curtail/shift remove only what
brings the net power down to ``limit_w`` (never more than the deferrable
power), take_more pulls only up to ``limit_w``.

Units: W per minute in, W per minute out; energies in watt-minutes
(``/ 60`` for Wh).  All integer, all exact.

Security assumption: none; local computation on the household's own data.
The household learns nothing new here; the utility learns only what the
aggregate shows afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from privmeter.errors import InvalidArgument
from privmeter.grid.synthetic.profiles import HouseholdProfile

__all__ = [
    "ACTIONS",
    "Action",
    "DirectiveResult",
    "apply_directive",
    "apply_directive_to_profile",
    "directive_window",
]

Action = Literal["curtail", "shift", "take_more"]
ACTIONS: tuple[str, ...] = ("curtail", "shift", "take_more")


@dataclass(frozen=True, eq=False)
class DirectiveResult:
    """The new minute arrays and how much energy moved (watt-minutes)."""

    minute_w: npt.NDArray[np.int64]
    deferrable_w: npt.NDArray[np.int64]
    removed_wmin: (
        int  # taken out of the window (curtail, shift) or out of the later slot (take_more)
    )
    added_wmin: int  # put back after the window (shift) or into the window (take_more)
    carried_wmin: int = 0  # shifted energy that falls past the end of the arrays

    @property
    def removed_wh(self) -> float:
        return self.removed_wmin / 60

    @property
    def net_change_wmin(self) -> int:
        """``sum(new minute_w) - sum(old)``: negative when the arrays hold less energy.

        For ``shift`` this is ``-carried_wmin`` (zero when the shifted block fits).
        """
        return self.added_wmin - self.removed_wmin


def directive_window(
    profile_start_unix: int, interval: int, interval_seconds: int, n_intervals: int = 1
) -> tuple[int, int]:
    """``(start_minute, duration_minutes)`` of intervals ``interval ..`` within a profile."""
    if interval_seconds % 60 or interval_seconds <= 0 or n_intervals < 1:
        raise InvalidArgument(
            f"need whole-minute intervals and n_intervals >= 1, got {interval_seconds!r}, {n_intervals!r}"
        )
    offset = interval * interval_seconds - profile_start_unix
    if offset < 0 or offset % 60:
        raise InvalidArgument(
            f"interval {interval} starts before the profile or off a minute boundary"
        )
    return offset // 60, n_intervals * interval_seconds // 60


def _as_int_array(a: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(a)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgument(
            f"{name} must be a 1-D integer array, got {arr.dtype} shape {arr.shape}"
        )
    return arr.astype(np.int64, copy=True)


def apply_directive(
    profile_or_minutes: HouseholdProfile | npt.ArrayLike,
    *,
    start_minute: int,
    duration_minutes: int,
    action: Action | str,
    deferrable_w: npt.ArrayLike | None = None,
    limit_w: int | None = None,
    extra_w: int = 0,
) -> DirectiveResult:
    """Apply one directive; returns new arrays (the inputs are not modified).

    Pass a :class:`HouseholdProfile`, or a 1-minute net power array together
    with ``deferrable_w`` (the part of each minute that may move, 0 <= it).
    """
    if isinstance(profile_or_minutes, HouseholdProfile):
        net = _as_int_array(profile_or_minutes.minute_w, "minute_w")
        dfr = _as_int_array(
            profile_or_minutes.deferrable_w if deferrable_w is None else deferrable_w,
            "deferrable_w",
        )
    else:
        if deferrable_w is None:
            raise InvalidArgument("deferrable_w is required with a plain minute array")
        net = _as_int_array(profile_or_minutes, "minute_w")
        dfr = _as_int_array(deferrable_w, "deferrable_w")
    if dfr.shape != net.shape:
        raise InvalidArgument(f"deferrable_w has {len(dfr)} minutes, minute_w has {len(net)}")
    if (dfr < 0).any():
        raise InvalidArgument("deferrable_w must be non-negative")
    if action not in ACTIONS:
        raise InvalidArgument(f"action must be one of {ACTIONS}, got {action!r}")
    for name, v in (("start_minute", start_minute), ("duration_minutes", duration_minutes)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise InvalidArgument(f"{name} must be an int, got {v!r}")
    if start_minute < 0 or duration_minutes < 1 or start_minute + duration_minutes > len(net):
        raise InvalidArgument(
            f"window [{start_minute}, {start_minute + duration_minutes}) is not inside "
            f"the {len(net)} minutes of the profile"
        )
    if not isinstance(extra_w, int) or extra_w < 0 or (extra_w and action != "take_more"):
        raise InvalidArgument(
            f"extra_w must be a non-negative int, used only by take_more, got {extra_w!r}"
        )
    s, d, n = start_minute, duration_minutes, len(net)
    e = s + d

    if action in ("curtail", "shift"):
        cut = dfr[s:e].copy()
        if limit_w is not None:
            cut = np.minimum(cut, np.maximum(net[s:e] - int(limit_w), 0))
        net[s:e] -= cut
        dfr[s:e] -= cut
        removed = int(cut.sum())
        if action == "curtail":
            return DirectiveResult(net, dfr, removed_wmin=removed, added_wmin=0)
        fit = min(d, n - e)  # minutes of the shifted block that land inside the arrays
        net[e : e + fit] += cut[:fit]
        dfr[e : e + fit] += cut[:fit]
        placed = int(cut[:fit].sum())
        return DirectiveResult(
            net, dfr, removed_wmin=removed, added_wmin=placed, carried_wmin=removed - placed
        )

    # take_more: run the next D minutes' deferrable load early, inside the window
    fit = min(d, n - e)
    pull = np.zeros(d, dtype=np.int64)
    pull[:fit] = dfr[e : e + fit]
    if limit_w is not None:
        pull = np.minimum(pull, np.maximum(int(limit_w) - net[s:e] - extra_w, 0))
    net[e : e + fit] -= pull[:fit]
    dfr[e : e + fit] -= pull[:fit]
    net[s:e] += pull + extra_w
    dfr[s:e] += pull
    moved = int(pull.sum())
    return DirectiveResult(net, dfr, removed_wmin=moved, added_wmin=moved + extra_w * d)


def apply_directive_to_profile(
    profile: HouseholdProfile,
    *,
    start_minute: int,
    duration_minutes: int,
    action: Action | str,
    limit_w: int | None = None,
    extra_w: int = 0,
) -> tuple[HouseholdProfile, DirectiveResult]:
    """The profile after the directive (ground-truth arrays unchanged), and the result."""
    res = apply_directive(
        profile,
        start_minute=start_minute,
        duration_minutes=duration_minutes,
        action=action,
        limit_w=limit_w,
        extra_w=extra_w,
    )
    mw, dw = res.minute_w.copy(), res.deferrable_w.copy()
    mw.setflags(write=False)
    dw.setflags(write=False)
    return dataclasses.replace(profile, minute_w=mw, deferrable_w=dw), res
