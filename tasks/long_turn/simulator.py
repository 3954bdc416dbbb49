"""The user simulator of the long-turn suite: a model (role ``user`` of the run's model-call
service) plays the scenario's person, then a speech model (role ``tts``) speaks its words.

Why the scripted line stays in the prompt: the scenario's memory probes and instruction checks ask
about turn ``k``'s words ("which seat am I in?"), so a simulator free to wander would make those
checks meaningless. It is given its next scripted line and the mood of the turn, and says it in
its own words, reacting to what the assistant just said; persona, goal and facts keep it in role.

The conversation is shown to the simulator with the roles swapped (it is the ``assistant`` of its
own chat; the model under test's replies are its ``user`` messages), every earlier turn as it was
actually said. Temperature 0: the same replies give the same user, so runs compare.
"""

from __future__ import annotations

import re
from typing import Any

from evalkit.errors import UserTurnError
from evalkit.models.tts import speech_request
from evalkit.records import AudioRef, ChatRequest, GenerationParams, Message, ModelOutput, TextPart
from evalkit.service import ModelService, RoleModel

#: what the simulator may say per turn (a short spoken line)
USER_MAX_TOKENS = 96

SYSTEM = """You are playing a person who talks to a voice assistant in a long spoken conversation.
Stay this person for the whole conversation.
Who you are: {persona}
What you want: {goal}
Facts about you: {facts}
Each time, you are given your next scripted line and the mood you are in. Say that line in your own
words, as this person would, reacting naturally to what the assistant just said. Keep every name,
number and fact of the line exactly. Answer with only the words you say aloud: one to three short
sentences, no quotation marks, no stage directions, no labels."""

FIRST = "The assistant is listening."


def direction(line: dict[str, Any]) -> str:
    """The cue for one turn: its mood and scripted words."""
    return f"Now you feel {line['affect']}. Say this in your own words: {line['text']}"


def simulator_request(reference: dict[str, Any], k: int, said: list[str], replies: list[str]) -> ChatRequest:
    """The simulator's request for user turn ``k``: the persona, then every earlier exchange as it
    happened (``said``: the user's words so far, ``replies``: the model's), then the next cue."""
    facts = "; ".join(reference["facts"])
    system = SYSTEM.format(persona=reference["persona"], goal=reference["goal"], facts=facts)
    lines = reference["turns"]
    messages = [Message(role="system", content=[TextPart(text=system)])]
    for i in range(k + 1):
        heard = FIRST if i == 0 else f"The assistant said: {replies[i - 1] or '(nothing)'}"
        messages.append(Message(role="user", content=[TextPart(text=f"{heard}\n{direction(lines[i])}")]))
        if i < k:
            messages.append(Message(role="assistant", content=[TextPart(text=said[i])]))
    return ChatRequest(
        messages=messages, params=GenerationParams(max_tokens=USER_MAX_TOKENS, temperature=0.0)
    )


#: what a chat model adds around the words it would say: stage directions, labels, quotes
_DIRECTIONS = re.compile(r"\([^)]*\)|\*[^*]*\*|\[[^\]]*\]")
_LABEL = re.compile(r"^\s*(?:user|me|person|you|i say)\s*:\s*", re.IGNORECASE)


def spoken_words(output: ModelOutput) -> str:
    """The simulator's reply as words to speak: stage directions (``(smiles)``, ``*sighs*``),
    a leading label and surrounding quotes cut, whitespace folded."""
    text = _DIRECTIONS.sub(" ", output.text or "")
    text = _LABEL.sub("", " ".join(text.split()))
    return text.strip().strip('"').strip()


async def simulate_turn(
    service: ModelService,
    user: RoleModel,
    tts: RoleModel,
    reference: dict[str, Any],
    k: int,
    said: list[str],
    replies: list[str],
    *,
    task: str,
    sample_id: str,
    voice: str | None = None,
) -> tuple[str, AudioRef]:
    """What the simulated user says at turn ``k`` and its speech (WAV bytes); ``UserTurnError``
    when the simulator or the speech model failed or said nothing."""
    asked = await service.call(
        user,
        simulator_request(reference, k, said, replies),
        task=task,
        sample_id=sample_id,
        caller="long-turn",
    )
    _check(asked.output, "user simulator", user.spec)
    words = spoken_words(asked.output)
    if not words:
        raise UserTurnError(f"user simulator {user.spec} said nothing at turn {k}")
    affect = reference["turns"][k]["affect"]
    spoken = await service.call(
        tts, speech_request(words, affect, voice), task=task, sample_id=sample_id, caller="long-turn"
    )
    _check(spoken.output, "speech model", tts.spec)
    if spoken.output.audio is None:
        raise UserTurnError(f"speech model {tts.spec} returned no audio at turn {k}")
    return words, spoken.output.audio


def _check(output: ModelOutput, what: str, spec: str) -> None:
    if output.error is not None:
        raise UserTurnError(f"{what} {spec} failed: {output.error.kind}: {output.error.message}")
