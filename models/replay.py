"""``replay``: a model that answers by playing back replies rendered in advance.

Its purpose is to test the speech judges and the whole pipeline (runner -> judges -> summary ->
report) on replies whose properties are known by construction: the ``demo-speech`` task renders a
flat, an expressive, a noisy ... reply for each user turn, and ``--model replay`` plays them back,
so a judge that cannot tell them apart is visibly wrong.

How a reply is found. An adapter sees only the ``ChatRequest``, not the sample, and the runner
overwrites per-request generation parameters with the task's, so the key must travel in the
messages themselves. It travels inside the user's audio file: the task writes each user clip with a
RIFF ``INFO/ICMT`` comment ``evalkit-replay:<sidecar> sha256=<hex>`` naming a JSON sidecar in the
same folder (``{"text": ..., "audio": <wav file>, "audio_sha256": ...}``) and the digest of that
sidecar. This keeps three properties:

- no model hears it: adapters decode the samples (or re-encode to plain WAV) and never read
  metadata, so ``--model cascade`` or an API model on the same task is unaffected;
- the response cache stays correct: the cache key hashes the user clip's *bytes*, comment
  included, so a re-rendered reply (new sidecar digest) is a new request, and two variants whose
  users say the same words are still different requests;
- a stale or edited sidecar is refused (digest mismatch), never silently replayed.

The reply to a request is the one keyed by the *last* user message: the turn being answered.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from evalkit.errors import EvalkitError, ModelError
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.records import AudioPart, AudioRef, ChatRequest, ModelOutput
from evalkit.registry import register_model

TAG = "evalkit-replay:"


def replay_comment(sidecar_name: str, sidecar_bytes: bytes) -> str:
    """The comment a user clip carries to name its reply (see the module docstring)."""
    return f"{TAG}{sidecar_name} sha256={hashlib.sha256(sidecar_bytes).hexdigest()}"


def sidecar_bytes(text: str, audio_name: str, audio_bytes: bytes) -> bytes:
    """The JSON sidecar describing one reply, serialised canonically so its digest is stable."""
    body = {"text": text, "audio": audio_name, "audio_sha256": hashlib.sha256(audio_bytes).hexdigest()}
    return json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")


def wav_with_comment(samples: np.ndarray, sample_rate: int, comment: str) -> bytes:
    """16-bit mono WAV whose LIST/INFO chunk holds ``comment`` (what ``read_comment`` reads back)."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sample_rate, 1, format="WAV", subtype="PCM_16") as fh:
        fh.comment = comment
        fh.write(samples)
    return buf.getvalue()


def read_comment(ref: AudioRef) -> str | None:
    """The INFO comment of an encoded clip, or None when it has none (raises on undecodable audio)."""
    with sf.SoundFile(io.BytesIO(ref.read_bytes())) as fh:
        return fh.comment or None


@register_model("replay")
class ReplayAdapter(ModelAdapter):
    """Plays back pre-rendered spoken replies named by the user clip (tasks: demo-speech)."""

    spec = "replay"
    capabilities = Capabilities(audio_in=True, audio_out=True, multi_turn=True, batching=False)

    #: its replies are the files of the request itself (their digests are in every cache key)
    pinned_revision = "replay"

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> ReplayAdapter:
        if arg:
            raise EvalkitError(f"model 'replay' takes no argument, got {arg!r}; use --model replay")
        return cls()

    async def generate(self, request: ChatRequest) -> ModelOutput:
        started = time.perf_counter()
        user = [m for m in request.messages if m.role == "user"]
        if not user:
            raise ModelError("no_replay", "replay: the request has no user message", transient=False)
        clips = [p.audio for p in user[-1].content if isinstance(p, AudioPart)]
        for clip in clips:
            comment = read_comment(clip)
            if comment is not None and comment.startswith(TAG):
                text, audio = self._resolve(clip, comment)
                elapsed = time.perf_counter() - started
                return ModelOutput(
                    text=text,
                    audio=audio,
                    model="replay",
                    finish_reason="stop",  # a pre-rendered reply is complete
                    trace={"replay": comment.removeprefix(TAG).split(" ")[0]},
                    timing={"total": elapsed},
                )
        raise ModelError(
            "no_replay",
            "replay: the turn being answered carries no pre-rendered reply; the replay model only "
            "answers tasks that ship replies (e.g. demo-speech)",
            transient=False,
        )

    @staticmethod
    def _resolve(clip: AudioRef, comment: str) -> tuple[str, AudioRef]:
        """Find, verify and read the reply a user clip names."""
        name, _, digest_field = comment.removeprefix(TAG).partition(" sha256=")
        if clip.path is None:
            raise ModelError(
                "no_replay", "replay: the user clip is in memory, so its reply sidecar cannot be found", False
            )
        sidecar = Path(clip.path).parent / name
        try:
            raw = sidecar.read_bytes()
        except OSError as exc:
            raise ModelError("no_replay", f"replay: cannot read {sidecar} ({exc.strerror})", False) from None
        if hashlib.sha256(raw).hexdigest() != digest_field:
            raise ModelError(
                "no_replay", f"replay: {sidecar} does not match the clip that names it (re-render it)", False
            )
        body = json.loads(raw)
        audio_path = sidecar.parent / body["audio"]
        try:
            audio_bytes = audio_path.read_bytes()
        except OSError as exc:
            raise ModelError(
                "no_replay", f"replay: cannot read {audio_path} ({exc.strerror})", False
            ) from None
        if hashlib.sha256(audio_bytes).hexdigest() != body["audio_sha256"]:
            raise ModelError(
                "no_replay",
                f"replay: {audio_path} changed since its sidecar was written (re-render it)",
                False,
            )
        return body["text"], AudioRef(path=str(audio_path), sample_rate=sf.info(str(audio_path)).samplerate)
