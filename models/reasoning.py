"""Separate a reasoning model's thinking from its answer.

Reasoning arrives in two ways: a separate ``reasoning_content``/``reasoning`` field (vLLM with a
reasoning parser), or inline as ``<think>...</think>`` in the text. Step-Audio-R1.x prefills the
generation prompt with ``<think>\\n``, so its completions start mid-thought and contain only the
closing tag. Judges score the answer alone; the reasoning is kept in ``ModelOutput.reasoning``.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def split_reasoning(text: str, prefilled: bool = False) -> tuple[str, str | None]:
    """Return ``(answer, reasoning)``.

    - ``<think>R</think>A`` -> ``(A, R)``; several think blocks are all collected.
    - ``R</think>A`` (opening tag prefilled by the chat template) -> ``(A, R)``.
    - an unclosed ``<think>R`` (generation cut by max_tokens) -> ``(text before the tag, R)``,
      usually ``""``: the model never answered, which the judges then count as a parse failure,
      not as a silent wrong answer.
    - ``prefilled=True`` and no closing tag: everything is reasoning, for the same reason.
    """
    reasoning: list[str] = []
    rest = text
    if CLOSE in rest and (OPEN not in rest or rest.index(CLOSE) < rest.index(OPEN)):
        head, _, rest = rest.partition(CLOSE)
        reasoning.append(head)
    elif prefilled and OPEN not in rest:
        return "", text.strip() or None
    answer_parts: list[str] = []
    while OPEN in rest:
        before, _, after = rest.partition(OPEN)
        answer_parts.append(before)
        thought, closed, rest = after.partition(CLOSE)
        reasoning.append(thought)
        if not closed:
            rest = ""
    answer_parts.append(rest)
    answer = "".join(answer_parts).strip()
    joined = "\n".join(r.strip() for r in reasoning if r.strip())
    return answer, (joined or None)
