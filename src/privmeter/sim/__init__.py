"""privmeter.sim."""
