"""privmeter.grid.devices: meter-input adapters, where a meter's readings come from.

Modules: ``source`` (the :class:`~privmeter.grid.devices.source.LoadSource`
interface and :class:`~privmeter.grid.devices.source.IntervalReading`),
``p1`` (DSMR P1 port), ``dlms`` (DLMS/COSEM over TCP), ``csvsource`` (the
``privmeter-readings v1`` CSV format), ``lcl`` (the London LCL trial data)
and ``resample`` (exact integer power-to-energy and interval resampling).
Nothing here imports the synthetic households or the tariff model.
"""

__all__: list[str] = []
