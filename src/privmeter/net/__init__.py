"""privmeter.net: how messages travel between parties.

Modules: ``framing`` (size-limited length prefixes), ``handshake`` (sans-IO
authenticated key exchange), ``channel`` (sealed records), ``connection``,
``transport`` (asyncio server and client), ``emulation`` (latency, loss,
bandwidth).  Every message is authenticated, replay-protected and bounded.
"""

__all__: list[str] = []
