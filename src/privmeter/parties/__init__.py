"""privmeter.parties: the head-end, meter, household and concentrator.

Each party has a sans-IO core (``headend``, ``meter``, ``household``,
``concentrator``) and an asyncio service (``*_service``); ``keys`` holds the
key files and ``privmeter keygen``, ``auditor`` the offline audit and
``privmeter audit``.  Each party generates its own secrets from the OS.
"""

__all__: list[str] = []
