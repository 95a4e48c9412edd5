"""Sans-IO protocol cores: frozen message dataclasses, a versioned codec and
state machines that take messages in and return messages out.  Nothing in
this package does I/O, reads a clock or imports asyncio."""

__all__: list[str] = []
