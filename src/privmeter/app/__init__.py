"""The deployment: wires each party from its own config and keys; the CLI's service commands.

``config`` (TOML per party), ``state`` (state directory, keys), ``init``,
``headend``, ``household``, ``enrol``, ``concentrator``, ``ops`` (logs, health, metrics).  The
interval engine they drive is :mod:`privmeter.parties.engine` (one layer
down, so that ``simulate`` reuses it without importing this package).
"""

__all__: list[str] = []
