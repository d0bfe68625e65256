# hapi: every target a new user or CI needs. Everything runs in a local virtual environment
# (.venv) so that the pinned CPU torch from constraints.txt is what gets used.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
SEED   ?= 0
EXAMPLE := hapi_dse/examples/fashion-mnist

.PHONY: install test test-slow lint typecheck example demo bench docs clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,postgres]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy hapi_dse

# Rebuild the bundled example (about 30 minutes on 2 cores); train.json records how.
example: install
	$(BIN)/hapi train --dataset fashion-mnist --backbone resnet32 --heads linear,conv,mlp \
		--epochs 20 --exit-epochs 8 --threads 2 --seed $(SEED) --out $(EXAMPLE) --overwrite
	@# new weights, new model_id: model the shipped devices' tables for it (git rm the old ones)
	seg=$$(mktemp -d) && trap 'rm -rf "$$seg"' EXIT && \
	$(BIN)/hapi profile --model $(EXAMPLE) --export-only --export-dir "$$seg/seg" && \
	for d in pixel6 raspberry-pi-4 jetson-nano; do \
		$(BIN)/hapi profile --device $$d --modelled --onnx-dir "$$seg/seg" --profiles profiles \
			--seed $(SEED) || exit 1; \
	done

# The README's main command: a search on the bundled example for a Pixel 6.
demo: install
	$(BIN)/hapi search --device pixel6 --slo latency=50ms --seed $(SEED) --out runs/demo --overwrite

# The README's Pareto figure: the bundled example searched for a Pixel 6 under a 0.4 ms mean
# latency SLO, with the shipped (modelled) pixel6 table, so it is the same on any machine.
docs: install
	$(BIN)/hapi search --device pixel6 --slo latency=0.4ms --seed $(SEED) --out runs/docs/search \
		--overwrite
	$(BIN)/hapi plot runs/docs/search --out docs/pareto.png --seed $(SEED)

bench: install
	$(BIN)/python scripts/bench_profile.py
	$(BIN)/python scripts/bench_search.py
	$(BIN)/python scripts/bench_export.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
