# adasparse: two commands on a fresh machine.
#   make demo   set up .venv if needed, then run the main job
#   make test   set up .venv if needed, then lint (ruff) and run the test suite (pytest)
# TORCH picks the PyTorch requirement (default: the pinned CPU-friendly 2.13.0),
# e.g. `make test TORCH=torch==2.5.1`. EXTRAS picks the optional extras installed.

PYTHON ?= python3
TORCH  ?= torch==2.13.0
EXTRAS ?= toolkit,demo,dev,hf,gpu
comma  := ,
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(subst =,_,$(subst >,_,$(subst <,_,$(TORCH))))-$(subst $(comma),_,$(EXTRAS))

.PHONY: demo test lint format bench setup clean

$(PY):
	@echo ">> creating virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@echo ">> installing $(TORCH) and adasparse[$(EXTRAS)] into $(VENV)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" "$(TORCH)"
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(STAMP)

demo: $(STAMP)
	@echo ">> running the main job: adasparse demo"
	$(VENV)/bin/adasparse demo

lint: $(STAMP)
	@echo ">> ruff check + ruff format --check"
	$(VENV)/bin/ruff check adasparse tests benchmarks
	$(VENV)/bin/ruff format --check adasparse tests benchmarks

test: lint
	@echo ">> running the test suite"
	$(PY) -m pytest -q --durations=15

format: $(STAMP)
	$(VENV)/bin/ruff format adasparse tests benchmarks
	$(VENV)/bin/ruff check --fix adasparse tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/adasparse bench ops

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
