"""Placeholder: the math of the built-in scorers (being written)."""
OPENOOD: dict = {}
