"""privmeter.privacy: measure what the utility can and cannot learn.

Modules: ``views`` (the conventional and privmeter views of the same
households), ``attacks`` (occupancy and appliance detectors), ``metrics``,
``differencing`` (differencing and probing attacks), ``membership`` (the
meter-side roster policy), ``noise`` (distributed Skellam noise and its DP
accounting), ``ledger`` (bits learned per household per day), ``report`` and
``cli`` (``privmeter privacy``).
"""

__all__: list[str] = []
