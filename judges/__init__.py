"""Scorers (``evalkit.judges``): each turns a sample and the model's outputs into a ``Score``."""
