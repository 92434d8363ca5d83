"""A/B evaluation: variants over a dataset version, scored, compared with honest statistics."""
