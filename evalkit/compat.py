"""Living with a broken ``torchaudio``.

The torchaudio wheels on PyPI are CUDA builds that raise OSError on import next to the CPU build of
torch; ``distillmos`` (and through it ``xls_r_sqa``) depends on torchaudio, so ``pip install
.[speech]`` brings one in (the Makefile removes it again). Two libraries import it at module top
without needing it on evalkit's path: ``distillmos/sqa.py`` (only its command-line file loading)
and transformers' ``audio_utils`` (only file decoding and resampling; evalkit decodes with
soundfile and resamples with soxr itself). ``torchaudio_stand_in`` lets exactly those imports
happen: if the real torchaudio imports it is used; otherwise a placeholder sits in
``sys.modules`` for the duration of the ``with`` block only, and any use of it raises.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from typing import Any


def _placeholder() -> types.ModuleType:
    module = types.ModuleType("torchaudio")
    module.__doc__ = "evalkit placeholder: torchaudio does not import here (see evalkit/compat.py)"
    # transformers probes availability with importlib.util.find_spec, which needs a spec
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)

    def missing(name: str) -> Any:
        # AttributeError (the module __getattr__ protocol), so hasattr/getattr probes of other
        # libraries (inspect.getmodule, transformers) keep working, while a real use fails loudly
        raise AttributeError(f"torchaudio.{name} is unavailable: torchaudio does not import here")

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


@contextlib.contextmanager
def torchaudio_stand_in() -> Iterator[None]:
    """Import a library that imports torchaudio but does not use it on evalkit's path."""
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        placeholder = _placeholder()
        sys.modules["torchaudio"] = placeholder
        try:
            yield
        finally:
            if sys.modules.get("torchaudio") is placeholder:
                del sys.modules["torchaudio"]
    else:
        yield
