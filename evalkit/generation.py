"""Which generation settings a run's requests carry, and where each one came from.

The token budget and sampling belong to the model: a reasoning model such as Step-Audio-R1.x
needs 32000 tokens at temperature 0.7 whatever the benchmark, and a task's 512-token default must
not cut its ``<think>`` short. So, for ``max_tokens``, ``temperature``, ``top_p`` and ``stop``,
highest first:

1. ``cli``: what the command line sets (``--max-tokens``, ``--temperature``, ``--top-p``);
2. ``card``: the model card's ``sampling`` and ``stop`` (``evalkit.models.model_cards``);
3. ``task``: what the task sets explicitly (pydantic's ``model_fields_set``);
4. ``default``: ``GenerationParams``' own defaults.

The seed is always the run's (``--seed``). Extra request fields are the adapter's business (the
card's, updated key by key by the task's). The runner resolves every task once and writes the
result with its sources to the manifest (``manifest["generation"][task]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalkit.records import GenerationParams

#: the settings the precedence rule decides
RESOLVED_FIELDS = ("max_tokens", "temperature", "top_p", "stop")


def _given(values: Mapping[str, Any], field: str) -> bool:
    """A layer sets a field when it names it with a value (an empty stop list sets nothing)."""
    value = values.get(field)
    return value is not None and value != []


def resolve_generation(
    task: GenerationParams,
    card: Mapping[str, Any],
    cli: Mapping[str, Any],
    seed: int | None,
) -> tuple[GenerationParams, dict[str, dict[str, Any]]]:
    """The parameters a task's requests carry, and ``{field: {"value", "source"}}`` for the
    manifest. Every resolved field is set explicitly on the result, so an adapter's own
    fill-in of unset fields (``OpenAIChatAdapter.effective_params``) leaves them alone."""
    explicit = {name: getattr(task, name) for name in task.model_fields_set}
    layers = (("cli", cli), ("card", card), ("task", explicit))
    defaults = GenerationParams()
    chosen: dict[str, Any] = {}
    sources: dict[str, dict[str, Any]] = {}
    for field in RESOLVED_FIELDS:
        source, value = next(
            ((name, values[field]) for name, values in layers if _given(values, field)),
            ("default", getattr(defaults, field)),
        )
        chosen[field] = list(value) if field == "stop" else value
        sources[field] = {"value": chosen[field], "source": source}
    sources["seed"] = {"value": seed, "source": "run"}
    params = GenerationParams(**chosen, seed=seed, extra=dict(task.extra))
    return params, sources
