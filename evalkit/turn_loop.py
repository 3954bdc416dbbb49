"""One sample's conversation, turn by turn, asked of the model under test (role ``target`` of the
run's model service, ``evalkit.service``).

A later turn needs the model's earlier replies, so a sample's turns run in order; samples run
concurrently (the runner's workers). Each turn: the task builds the request (its audio confined,
``evalkit.confine``), the run's generation settings are applied (command line > model card > task
> defaults, ``evalkit.generation``), the service answers it (cache, endpoint bound, retries,
deadlines, secrets scrubbed), the audio the model spoke is saved, and the turn is appended to
responses.jsonl at once. Turns a resumed run already holds are reused, never asked again.

Bad input (unreadable audio, a path outside the allowed roots, a task's own one-line error) and
adapter bugs become error records of that turn, never a crashed run; an adapter bug's traceback
goes to ``errors.log``. A failed turn ends the sample's conversation: the judges record it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.audio import AudioError
from evalkit.clips import ObjectMemo
from evalkit.confine import INPUT_PATH_KIND, PathEscapeError
from evalkit.errors import EvalkitError, UserTurnError
from evalkit.generation import resolve_generation
from evalkit.manifest import now_iso
from evalkit.records import (
    AudioRef,
    ErrorInfo,
    GenerationParams,
    ModelOutput,
    ResponseRecord,
    Sample,
    Turn,
    TurnInput,
)
from evalkit.service import CallResult, ModelService, RoleModel
from evalkit.store import RunStore
from evalkit.tasks.base import Task

#: input errors a turn records instead of asking the model: exception type -> ErrorInfo.kind
INPUT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (AudioError, "input_audio"),
    (PathEscapeError, INPUT_PATH_KIND),  # never read: evalkit.confine
    (UserTurnError, "user_turn"),  # a simulator or speech model failed (Task.live_user_turns)
    (EvalkitError, "input"),
)


@dataclass
class AnsweredSample:
    """A sample's answered turns (audio paths absolute), and the turn that failed, if one did.
    ``played`` is the conversation as the model heard it: for a task with live user turns
    (``Task.live_user_turns``), each user turn as it was said, its audio as bytes; ``heard`` maps
    those turns to their audio in the run directory (relative paths)."""

    outputs: list[ModelOutput]
    played: Sample
    failure: ModelOutput | None = None
    failed_turn: int = -1
    heard: dict[int, str] = field(default_factory=dict)

    def judged_sample(self, root: Path) -> Sample:
        """What the judges read: the played conversation, live user turns by their absolute path
        in the run directory (a judge in another process gets a path, not megabytes of bytes)."""
        if not self.heard:
            return self.played
        turns = list(self.played.conversation)
        for i, rel in self.heard.items():
            audio = AudioRef(
                path=str(root / rel), sample_rate=turns[i].audio.sample_rate if turns[i].audio else None
            )
            turns[i] = turns[i].model_copy(update={"audio": audio})
        return self.played.model_copy(update={"conversation": turns})


@dataclass(frozen=True)
class CliGeneration:
    """The generation settings given on the command line (None: not given) and the run's seed."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int = 0

    @classmethod
    def of(cls, config: Any) -> CliGeneration:
        return cls(config.max_tokens, config.temperature, config.top_p, config.seed)


