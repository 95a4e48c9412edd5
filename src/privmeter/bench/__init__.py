"""privmeter.bench."""
