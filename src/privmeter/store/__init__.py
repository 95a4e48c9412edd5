"""privmeter.store."""
