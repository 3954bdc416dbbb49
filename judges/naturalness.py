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

The models load once per process (the judge runs in the runner's process pool, one load per
worker) and use as many intra-op threads as torch is set to (``torch.set_num_threads``), so one
setting bounds both the torch and the ONNX model.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evalkit import audio as audio_io
from evalkit.compat import torchaudio_stand_in
from evalkit.judges.base import Judge
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge

if TYPE_CHECKING:
    import torch

RATE_HZ = 16000
DNSMOS_KEYS = {"dnsmos_ovrl": "ovrl_mos", "dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos"}
METRICS = ("distillmos", *DNSMOS_KEYS)

_distillmos: torch.nn.Module | None = None
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


def distillmos_model() -> torch.nn.Module:
    """The DistillMOS model, loaded once per process (its constructor prints; kept off stdout)."""
    global _distillmos
    if _distillmos is None:
        model_cls = _distillmos_class()
        with contextlib.redirect_stdout(io.StringIO()):
            model = model_cls()
        model.eval()
        _distillmos = model
    return _distillmos


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


def score_clip(samples: np.ndarray) -> dict[str, float]:
    """Both predictors on one 16 kHz mono clip."""
    import torch

    # DNSMOS rejects values outside [-1, 1]; float WAVs may overshoot slightly
    samples = np.clip(samples, -1.0, 1.0).astype(np.float32)
    with torch.inference_mode():
        distill = float(distillmos_model()(torch.from_numpy(samples)[None, :]).item())
    dns = dnsmos_model()(samples, RATE_HZ, False)
    row = {"distillmos": distill, **{k: float(dns[v]) for k, v in DNSMOS_KEYS.items()}}
    row["dnsmos_p808"] = float(dns["p808_mos"])
    return row


@register_judge("naturalness")
class NaturalnessJudge(Judge):
    """Predicted MOS of each spoken reply: DistillMOS and DNSMOS (ovrl, sig, bak)."""

    name = "naturalness"
    cpu_heavy = True

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        rows: list[dict[str, Any]] = []
        skipped: list[int] = []
        for turn, output in enumerate(outputs):
            if output.audio is None:
                skipped.append(turn)
                continue
            samples, _ = audio_io.load(output.audio, sample_rate=RATE_HZ)  # AudioError -> judge error
            rows.append({"turn": turn, "seconds": round(len(samples) / RATE_HZ, 3), **score_clip(samples)})
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
