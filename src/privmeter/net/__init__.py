"""privmeter.net."""
