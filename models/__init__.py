"""Model adapters (``evalkit.models``): each turns a ``ChatRequest`` into a ``ModelOutput``.

Adapters are registered by spec prefix (``openai:``, ``hf:``, ``cascade``) in
``evalkit.registry.models``; ``evalkit.models.base.load_model`` resolves a spec string.
"""
