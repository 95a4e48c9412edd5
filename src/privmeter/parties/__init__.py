"""privmeter.parties."""
