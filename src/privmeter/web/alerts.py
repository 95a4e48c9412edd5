"""The dashboard's alert feed: what happened in the demo, numbered, newest last.

What it is for: the engine, its interval hooks and the operator's fault
injection (:mod:`privmeter.web.faults`) each report what they saw -- a
control used, a total recovered without a meter or refused, a meter refusing
a message, a dispute, a failed audit -- as one alert; the operator snapshot
(:mod:`privmeter.web.snapshot_operator`) freezes the feed for the views.

An alert is a JSON-ready dict: ``seq`` (1, 2, ... over the whole run, also
counting alerts dropped from the feed), ``level``, ``kind``, ``text``,
``time`` (simulated unix seconds, from the clock the feed is given) and any
extra keys (``meter``, ``group``, ``error``, ``event_id``).

Security: none; alerts hold what the operator's dashboard may show (never a
household's reading).  Threading: used on the engine thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["MAX_ALERTS", "AlertLevel", "Alerts"]

MAX_ALERTS = 300  # alerts kept for the dashboard (the oldest are dropped; ``count`` keeps counting)

AlertLevel = Literal["info", "ok", "warn", "caught", "event"]
"""``info`` a control or lifecycle step; ``ok`` the protocol recovered; ``warn`` something was
refused or failed without an attack; ``caught`` an attack or fault stopped by a party's check;
``event`` a demand-management event ran."""


class Alerts:
    """A bounded, numbered alert feed stamped with simulated time."""

    def __init__(self, clock: Callable[[], int], *, maxlen: int = MAX_ALERTS) -> None:
        self._clock = clock  # simulated unix seconds now
        self.entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self.count = 0  # alerts raised so far (the last one's ``seq``)

    def add(self, level: AlertLevel, kind: str, text: str, **extra: Any) -> None:
        """Append one alert (see the module docstring for its keys)."""
        self.count += 1
        self.entries.append(
            {
                "seq": self.count,
                "level": level,
                "kind": kind,
                "text": text,
                "time": self._clock(),
                **extra,
            }
        )
