"""Placeholder: OpenMax (being written)."""
