"""privmeter.grid: the domain -- tariffs and plans, meter inputs, synthetic households.

Sub-packages (a lower one never imports a higher one; see the import-linter
contract in ``pyproject.toml``):

* :mod:`privmeter.grid.synthetic` -- simulated data: households (``profiles``),
  rooftop PV (``pv``), how a household carries out a directive
  (``curtailment``), synthesized DSMR telegrams (``p1_synth``);
* :mod:`privmeter.grid.devices` -- where a meter's readings come from: the
  load-source interface (``source``), real meters (``p1``, ``dlms``), files
  (``csvsource``, ``lcl``) and exact integer ``resample``;
* :mod:`privmeter.grid.tariff` -- the price of energy: ``tariffs``, the signed
  ``pricefeed``, the billing ``plans`` and their TOML reader ``plan_toml``.

:mod:`privmeter.grid.sources` (the ``--source`` registry) sits above
``devices`` and ``synthetic``: it opens either a real meter or a simulated
household from one spec string.
"""

__all__: list[str] = []
