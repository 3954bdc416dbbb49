"""Parsing of the ``k=v,k=v`` argument lists used in model and task specs."""

from __future__ import annotations

from evalkit.errors import SpecError


def parse_options(arg: str, where: str) -> dict[str, str]:
    """``"asr=tiny.en,llm=hf:/m"`` -> dict. Values may contain ':' and '@' but not ','."""
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in arg.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"bad option {item!r} in {where}: expected key=value pairs separated by ','")
        options[key.strip()] = value.strip()
    return options
