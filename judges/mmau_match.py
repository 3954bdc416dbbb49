"""MMAU judges: the official string match, a strict letter/option extractor, and the submission
recorder for the test split whose answers are withheld.

``mmau-string-match`` re-implements ``string_match(answer, prediction, choices)`` of the official
``evaluation.py`` (github.com/Sakshi113/MMAU, last changed in commit
``74682927cf7f434cc9ed585b1f8a5e6150381e91``, 2025-01-29) token for token, because that rule *is* the
MMAU number and it has quirks a generic choice extractor does not share:

- tokens are ``re.findall(r"\\b\\w+\\b", text.lower())`` as a *set*, so word order is ignored
  ("barking dog" matches "Dog barking");
- a prediction with no token at all (empty, whitespace, punctuation only) is wrong, whatever the
  answer (the function returns False before any comparison);
- otherwise correct iff every token of the answer occurs in the prediction AND no token that belongs
  only to wrong options occurs in it (each choice whose token set differs from the answer's adds its
  tokens minus the answer's); so a reply naming two options is wrong, and a bare letter ("A") is
  wrong;
- there is no parse step: an empty reply is simply wrong. It stays in the denominator, as in the
  script, and is flagged ``parse_failed`` so it is counted (the script does not count it);
- the official script scores the ``model_output`` string it is given. We score the model's answer,
  ``output.text`` with any ``<think>`` reasoning split off (``answer_text``; the reasoning stays in
  responses.jsonl): scoring the thoughts would punish every reasoning model for option words it
  merely considered. A think-only or truncated reply therefore has an empty answer: wrong;
- the script *skips* a record with no ``model_output`` key (out of the denominator) and scores an
  empty string wrong. In evalkit every successful call is an answer (empty included) and is scored;
  only a failed call (transport or server error) has no answer: the runner records it as a
  ``model_error`` score (n_model_errors, coverage < 1), outside the denominator like a missing key.
"""

from __future__ import annotations

import re
from typing import Any

from evalkit.judges.answer_match import AnswerMatchJudge
from evalkit.judges.base import Judge, share
from evalkit.judges.extract import LETTERS, answer_text, extract_choice
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge

_WORD = re.compile(r"\b\w+\b")


def tokenize(text: str) -> list[str]:
    """The official tokenizer: lower-case, then ``\\b\\w+\\b`` words (punctuation dropped)."""
    return _WORD.findall(text.lower())


def string_match(answer: str, prediction: str, choices: list[str]) -> tuple[bool, dict[str, Any]]:
    """The official ``string_match`` verdict plus the token sets that decided it (for details)."""
    answer_tokens = set(tokenize(answer))
    prediction_tokens = set(tokenize(prediction))
    incorrect_tokens: set[str] = set()
    for choice in choices:
        incorrect_tokens.update(set(tokenize(choice)) - answer_tokens)
    missing = sorted(answer_tokens - prediction_tokens)
    wrong_hits = sorted(incorrect_tokens & prediction_tokens)
    correct = bool(prediction_tokens) and not missing and not wrong_hits
    return correct, {"missing_answer_tokens": missing, "incorrect_tokens_found": wrong_hits}


@register_judge("mmau-string-match")
class MMAUStringMatchJudge(Judge):
    """MMAU official scoring: the evaluation.py token string match on the option text."""

    name = "mmau-string-match"
    metrics = (share("accuracy", "1 when the official token string match accepts the reply, else 0"),)

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        ref = sample.reference
        answer = str(ref["answer"])
        choices = [str(c) for c in ref["choices"]]
        prediction = answer_text(outputs[-1])
        correct, details = string_match(answer, prediction, choices)
        empty = not tokenize(prediction)
        explanation = (
            "no word in the reply (scored wrong)"
            if empty
            else f"expected {answer!r}: "
            + (
                "matched"
                if correct
                else f"missing {details['missing_answer_tokens']}, "
                f"wrong-option tokens {details['incorrect_tokens_found']}"
            )
        )
        return Score(
            judge=self.name,
            metrics={"accuracy": float(correct)},
            passed=correct,
            extracted=prediction,
            parse_failed=empty,
            explanation=explanation,
            details={"answer": answer, "prediction": prediction, **details},
        )


@register_judge("mmau-choice")
class MMAUChoiceJudge(AnswerMatchJudge):
    """MMAU strict mode: one letter or one unique option text, else a counted parse failure."""

    name = "mmau-choice"

    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        return extract_choice(text, [str(c) for c in reference["choices"]])

    def expected(self, reference: dict[str, Any]) -> str:
        """The answer's letter: MMAU stores the answer as option text, the extractor yields letters."""
        choices = [str(c) for c in reference["choices"]]
        answer = str(reference["answer"])
        if answer not in choices:
            raise ValueError(f"answer {answer!r} is not one of the choices {choices}")
        return LETTERS[choices.index(answer)]

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        return extracted == self.expected(reference)


@register_judge("mmau-submission")
class MMAUSubmissionJudge(Judge):
    """MMAU test split (answers withheld): records the prediction for the submission file."""

    name = "mmau-submission"

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        prediction = outputs[-1].text or ""
        return Score(
            judge=self.name,
            passed=None,
            extracted=prediction,
            explanation="answers withheld: written to the submission file, not scored",
            details={"id": sample.id, "model_prediction": prediction},
        )