class TurnLoop:
    """Answers samples' turns through the service and writes them to the run directory."""

    def __init__(
        self,
        service: ModelService,
        target: RoleModel,
        store: RunStore,
        done: dict[tuple[str, str], dict[int, ModelOutput]],
        cli: CliGeneration,
        inputs: dict[tuple[str, str], dict[int, TurnInput]] | None = None,
    ):
        self.service = service
        self.target = target
        self.store = store
        #: (task, sample id) -> turn -> output a resumed run already holds
        self.done = done
        #: (task, sample id) -> turn -> the live user turn a resumed run already holds
        self.inputs = inputs or {}
        self.cli = cli
        #: called with (task name, fresh) for every turn of a sample: answered now, or found done
        #: in the resumed run (the progress rows of multi-turn tasks count turns)
        self.on_turn: Callable[[str, bool], None] = lambda task, fresh: None
        self._params: dict[str, GenerationParams] = {}
        #: each sample confined once for all its turns (its clips, the same objects every turn, are
        #: hashed and encoded once: ``evalkit.clips``), dropped with the sample
        self._confined = ObjectMemo()
        #: per task, each resolved generation setting with its source (manifest["generation"])
        self.generation: dict[str, dict[str, dict[str, Any]]] = {}

    # -- requests -----------------------------------------------------------------------------------
    def params_for(self, task: Task) -> GenerationParams:
        """The task's requests' parameters: command line > model card > task > defaults
        (``evalkit.generation``), with the run's seed; computed once per task, sources kept."""
        params = self._params.get(task.name)
        if params is None:
            cli = {
                "max_tokens": self.cli.max_tokens,
                "temperature": self.cli.temperature,
                "top_p": self.cli.top_p,
            }
            card = self.target.adapter.describe().get("generation_defaults", {})
            params, sources = resolve_generation(task.params, card, cli, self.cli.seed)
            self._params[task.name] = params
            self.generation[task.name] = sources
        return params

    def confined(self, task: Task, sample: Sample) -> Sample:
        """The sample with its audio confined (``Task.confine_sample``; raises ``PathEscapeError``),
        made once per sample object for samples.jsonl and every turn, and dropped with it. A sample
        that needs no change is its own confined form: the memo then keeps None, never the sample
        itself (a memo holding its own key would keep every sample, and its clips' encodings, alive)."""

        def made() -> Sample | None:
            confined = task.confine_sample(sample)
            return None if confined is sample else confined

        kept = self._confined.get(sample, task.name, made)
        return sample if kept is None else kept

    async def answer_turn(
        self, task: Task, sample: Sample, turn_index: int, history: list[ModelOutput]
    ) -> CallResult:
        """One turn: build, hash, ask. Bad input and adapter bugs come back as error outputs."""
        request_hash = ""
        try:
            request = task.build_request(self.confined(task, sample), turn_index, history)
            request = request.model_copy(update={"params": self.params_for(task)})
            request_hash = self.target.request_hash(request)
            return await self.service.call(
                self.target, request, task=task.name, sample_id=sample.id, request_hash=request_hash
            )
        except Exception as exc:
            return CallResult(self._error_output(task, sample, exc), request_hash)

    def _error_output(self, task: Task, sample: Sample, exc: Exception) -> ModelOutput:
        """The turn's error record: bad input by its kind, anything else an internal error whose
        traceback goes to errors.log (an adapter bug must not sink hours of results)."""
        for kind_of, kind in INPUT_ERRORS:
            if isinstance(exc, kind_of):
                return ModelOutput(error=ErrorInfo(kind=kind, message=str(exc)))
        with open(self.store.root / "errors.log", "a", encoding="utf-8") as fh:
            fh.write(f"--- {now_iso()} task={task.name} sample={sample.id}\n")
            fh.write("".join(traceback.format_exception(exc)))
        message = f"{type(exc).__name__}: {exc} (traceback in errors.log)"
        return ModelOutput(error=ErrorInfo(kind="internal", message=message))

    # -- samples ------------------------------------------------------------------------------------
    async def answer_sample(self, task: Task, index: int, sample: Sample) -> AnsweredSample:
        """Every turn the task answers, in order, each appended to responses.jsonl as it comes;
        stops at the first failed turn."""
        done = self.done.get((task.name, sample.id), {})
        answered = AnsweredSample(outputs=[], played=sample)
        for k, turn_index in enumerate(task.answer_turns(sample)):
            if task.live_user_turns and not await self.live_user_turn(task, index, answered, k, turn_index):
                break
            if k in done:
                answered.outputs.append(self.store.with_absolute_audio(done[k]))
                self.on_turn(task.name, False)
                continue
            result = await self.answer_turn(task, answered.played, turn_index, answered.outputs)
            output = self.store.save_output_audio(task.name, sample.id, k, result.output)
            said = answered.played.conversation[turn_index]
            self.store.append_response(
                ResponseRecord(
                    task=task.name,
                    sample_id=sample.id,
                    sample_index=index,
                    turn=k,
                    request_hash=result.request_hash,
                    cached=result.cached,
                    cached_from=result.cached_from,
                    output=output,
                    input=TurnInput(
                        text=said.text,
                        transcript=said.transcript,
                        audio_path=answered.heard.get(turn_index)
                        or (said.audio.path if said.audio is not None else None),
                    ),
                )
            )
            self.on_turn(task.name, True)
            if not output.ok:
                answered.failure, answered.failed_turn = output, k
                break
            answered.outputs.append(self.store.with_absolute_audio(output))
        return answered

    async def live_user_turn(
        self, task: Task, index: int, answered: AnsweredSample, k: int, turn_index: int
    ) -> bool:
        """Put the user turn made at run time into ``answered.played``: the one a resumed run
        recorded (never asked again), else the task's (``Task.user_turn``: a simulator and a speech
        model), its audio saved under ``audio/``. A turn that cannot be made is recorded as the
        failed turn (False): the conversation ends there, as after a failed model turn."""
        played = answered.played
        recorded = self.inputs.get((task.name, played.id), {}).get(k)
        try:
            if recorded is not None and recorded.audio_path:
                rel = recorded.audio_path
                turn = Turn(
                    role="user",
                    text=recorded.text,
                    transcript=recorded.transcript,
                    audio=self.store.recorded_user_audio(rel),
                )
            else:
                turn = await task.user_turn(played, turn_index, answered.outputs, self.service)
                if turn.audio is None:
                    raise UserTurnError(
                        f"task {task.name!r} made user turn {k} of {played.id!r} without audio"
                    )
                rel = self.store.save_user_audio(task.name, played.id, k, turn.audio)
                turn = turn.model_copy(update={"audio": AudioRef(data=turn.audio.read_bytes())})
        except Exception as exc:
            output = self._error_output(task, played, exc)
            self.store.append_response(
                ResponseRecord(
                    task=task.name,
                    sample_id=played.id,
                    sample_index=index,
                    turn=k,
                    request_hash="",
                    output=output,
                )
            )
            self.on_turn(task.name, True)
            answered.failure, answered.failed_turn = output, k
            return False
        turns = list(played.conversation)
        turns[turn_index] = turn
        answered.played = played.model_copy(update={"conversation": turns})
        answered.heard[turn_index] = rel
        return True
