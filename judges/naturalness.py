"""``naturalness``: how natural and clean the model's speech sounds, as predicted mean opinion scores.

Two reference-free MOS predictors, both shipping their weights inside their PyPI wheels (no
download at run time), run on every spoken reply (16 kHz mono):

- DistillMOS (``distillmos``, Stahl & Gamper 2025): a small CNN+transformer distilled from an
  XLS-R quality model; one overall MOS in 1..5.
- DNSMOS P.835 (``speechmos``, Microsoft's ONNX models): ``ovrl`` (overall), ``sig`` (the speech
  itself) and ``bak`` (background noise: lower = noisier) in 1..5, plus P.808 overall in details.

Metrics are means over the spoken turns; ``details["per_turn"]`` has every turn's numbers. (Not
``details["turns"]``: summary.json reads that key as per-turn correctness.) A reply without audio
is listed as skipped; a sample with no spoken reply at all gets no metrics (None: not applicable).
Both predictors were trained on human speech, so on synthetic speech their absolute values mean
little; differences between conditions (clean vs noisy, model A vs B) are what they are for.

The models load once per process and use as many intra-op threads as torch is set to
(``torch.set_num_threads``), so one setting bounds both the torch and the ONNX model. DistillMOS
runs on the ``device`` option (default ``EVALKIT_JUDGE_DEVICE``, else cuda when torch sees a GPU:
``evalkit.batching.judge_device``); DNSMOS stays on onnxruntime's
CPU provider (the PyPI onnxruntime is CPU-only).

Batching (``batch_size``: the runner feeds the judge through a micro-batcher): both predictors cut
every clip into fixed windows themselves (DistillMOS: 7.68 s crops, a shorter clip zero-padded to
one crop; DNSMOS: 9.01 s windows at 1 s hops, a shorter clip repeated to length), score each
window independently and average per clip. ``score_clips`` reproduces exactly those windows,
stacks the windows of all clips of a batch into batched forward passes, and averages per clip; so
no padding is added beyond what a clip scored alone gets, and a batch differs from single clips
only by floating-point effects of batched kernels (tested: within 1e-4 on CPU; reference: the
libraries' own per-clip calls). A sample scored alone goes through the same code.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evalkit import audio as audio_io
from evalkit.batching import JUDGE_DEVICE_ENV, judge_device
from evalkit.compat import torchaudio_stand_in
from evalkit.judges.base import (
    BatchedModelJudge,
    JudgeDevice,
    JudgeItem,
    JudgeOptions,
    MetricSpec,
    build_options,
)
from evalkit.records import ModelOutput, Score
from evalkit.registry import register_judge
from evalkit.specs import env_field

if TYPE_CHECKING:
    import torch

RATE_HZ = 16000
DNSMOS_KEYS = {"dnsmos_ovrl": "ovrl_mos", "dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos"}
METRICS = ("distillmos", *DNSMOS_KEYS)
#: DistillMOS crops per forward pass by device (bounds memory: about 250 MB per crop on CPU;
#: results do not depend on it beyond float effects)
DISTILLMOS_WINDOWS_PER_CALL = {"cpu": 8, "cuda": 64}
DNSMOS_WINDOWS_PER_CALL = 32

#: the DistillMOS model per effective device
_distillmos: dict[str, torch.nn.Module] = {}
_dnsmos: Any = None


def _distillmos_class() -> type:
    """``distillmos.ConvTransformerSQAModel`` without requiring a working torchaudio.

    ``distillmos/sqa.py`` imports torchaudio at module top but uses it only in its command-line
    path (``torchaudio.load`` and ``Resample`` to read files); the model itself is plain torch, and
    its other import (``xls_r_sqa.sqa_model``) never touches torchaudio (``xls_r_sqa.e2e_model``,
    which imports ``torchaudio.transforms.MFCC``, is not on this path). The torchaudio wheel on
    PyPI is a CUDA build that raises OSError when imported next to CPU torch. So: if the real
    torchaudio imports, use it; otherwise put a placeholder module in ``sys.modules`` for exactly
    the duration of importing ``distillmos`` and remove it right after (``evalkit.compat``), so
    nothing else in the process ever sees it. The module keeps its reference to the placeholder,
    which raises if the CLI path is ever called. (Failed torchaudio imports leave a few of its
    private submodules in ``sys.modules``; they are inert.)
    """
    with torchaudio_stand_in():
        from distillmos.sqa import ConvTransformerSQAModel

    return ConvTransformerSQAModel


def distillmos_model(device: str | None = None) -> torch.nn.Module:
    """The DistillMOS model, loaded once per process and device (``device``: the judge's option,
    resolved by ``judge_device``; its constructor prints, kept off stdout). Built with
    ``segmenting_in_forward=False``: ``distillmos_windows`` cuts the clips, so that windows of many
    clips can share one forward pass."""
    effective = judge_device("torch", device)
    if effective not in _distillmos:
        model_cls = _distillmos_class()
        with contextlib.redirect_stdout(io.StringIO()):
            model = model_cls(segmenting_in_forward=False)
        model.eval()
        _distillmos[effective] = model.to(effective)
    return _distillmos[effective]


def distillmos_windows(samples: np.ndarray) -> np.ndarray:
    """The crops ``ConvTransformerSQAModel.forward`` (segmenting_in_forward=True) scores for one
    clip, shape (crops, SEQ_LEN): a clip shorter than SEQ_LEN zero-padded at the end, a longer one
    cropped at ``ceil(overlength / MAX_HOP_LEN) + 1`` evenly spaced starts. Same arithmetic."""
    from distillmos.sqa import MAX_HOP_LEN, SEQ_LEN

    overlength = len(samples) - SEQ_LEN
    if overlength < 0:
        samples = np.pad(samples, (0, -overlength))
        overlength = 0
    hops = int(np.ceil(overlength / MAX_HOP_LEN)) + 1
    return np.stack(
        [samples[int(c * overlength) : int(c * overlength) + SEQ_LEN] for c in np.linspace(0, 1, hops)]
    )


def distillmos_scores(clips: list[np.ndarray], device: str | None = None) -> list[float]:
    """DistillMOS of each clip: its crops' scores averaged, crops of all clips batched."""
    import torch

    model = distillmos_model(device)
    device = next(model.parameters()).device
    windows = [distillmos_windows(c) for c in clips]
    stacked = np.concatenate(windows).astype(np.float32)
    scores: list[np.ndarray] = []
    with torch.inference_mode():
        step = DISTILLMOS_WINDOWS_PER_CALL.get(device.type, 8)
        for start in range(0, len(stacked), step):
            batch = torch.from_numpy(stacked[start : start + step]).to(device)
            scores.append(model(batch).reshape(-1).float().cpu().numpy())
    flat = np.concatenate(scores)
    bounds = np.cumsum([0, *(len(w) for w in windows)])
    # the library averages in torch float32 (torch.mean over the crops): same here
    return [float(torch.from_numpy(flat[a:b]).mean()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def dnsmos_model() -> Any:
    """speechmos's DNSMOS scorer with thread-bounded ONNX sessions, built once per process.

    ``speechmos.dnsmos.run`` builds its sessions with onnxruntime's default thread pool (every
    core) and ignores torch's setting; in a pool of judge workers that oversubscribes the CPU. We
    reuse its ``DNSMOS`` scoring code and only build the two sessions ourselves.
    """
    global _dnsmos
    if _dnsmos is None:
        import onnxruntime as ort
        import torch
        from speechmos import dnsmos

        models = Path(dnsmos.__file__).parent / "dnsmos_models"
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1

        class BoundedDNSMOS(dnsmos.DNSMOS):
            def __init__(self, primary: Path, p808: Path) -> None:
                providers = ["CPUExecutionProvider"]
                self.primary_model_path = str(primary)
                self.onnx_sess = ort.InferenceSession(str(primary), options, providers=providers)
                self.p808_onnx_sess = ort.InferenceSession(str(p808), options, providers=providers)

        _dnsmos = BoundedDNSMOS(models / "sig_bak_ovr.onnx", models / "model_v8.onnx")
    return _dnsmos


def dnsmos_scores(clips: list[np.ndarray]) -> list[dict[str, float]]:
    """DNSMOS P.835 and P.808 of each clip, with ``speechmos.dnsmos.DNSMOS.__call__``'s windowing
    (repeat a short clip to 9.01 s, 9.01 s windows at 1 s hops, polynomial fit per window, mean
    per clip: quirks included, e.g. a clip of 9.01..10 s has no full window and scores NaN as in
    speechmos), and the windows of all clips run through each ONNX model in batched calls."""
    from speechmos.dnsmos import INPUT_LENGTH

    scorer = dnsmos_model()
    fs = RATE_HZ
    width = int(INPUT_LENGTH * fs)
    raw_windows: list[np.ndarray] = []
    mel_windows: list[np.ndarray] = []
    owner: list[int] = []
    for i, audio in enumerate(clips):
        if len(audio) == 0:
            raise ValueError("empty clip: DNSMOS needs at least one sample")
        while len(audio) < width:
            audio = np.append(audio, audio)
        for idx in range(int(np.floor(len(audio) / fs) - INPUT_LENGTH) + 1):
            segment = audio[int(idx * fs) : int((idx + INPUT_LENGTH) * fs)]
            if len(segment) < width:
                continue
            raw_windows.append(np.asarray(segment, dtype=np.float32))
            mel_windows.append(np.asarray(scorer.audio_melspec(audio=segment[:-160]), dtype=np.float32))
            owner.append(i)
    p835: list[np.ndarray] = []
    p808: list[np.ndarray] = []
    for start in range(0, len(raw_windows), DNSMOS_WINDOWS_PER_CALL):
        stop = start + DNSMOS_WINDOWS_PER_CALL
        p835.append(scorer.onnx_sess.run(None, {"input_1": np.stack(raw_windows[start:stop])})[0])
        p808.append(scorer.p808_onnx_sess.run(None, {"input_1": np.stack(mel_windows[start:stop])})[0][:, 0])
    raw = np.concatenate(p835) if p835 else np.zeros((0, 3), np.float32)
    p808_all = np.concatenate(p808) if p808 else np.zeros(0, np.float32)
    sig, bak, ovr = scorer.get_polyfit_val(raw[:, 0], raw[:, 1], raw[:, 2], False)
    owners = np.asarray(owner, dtype=int)
    rows: list[dict[str, float]] = []
    for i in range(len(clips)):
        mine = owners == i
        if not mine.any():  # speechmos: np.mean of no windows (NaN), without its RuntimeWarning
            rows.append(
                {
                    "ovrl_mos": float("nan"),
                    "sig_mos": float("nan"),
                    "bak_mos": float("nan"),
                    "p808_mos": float("nan"),
                }
            )
            continue
        rows.append(
            {
                "ovrl_mos": float(np.mean(list(ovr[mine]))),
                "sig_mos": float(np.mean(list(sig[mine]))),
                "bak_mos": float(np.mean(list(bak[mine]))),
                "p808_mos": float(np.mean(list(p808_all[mine]))),
            }
        )
    return rows


def score_clips(clips: list[np.ndarray], device: str | None = None) -> list[dict[str, float]]:
    """Both predictors on 16 kHz mono clips, batched across clips (DistillMOS on ``device``)."""
    # DNSMOS rejects values outside [-1, 1]; float WAVs may overshoot slightly
    clips = [np.clip(c, -1.0, 1.0).astype(np.float32) for c in clips]
    if not clips:
        return []
    distill = distillmos_scores(clips, device)
    rows = []
    for d, dns in zip(distill, dnsmos_scores(clips), strict=True):
        row = {"distillmos": d, **{k: float(dns[v]) for k, v in DNSMOS_KEYS.items()}}
        row["dnsmos_p808"] = float(dns["p808_mos"])
        rows.append(row)
    return rows


def score_clip(samples: np.ndarray) -> dict[str, float]:
    """Both predictors on one 16 kHz mono clip."""
    return score_clips([samples])[0]


class NaturalnessOptions(JudgeOptions):
    """The naturalness judge's settings: where DistillMOS runs (default ``EVALKIT_JUDGE_DEVICE``)."""

    device: JudgeDevice = env_field(JUDGE_DEVICE_ENV, "auto")


@register_judge("naturalness")
class NaturalnessJudge(BatchedModelJudge):
    """Predicted MOS of each spoken reply: DistillMOS and DNSMOS (ovrl, sig, bak)."""

    name = "naturalness"
    needs_speech = True
    metrics = (
        MetricSpec(
            name="distillmos",
            direction="higher",
            unit="MOS",
            range=(1.0, 5.0),
            description="DistillMOS predicted mean opinion score, mean over the spoken turns",
        ),
        *(
            MetricSpec(
                name=key,
                direction="higher",
                unit="MOS",
                range=(1.0, 5.0),
                description=f"DNSMOS P.835 {part} MOS, mean over the spoken turns",
            )
            for key, part in zip(DNSMOS_KEYS, ("overall", "signal", "background"), strict=True)
        ),
    )
    execution = "batched"
    batch_size = 8

    Options = NaturalnessOptions

    def __init__(self, device: str | None = None):
        self.options: NaturalnessOptions = build_options(NaturalnessOptions, self.name, device=device)

    def describe(self) -> dict[str, Any]:
        device = judge_device("torch", self.options.device)
        return {**super().describe(), "distillmos_device": device, "dnsmos_device": "cpu"}

    def _score_items(self, items: list[JudgeItem]) -> list[Score | Exception]:
        """Each item's score or the exception that stops it (unreadable audio); the clips of all
        items that can be scored share batched forward passes."""
        loaded: list[tuple[list[tuple[int, np.ndarray]], list[int]] | Exception] = []
        for _sample, outputs in items:
            try:
                loaded.append(self._clips(outputs))
            except Exception as exc:  # this item's failure: returned as its result
                loaded.append(exc)
        clips = [clip for item in loaded if not isinstance(item, Exception) for _, clip in item[0]]
        scored = iter(score_clips(clips, self.options.device))
        results: list[Score | Exception] = []
        for item in loaded:
            if isinstance(item, Exception):
                results.append(item)
                continue
            turns, skipped = item
            rows = [
                {"turn": turn, "seconds": round(len(clip) / RATE_HZ, 3), **next(scored)}
                for turn, clip in turns
            ]
            results.append(self._summarise(rows, skipped))
        return results

    @staticmethod
    def _clips(outputs: list[ModelOutput]) -> tuple[list[tuple[int, np.ndarray]], list[int]]:
        """(turn, 16 kHz clip) of every spoken turn and the turns without speech."""
        turns: list[tuple[int, np.ndarray]] = []
        skipped: list[int] = []
        for turn, output in enumerate(outputs):
            if output.audio is None:
                skipped.append(turn)
                continue
            samples, _ = audio_io.load(output.audio, sample_rate=RATE_HZ)  # AudioError -> judge error
            if len(samples) == 0:
                raise ValueError(f"turn {turn}: the model's speech is empty (0 samples)")
            turns.append((turn, samples))
        return turns, skipped

    def _summarise(self, rows: list[dict[str, Any]], skipped: list[int]) -> Score:
        if not rows:
            return Score(
                judge=self.name,
                metrics=dict.fromkeys(METRICS),
                explanation="the model produced no speech to rate",
                details={"skipped_turns": skipped},
            )
        metrics = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
        return Score(
            judge=self.name,
            metrics=metrics,
            explanation=(
                f"DistillMOS {metrics['distillmos']:.2f}, DNSMOS ovrl {metrics['dnsmos_ovrl']:.2f} "
                f"(sig {metrics['dnsmos_sig']:.2f}, bak {metrics['dnsmos_bak']:.2f}) over {len(rows)} turn(s)"
            ),
            details={"per_turn": rows, "skipped_turns": skipped},
        )
