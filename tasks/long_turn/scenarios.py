"""The scenario format of the ``long-turn`` suite, validated with pydantic.

A scenario file is YAML holding a list of scenarios (``tasks/long_turn/scenarios/*.yaml`` are the
built-in set; ``long-turn:scenarios=DIR`` reads your own folder). One scenario::

    - id: empathy-lost-job              # unique over every file of the folder (letters, digits, -)
      category: empathy                 # free slug; summary.json groups by it
      persona: Dana, 34, just laid off  # who the user is (the simulator plays it)
      goal: feel heard, plan next week  # what the user wants from the conversation
      facts:                            # what the user tells early and asks back later
        - her dog is called Pepper
      turns:                            # 12-30 user turns, each ``- AFFECT: what the user says``
        - worried: I lost my job today. My dog Pepper is the only one who knows.
        - sad: ...
      probes:                           # memory checks: the reply to user turn ``turn`` (1-based)
        - {turn: 12, expect: [pepper]}  # must name every ``expect`` keyword ("a|b": either one)
        - {turn: 14, expect: [friday], forbid: [thursday]}   # and none of ``forbid``
      instruction:                      # optional: said by the user at ``turn``; every reply from
        {turn: 1, text: call me Captain, require: [captain]}  # then on is checked
      role:                             # optional: a character the model plays (system prompt);
        {prompt: You are Mira, a ship's navigator., forbid: [language model]}  # checked every reply

A check (``instruction``, ``role``) may name ``require`` (each keyword in every reply), ``forbid``
(none of them in any reply) and ``max_words`` (reply length). Keywords match case-insensitively on
whole words; ``"thirty|30"`` accepts either spelling. Affect labels are ``AFFECTS``; each has a
speaking style in ``evalkit.models.tts.AFFECT_STYLES``. A bad file is refused in one line naming
the file, the scenario, the field and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalkit.errors import EvalkitError
from evalkit.models.tts import AFFECT_STYLES

#: the affect labels a user turn may carry (each has a speaking style)
AFFECTS: tuple[str, ...] = tuple(AFFECT_STYLES)
#: the bounds of a scenario's length in user turns
MIN_TURNS, MAX_TURNS = 12, 30
#: the categories of the built-in set (your own files may use others)
CATEGORIES = (
    "empathy",
    "frustration-relief",
    "celebration",
    "long-task",
    "role-play",
    "instruction",
    "correction",
)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """``"thirty|30"`` -> a case-insensitive whole-word pattern accepting either alternative."""
    options = [re.escape(k.strip().lower()) for k in keyword.split("|") if k.strip()]
    return re.compile(r"(?<!\w)(?:" + "|".join(options) + r")(?!\w)", re.IGNORECASE)


def _check_keywords(values: list[str]) -> list[str]:
    for value in values:
        if not any(k.strip() for k in value.split("|")):
            raise ValueError(f"empty keyword {value!r}; give a word or 'a|b' alternatives")
    return values


class Check(_Strict):
    """What every reply it covers must satisfy (keyword matching, a named scoring mode)."""

    require: list[str] = Field(default_factory=list)
    forbid: list[str] = Field(default_factory=list)
    max_words: int | None = Field(default=None, ge=1)

    _keywords = field_validator("require", "forbid")(_check_keywords)

    def failures(self, reply: str) -> list[str]:
        """Why ``reply`` breaks the check (empty: it holds)."""
        missing = [f"missing {k!r}" for k in self.require if not keyword_pattern(k).search(reply)]
        present = [f"says {k!r}" for k in self.forbid if keyword_pattern(k).search(reply)]
        words = len(reply.split())
        long = [f"{words} words > {self.max_words}"] if self.max_words and words > self.max_words else []
        return missing + present + long


class Instruction(Check):
    """An instruction the user gives at user turn ``turn`` (1-based) that must hold from then on."""

    turn: int = Field(ge=1)
    text: str = Field(min_length=1)


class Role(Check):
    """A character the model plays for the whole conversation; ``prompt`` joins the system prompt."""

    prompt: str = Field(min_length=1)


class Probe(_Strict):
    """A memory check: the reply to user turn ``turn`` must name every ``expect`` keyword."""

    turn: int = Field(ge=2)
    expect: list[str] = Field(min_length=1)
    forbid: list[str] = Field(default_factory=list)

    _keywords = field_validator("expect", "forbid")(_check_keywords)

    def recall(self, reply: str) -> float:
        """Share of expected keywords named; 0 when a forbidden one (a corrected fact) is said."""
        if any(keyword_pattern(k).search(reply) for k in self.forbid):
            return 0.0
        return sum(bool(keyword_pattern(k).search(reply)) for k in self.expect) / len(self.expect)


class UserLine(_Strict):
    """One scripted user turn: its intended affect and its words."""

    affect: str
    text: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        """``{worried: "text"}`` (the file's compact form) -> ``{affect, text}``."""
        if isinstance(value, dict) and len(value) == 1 and "affect" not in value:
            ((affect, text),) = value.items()
            return {"affect": affect, "text": text}
        if isinstance(value, dict) and "affect" in value:
            return value
        raise ValueError("a turn is one 'AFFECT: what the user says' line")

    @field_validator("affect")
    @classmethod
    def _known_affect(cls, value: str) -> str:
        if value not in AFFECTS:
            raise ValueError(f"unknown affect {value!r}; known: {', '.join(AFFECTS)}")
        return value


class Scenario(_Strict):
    """One long conversation the user plays (see the module docstring for the format)."""

    id: str
    category: str
    persona: str = Field(min_length=1)
    goal: str = Field(min_length=1)
    facts: list[str] = Field(min_length=1)
    turns: list[UserLine] = Field(min_length=MIN_TURNS, max_length=MAX_TURNS)
    probes: list[Probe] = Field(min_length=1)
    instruction: Instruction | None = None
    role: Role | None = None

    @field_validator("id", "category")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits and '-'")
        return value

    @model_validator(mode="after")
    def _turns_exist(self) -> Scenario:
        n = len(self.turns)
        for probe in self.probes:
            if probe.turn > n:
                raise ValueError(f"probe turn {probe.turn} is past the last user turn ({n})")
        if self.instruction is not None and self.instruction.turn > n:
            raise ValueError(f"instruction turn {self.instruction.turn} is past the last user turn ({n})")
        return self


def load_scenario_file(path: Path) -> list[Scenario]:
    """The scenarios of one YAML file, or one ``EvalkitError`` line: file, scenario, field, fix."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise EvalkitError(
            f"{path}: not valid YAML{where}; fix the syntax (see tasks/long_turn/scenarios.py)"
        ) from None
    if not isinstance(data, list):
        raise EvalkitError(
            f"{path}: must hold a list of scenarios ('- id: ...' entries), got {type(data).__name__}"
        )
    scenarios = []
    for i, item in enumerate(data):
        label = f"scenario {i + 1}" + (
            f" ({item['id']!r})" if isinstance(item, dict) and "id" in item else ""
        )
        try:
            scenarios.append(Scenario.model_validate(item))
        except ValidationError as exc:
            raise EvalkitError(f"{path}: {label} {_explain(exc)}") from None
    return scenarios


def _explain(exc: ValidationError) -> str:
    """The first problem as ``field turns.4.affect: reason; fix: ...``."""
    error = exc.errors()[0]
    loc = ".".join(str(p) for p in error["loc"])
    reason = error["msg"].removeprefix("Value error, ")
    fix = _FIXES.get(error["type"], "correct it as tasks/long_turn/scenarios.py documents")
    if error["type"] in ("too_short", "too_long") and error["loc"][:1] == ("turns",):
        fix = f"give {MIN_TURNS}-{MAX_TURNS} user turns"
    return f"field {loc or '(scenario)'}: {reason}; fix: {fix}"


_FIXES = {
    "missing": "add the field",
    "extra_forbidden": "remove it (known fields: " + ", ".join(Scenario.model_fields) + ")",
}


def load_scenarios(folder: Path) -> list[Scenario]:
    """Every scenario of every ``*.yaml`` file in ``folder`` (files in name order), ids unique."""
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise EvalkitError(f"{folder}: no scenario files (*.yaml); fix: point scenarios= at a folder of them")
    seen: dict[str, Path] = {}
    scenarios: list[Scenario] = []
    for path in files:
        for scenario in load_scenario_file(path):
            if scenario.id in seen:
                raise EvalkitError(
                    f"{path}: scenario id {scenario.id!r} is already used in {seen[scenario.id]}; "
                    "fix: give every scenario its own id"
                )
            seen[scenario.id] = path
            scenarios.append(scenario)
    return scenarios
