"""privmeter.store: persistence of the head-end's billing ledger.

Modules: ``billing_store`` (the ``BillingStore`` interface with its atomic
commit contract, and an in-memory store), ``sqlite`` (SQLite, WAL: the
embedded default) and ``postgres`` (PostgreSQL: a sharded head-end's stores).
"""

__all__: list[str] = []
