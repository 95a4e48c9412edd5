"""privmeter.store: persistence of the head-end's billing ledger.

Modules: ``billing_store`` (the ``BillingStore`` interface with its atomic
commit contract, and an in-memory store) and ``sqlite`` (SQLite, WAL).
"""

__all__: list[str] = []
