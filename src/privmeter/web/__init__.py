"""privmeter.web: the dashboard of ``privmeter demo``.

Modules: ``engine`` (the live deployment and its operator controls),
``views`` (JSON views), ``app`` (API, server-sent events, the page),
``wire`` (in memory or loopback TCP), ``inference`` (what a raw curve gives
away).  The product never imports this package.
"""

__all__: list[str] = []
