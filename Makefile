# hapi: every target a new user or CI needs. Everything runs in a local virtual environment
# (.venv) so that the pinned CPU torch from constraints.txt is what gets used.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
SEED   ?= 0
EXAMPLE := hapi_dse/examples/fashion-mnist

.PHONY: install test test-slow lint typecheck example demo bench docs clean board-check

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "make install: pip installs hapi and its dependencies into $(VENV) (a few minutes the first time)"
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[all,dev,postgres]'
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

# Rebuild the bundled example as shipped: its heads only, on its own backbone (which stays
# bit-identical), then the shipped devices' modelled tables for the new model_id (about
# 20 minutes on 2 cores) in place of the old model's; train.json records how, and the time
# taken is printed.
EXAMPLE_HEADS := linear,conv,mlp,sdn,conv2
SHIPPED_DEVICES := pixel6 raspberry-pi-4 jetson-nano jetson-nano-gpu
SHIPPED := hapi_dse/shipped_profiles
example: install
	start=$$(date +%s) && \
	old=$$($(BIN)/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_id"])' \
		$(EXAMPLE)/model.json) && \
	$(BIN)/hapi train --dataset fashion-mnist --backbone resnet32 --heads $(EXAMPLE_HEADS) \
		--init $(EXAMPLE)/weights.pt --epochs 0 --exit-epochs 10 --threads 2 --seed $(SEED) \
		--out $(EXAMPLE) --overwrite && \
	seg=$$(mktemp -d) && trap 'rm -rf "$$seg"' EXIT && \
	$(BIN)/hapi profile --model $(EXAMPLE) --export-only --export-dir "$$seg/seg" && \
	for d in $(SHIPPED_DEVICES); do \
		$(BIN)/hapi profile --device $$d --modelled --onnx-dir "$$seg/seg" --profiles $(SHIPPED) \
			--seed $(SEED) || exit 1; \
	done && \
	new=$$($(BIN)/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_id"])' \
		$(EXAMPLE)/model.json) && \
	if [ "$$new" != "$$old" ]; then for d in $(SHIPPED_DEVICES); do \
		rm -f $(SHIPPED)/$$d/"$$old".csv $(SHIPPED)/$$d/"$$old".json; done; fi && \
	$(BIN)/python scripts/readme_figures.py && \
	echo "make example: rebuilt in $$(( ($$(date +%s) - start) / 60 )) min $$(( ($$(date +%s) - start) % 60 )) s"

# The README's main command: a search on the bundled example for a Pixel 6.
demo: install
	$(BIN)/hapi search --device pixel6 --slo latency=0.3ms --seed $(SEED) --out runs/demo --overwrite

# The README's Pareto figure: the bundled example searched for a Pixel 6 under a 0.4 ms mean
# latency SLO, with the shipped (modelled) pixel6 table, so it is the same on any machine.
# Dated by the last commit of the example and its tables (SOURCE_DATE_EPOCH): the same inputs
# give the same bytes, so 'make docs' leaves docs/ clean.
docs: install
	export SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct -- hapi_dse/examples \
		hapi_dse/shipped_profiles 2>/dev/null) && \
	$(BIN)/hapi search --device pixel6 --slo latency=0.4ms --seed $(SEED) --out runs/docs/search \
		--overwrite && \
	$(BIN)/hapi plot runs/docs/search --out docs/pareto.png --seed $(SEED)

# Each benchmark's JSON line is kept under docs/bench/; the README's table is made from them.
bench: install
	$(BIN)/python scripts/bench_profile.py --record docs/bench/profile.json
	$(BIN)/python scripts/bench_search.py --record docs/bench/search.json
	$(BIN)/python scripts/bench_export.py --record docs/bench/export.json
	$(BIN)/python scripts/bench_devices.py --record docs/bench/devices.json
	$(BIN)/python scripts/readme_figures.py

# The README's board recipe on an arm64 Debian userland under qemu-user emulation (root, a
# Debian host): the wheel's base install profiles, lists and evaluates there.
board-check: install
	PYTHON=$(BIN)/python bash scripts/board_check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
