"""privmeter.grid.tariff: the tariff model and the billing plan, as exact integers.

Modules: ``tariffs`` (flat, time-of-use and real-time prices per interval),
``pricefeed`` (the utility's signed real-time price feed), ``plans`` (the
household-utility contract: tariff, price bounds, charges, demand response,
privacy budget) and ``plan_toml`` (the plan file reader and validator).
Nothing here reads a meter or simulates a household.
"""

__all__: list[str] = []
