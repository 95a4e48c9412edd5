"""privmeter.privacy."""
