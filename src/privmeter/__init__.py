"""privmeter: privacy-preserving smart metering.

A utility gets every feeder's total (secure aggregation), reaches individual
households during demand-management events (secure comparison) and bills on
any tariff (Paillier, verifiable, auditable) -- without seeing any
household's readings.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
