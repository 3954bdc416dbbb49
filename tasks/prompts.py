"""Official prompts as jinja2 templates (``tasks/templates/*.j2``).

A prompt is part of the score: it lives in a file of its own, is rendered with StrictUndefined (a
missing field is an error, never an empty string), and its sha256 goes into the manifest.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

import jinja2


@cache
def _environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(
        lambda name: resources.files("evalkit.tasks").joinpath("templates", name).read_text()
    )
    return jinja2.Environment(
        loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
    )


def template_text(name: str) -> str:
    return resources.files("evalkit.tasks").joinpath("templates", name).read_text()


def template_digest(name: str) -> str:
    return hashlib.sha256(template_text(name).encode()).hexdigest()


def render_prompt(name: str, **fields: Any) -> str:
    """Render ``templates/NAME`` with ``fields``; trailing whitespace is stripped."""
    return _environment().get_template(name).render(**fields).strip()
