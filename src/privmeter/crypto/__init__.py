"""privmeter.crypto."""
