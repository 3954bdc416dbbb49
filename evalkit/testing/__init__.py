"""Test helpers that other projects may use too: a real loopback OpenAI-compatible server.

Kept out of the core's import path (aiohttp is only in the ``dev`` extra): import
``evalkit.testing.openai_server`` explicitly. Likewise ``evalkit.testing.speech_validation`` (the
speech validation set) is imported only by tests and benchmarks: it loads piper-tts, which is
GPL-3.0, lazily, so nothing in the evalkit package proper imports GPL code.
"""
