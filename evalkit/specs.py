"""The one parser of the ``k=v,k=v`` argument lists of model and task specs, and the typed
option sets (``Options``) they validate into: every spec and judge setting is a pydantic field,
an unknown key is one line naming the spec and the key (with a did-you-mean)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class Options(BaseModel):
    """Base of every typed option set a spec, a task or a judge takes: an unknown key is refused
    (``validate_options``) and defaults, also those an environment variable provides
    (``env_field``), are validated like given values."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


OptionsT = TypeVar("OptionsT", bound=Options)


def env_field(var: str, fallback: Any = None) -> Any:
    """A field whose default is environment variable ``var`` (``fallback`` when unset or empty):
    the environment only provides a default, and the effective value is the option's value."""

    def read() -> Any:
        return os.environ.get(var, "").strip() or fallback

    return Field(default_factory=read, json_schema_extra={"env": var})


def validate_options(model: type[OptionsT], values: Mapping[str, Any], where: str) -> OptionsT:
    """``values`` as ``model``, or a ``SpecError`` of one line naming ``where``, the key and the fix
    (an unknown key with the closest known one, a bad value with the reason and, for a value that
    came from the environment, the variable)."""
    known = list(model.model_fields)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(f"unknown option {key!r} in {where}; {hint}known: {', '.join(known) or 'none'}")
    try:
        return model(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "?"
        if error["type"] == "missing":
            raise SpecError(
                f"{where} needs {key}=...; it takes {', '.join(f'{k}=' for k in known)}"
            ) from None
        env = _env_of(model, key) if key not in values else None
        source = f" (from ${env})" if env else ""
        given = f"{key}={error.get('input')!r}"
        reason = error["msg"].removeprefix("Value error, ")
        raise SpecError(f"bad option {given} in {where}{source}: {reason}") from None


def _env_of(model: type[Options], key: str) -> str | None:
    """The environment variable that provides option ``key``'s default (``env_field``), if any."""
    field = model.model_fields.get(key)
    extra = field.json_schema_extra if field is not None else None
    return str(extra["env"]) if isinstance(extra, dict) and "env" in extra else None


def parse_into(
    model: type[OptionsT], arg: str, where: str, defaults: Mapping[str, Any] | None = None
) -> OptionsT:
    """``"k=v,k=v"`` -> validated ``model``: the one option parser of every spec. ``defaults``
    (keyword options from code or the command line) apply first; the spec string wins."""
    return validate_options(model, {**(defaults or {}), **parse_options(arg, where)}, where)
