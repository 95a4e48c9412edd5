"""privmeter.web: the dashboard of ``privmeter demo``.

Modules: ``engine`` (the live deployment: set-up, scheduler, delivery,
settlement), ``faults`` (the operator's fault injection), ``alerts`` (the
alert feed), ``snapshot`` (the frozen snapshots the views take),
``snapshot_operator`` (built from head-end data only) and
``snapshot_household``, ``views`` (JSON views), ``app`` (API, server-sent events, the page),
``wire`` (in memory or loopback TCP), ``inference`` (what a raw curve gives
away).  The product never imports this package.
"""

__all__: list[str] = []
