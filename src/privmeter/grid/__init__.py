"""privmeter.grid."""
