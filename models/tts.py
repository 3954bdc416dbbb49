"""Text-to-speech through espeak-ng (a Debian package, called as a program: no Python binding,
no GPL code linked). Used by the cascade model to answer in speech and by the demo tasks to
synthesise their questions, so both sound alike and are deterministic for a given espeak-ng."""

from __future__ import annotations

import shutil
import subprocess

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError
from evalkit.records import AudioRef

DEFAULT_RATE_HZ = 16000


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EvalkitError(
            "espeak-ng is not installed (needed for synthesised speech): run `apt-get install espeak-ng` "
            "or `make setup`"
        )
    return path


def espeak_version() -> str:
    proc = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def espeak(
    text: str, voice: str = "en-us", wpm: int = 160, gap: int = 0, sample_rate: int = DEFAULT_RATE_HZ
) -> bytes:
    """Speak ``text``; returns mono 16-bit WAV bytes at ``sample_rate``. ``gap`` adds pauses between
    words (units of 10 ms at normal speed), which makes espeak-ng markedly easier to recognise."""
    if not text.strip():
        raise EvalkitError("nothing to speak: empty text")
    proc = subprocess.run(
        [espeak_binary(), "-v", voice, "-s", str(wpm), "-g", str(gap), "--stdout", text],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise EvalkitError(
            f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}"
        )
    samples, rate = audio_io.load(AudioRef(data=proc.stdout), sample_rate=sample_rate)
    return audio_io.wav_bytes(samples, rate)
