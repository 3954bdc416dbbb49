"""``long-turn``: does a model stay natural, emotionally continuous and in touch over 12-30 spoken turns?

The protocol. A scenario (``tasks/long_turn/scenarios/*.yaml``, format in
``evalkit.tasks.long_turn.scenarios``) is one long conversation: a persona with a goal, facts the
user gives early and asks back later (memory probes), an optional instruction that must hold from
the turn it is given, an optional role the model must keep, and 12-30 user turns, each with its
intended affect (calm, worried, frustrated, relieved, excited, sad, ...). Every turn the model
under test hears the user's speech (audio only: the words are never sent as text) after its own
earlier replies (as text, the closed loop of ``Task.build_request``), and answers.

Two ways to play the user:

- **scripted** (``long-turn``, the default): the scenario's lines, rendered offline once with
  espeak-ng in each turn's affect style (``evalkit.models.tts.AFFECT_STYLES``) into
  ``<cache>/datasets/long-turn/<VERSION>/<scenario>-<digest>/`` (temporary folder, atomic rename;
  the digest covers the scenario and the styles, so an edited scenario is rendered anew). No
  simulator, identical input for every model: runs compare.
- **simulated** (``long-turn:user=SPEC[,tts=SPEC,voice=V]``): any model spec plays the user (role
  ``user`` of the run's model-call service), given persona, goal, facts, the turn's affect and
  scripted line and the conversation so far (``evalkit.tasks.long_turn.simulator``); its words are
  spoken by the speech model ``tts`` (role ``tts``: ``espeak`` by default, or
  ``openai-tts:MODEL@URL`` for any ``/v1/audio/speech`` server). The audio is saved in the run
  (``audio/<task>/<sample>_t<k>.user.wav``); what the user said and where its audio is are in
  responses.jsonl (``input``), and ``--resume`` reuses them: no finished user or model turn is
  asked again (``Task.user_turn``, ``evalkit.turn_loop``).

Options: ``scenarios=DIR`` (your own folder of scenario files), ``ids=A+B``, ``categories=A+B``,
``judges=A+B`` (default ``long-turn-checks+prosody+emotion+voice``; add ``naturalness``, ``asr``
or ``listener`` as wanted). The ``long-turn-checks`` judge scores memory probes, the instruction
and the role turn by turn (``details["turn_metrics"]``). ``demo-long-turn`` is the one 12-turn
scripted conversation ``make demo`` runs. Bump ``VERSION`` when anything that shapes the samples
or their audio changes; the manifest records a fingerprint of every sample and audio byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError
from evalkit.models.tts import AFFECT_STYLES, espeak_affect, espeak_version
from evalkit.paths import cache_dir, publish_folder
from evalkit.records import (
    AudioPart,
    AudioRef,
    ChatRequest,
    GenerationParams,
    Message,
    ModelOutput,
    Sample,
    TextPart,
    Turn,
)
from evalkit.registry import register_task
from evalkit.specs import Options, parse_into
from evalkit.tasks.base import InMemoryTask
from evalkit.tasks.long_turn.scenarios import Scenario, load_scenarios

if TYPE_CHECKING:
    from evalkit.service import ModelService

VERSION = "v1"
RATE_HZ = 16000
USER_VOICE = "en-us"
SCENARIO_DIR = Path(__file__).parent / "scenarios"
DEFAULT_JUDGES = "long-turn-checks+prosody+emotion+voice"
#: the scenario ``make demo`` plays (12 turns, scripted)
DEMO_SCENARIO = "celebration-new-job"
#: its judges: ``voice`` (a speaker-embedding model) is left out to keep ``make demo`` in minutes
DEMO_JUDGES = "long-turn-checks+prosody+emotion"
SYSTEM_PROMPT = (
    "You are a warm, helpful voice assistant in a long spoken conversation. The user speaks to you; "
    "reply naturally in one or two short sentences, and remember what the user told you earlier."
)


class LongTurnOptions(Options):
    """``long-turn[:scenarios=DIR,ids=A+B,categories=A+B,judges=A+B,user=SPEC,tts=SPEC,voice=V]``."""

    scenarios: str = ""
    ids: str = ""
    categories: str = ""
    judges: str = DEFAULT_JUDGES
    #: the user simulator's model spec; empty: scripted mode
    user: str = ""
    #: the speech model of simulated turns (role ``tts``)
    tts: str = "espeak"
    #: the voice the speech model is asked for (empty: its own default)
    voice: str = ""
    #: ask the model under test to answer in speech too (OpenAI ``modalities: [text, audio]``)
    speak: bool = False


def _plus(value: str) -> tuple[str, ...]:
    return tuple(filter(None, (v.strip() for v in value.split("+"))))


@register_task("long-turn")
class LongTurn(InMemoryTask):
    """Long spoken conversations (12-30 turns) with an affect arc, memory probes and instructions."""

    name = "long-turn"
    group_by = ("category",)
    primary_metric = "memory_recall"
    requires = ("audio_in", "multi_turn")
    params = GenerationParams(max_tokens=160, temperature=0.0)
    system_prompt = SYSTEM_PROMPT

    def __init__(self, options: LongTurnOptions | None = None):
        opts = options or LongTurnOptions()
        self.options = opts
        self.scenario_dir = Path(opts.scenarios).expanduser() if opts.scenarios else SCENARIO_DIR
        self.ids = _plus(opts.ids)
        self.categories = _plus(opts.categories)
        self.judges = _plus(opts.judges)
        self.user, self.tts, self.voice = opts.user, opts.tts, opts.voice
        if opts.speak:
            self.params = self.params.model_copy(update={"extra": {"modalities": ["text", "audio"]}})
        self.live_user_turns = bool(opts.user)
        self.root = cache_dir() / "datasets" / "long-turn" / VERSION

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> LongTurn:
        where = f"task spec '{cls.name}:...' (e.g. {cls.name}:user=openai:MODEL@URL,tts=espeak)"
        return cls(parse_into(LongTurnOptions, arg, where))

    def identity(self) -> Hashable:
        """One folder of scenarios played with the same options is one task."""
        return (type(self), self.name, self.scenario_dir.resolve(), self.options)

    # -- samples ------------------------------------------------------------------------------------
    def scenarios(self) -> list[Scenario]:
        """The scenarios this task plays, in file order, filtered by ``ids`` and ``categories``."""
        chosen = load_scenarios(self.scenario_dir)
        known = {s.id for s in chosen}
        missing = [i for i in self.ids if i not in known]
        if missing:
            raise EvalkitError(
                f"task {self.name!r} option ids: no scenario {missing[0]!r} in {self.scenario_dir}; "
                "fix: name an id from its files"
            )
        if self.ids:
            chosen = [s for s in chosen if s.id in self.ids]
        if self.categories:
            chosen = [s for s in chosen if s.category in self.categories]
        if not chosen:
            raise EvalkitError(
                f"task {self.name!r}: no scenario matches categories={'+'.join(self.categories)}"
            )
        return chosen

    def folder_of(self, scenario: Scenario) -> Path:
        """Where a scenario's user turns are rendered: its id and a digest of everything that shapes
        the audio (the scenario, the affect styles, the voice)."""
        styles = {a: asdict(AFFECT_STYLES[a]) for a in sorted({t.affect for t in scenario.turns})}
        blob = json.dumps([scenario.model_dump(mode="json"), styles, USER_VOICE], sort_keys=True)
        return self.root / f"{scenario.id}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def build_sample(self, scenario: Scenario) -> Sample:
        """One scenario as a sample: user turns by transcript (and, scripted, their rendered audio)."""
        folder = self.folder_of(scenario)
        turns = [
            Turn(
                role="user",
                transcript=line.text,
                audio=None
                if self.live_user_turns
                else AudioRef(path=str(folder / f"t{k:02d}.wav"), sample_rate=RATE_HZ),
            )
            for k, line in enumerate(scenario.turns)
        ]
        reference = scenario.model_dump(
            mode="json", include={"persona", "goal", "facts", "turns", "probes", "instruction", "role"}
        )
        meta = {
            "category": scenario.category,
            "n_turns": len(turns),
            "user": "simulated" if self.live_user_turns else "scripted",
        }
        return Sample(id=scenario.id, task=self.name, conversation=turns, reference=reference, meta=meta)

    def parse(self) -> list[Sample]:
        scenarios = self.scenarios()
        if not self.live_user_turns:
            for scenario in scenarios:
                if not self.folder_of(scenario).is_dir():
                    self._render(scenario)
        return [self.build_sample(s) for s in scenarios]

    def _render(self, scenario: Scenario) -> None:
        """Every user turn of one scenario spoken in its affect, into a temporary folder renamed
        into place at once (a half-rendered scenario is never seen)."""

        def build(tmp: Path) -> None:
            for k, line in enumerate(scenario.turns):
                wav = espeak_affect(line.text, line.affect, USER_VOICE, sample_rate=RATE_HZ)
                (tmp / f"t{k:02d}.wav").write_bytes(wav)

        publish_folder(self.folder_of(scenario), build)

    # -- turns --------------------------------------------------------------------------------------
    def build_request(self, sample: Sample, turn_index: int, history: list[ModelOutput]) -> ChatRequest:
        """System prompt (plus the scenario's role), then each user turn as audio only, each
        followed by the model's own earlier reply (text)."""
        system = SYSTEM_PROMPT
        role = sample.reference.get("role")
        if role:
            system = f"{role['prompt']} {system}"
        messages = [Message(role="system", content=[TextPart(text=system)])]
        for i, turn in enumerate(sample.conversation[: turn_index + 1]):
            if turn.audio is None:
                raise EvalkitError(
                    f"sample {sample.id!r} turn {i} has no audio (long-turn speaks every user turn)"
                )
            messages.append(Message(role="user", content=[AudioPart(audio=turn.audio)]))
            if i < turn_index:
                reply = history[i].text if i < len(history) else ""
                messages.append(Message(role="assistant", content=[TextPart(text=reply or "")]))
        return ChatRequest(messages=messages, params=self.params)

    async def user_turn(
        self, sample: Sample, turn_index: int, history: list[ModelOutput], service: ModelService
    ) -> Turn:
        """Scripted: the pre-rendered turn. Simulated: the user model says the turn's line in its
        own words, the speech model speaks it (audio as bytes; the turn loop saves it)."""
        if not self.live_user_turns:
            return sample.conversation[turn_index]
        from evalkit.tasks.long_turn.simulator import simulate_turn

        said = [t.transcript or "" for t in sample.conversation[:turn_index]]
        replies = [o.text or "" for o in history]
        words, audio = await simulate_turn(
            service,
            service.resolve("user", self.user),
            service.resolve("tts", self.tts),
            sample.reference,
            turn_index,
            said,
            replies,
            task=self.name,
            sample_id=sample.id,
            voice=self.voice or None,
        )
        return Turn(role="user", transcript=words, audio=audio)

    def dataset_info(self) -> dict[str, Any]:
        extra = {"user": self.user or "scripted", **({"tts": self.tts} if self.user else {})}
        return self.generated_dataset_info(VERSION, espeak_version(), self.scenario_dir, **extra)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(user=self.user or "scripted", tts=self.tts if self.user else None)
        return info


@register_task("demo-long-turn")
class DemoLongTurn(LongTurn):
    """One 12-turn scripted long-turn conversation (``make demo``)."""

    name = "demo-long-turn"
    #: short replies keep the 12 turns of ``make demo`` within minutes on two cores (cascade)
    params = GenerationParams(max_tokens=48, temperature=0.0)

    def __init__(self) -> None:
        super().__init__(LongTurnOptions(ids=DEMO_SCENARIO, judges=DEMO_JUDGES))

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> DemoLongTurn:
        if arg:
            raise EvalkitError(
                f"task {cls.name!r} takes no argument, got {arg!r}; use long-turn:... for options"
            )
        return cls()
