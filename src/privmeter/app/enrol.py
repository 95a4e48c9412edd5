"""``privmeter enrol``: see :func:`privmeter.app.household.enrol`."""

from __future__ import annotations

from privmeter.app.household import add_enrol_arguments as add_arguments
from privmeter.app.household import run_enrol as run

__all__ = ["add_arguments", "run"]
