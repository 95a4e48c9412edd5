"""privmeter.grid.synthetic: simulated data for tests, demos and the simulation.

Modules: ``profiles`` (richardsonpy/CREST households with ground truth, and
their load source), ``pv`` (pvlib clear-sky rooftop PV), ``curtailment`` (how a
household's deferrable load carries out a demand-management directive) and
``p1_synth`` (DSMR P1 telegrams rewritten or synthesized from a power series).
"""

__all__: list[str] = []
