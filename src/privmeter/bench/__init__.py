"""privmeter.bench: the ``privmeter bench ...`` commands, each against a named peer.

Modules: ``paillier`` (vs python-paillier), ``aggregation`` (masked sum vs a
Paillier baseline), ``comparison`` (meter-keyed comparison vs MPyC), ``headend`` (meters served
per head-end core), ``scale`` (the sharded head-end at 1 and 2 shards vs one
process) with its seeded load ``fleet``; ``_common`` holds CPU timing,
progress and output.
Performance targets live here, never in timed unit tests.
"""

__all__: list[str] = []
