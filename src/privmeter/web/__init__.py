"""privmeter.web."""
