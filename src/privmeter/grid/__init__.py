"""privmeter.grid: the domain -- plans and tariffs, the price feed, loads and meters.

Modules: ``plans``, ``tariffs``, ``pricefeed``; load sources (``source``,
``sources``: the ``--source`` registry) for real meters (``p1``, ``dlms``,
``csvsource``), real data (``lcl``) and simulated households (``profiles``,
``pv``, ``curtailment``, ``p1_synth``); ``resample`` (exact integer energy).
"""

__all__: list[str] = []
