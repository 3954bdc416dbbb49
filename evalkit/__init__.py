"""evalkit: evaluate large audio language models on multi-turn spoken dialogue.

The public surface: records in ``evalkit.records``, registries in ``evalkit.registry``, the
runner in ``evalkit.runner`` and the ``evalkit`` CLI. Heavy libraries load lazily.
"""

__version__ = "0.1.0"
