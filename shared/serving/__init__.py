"""Serving: the active model in memory, and the rules that turn it into answers."""
