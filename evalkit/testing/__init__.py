"""Test helpers that other projects may use too: a real loopback OpenAI-compatible server.

Kept out of the core's import path (aiohttp is only in the ``dev`` extra): import
``evalkit.testing.openai_server`` explicitly.
"""
