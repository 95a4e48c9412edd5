"""privmeter.sim: simulated neighbourhoods, ``privmeter simulate`` and ``privmeter demo``.

Modules: ``scenario`` (who takes part, seeded keys and loads), ``runner``
(in memory), ``network`` (over loopback TCP), ``driver``, ``clock``,
``report``, ``cli``, ``demo``.  The product never imports this package.
"""

__all__: list[str] = []
