# Two commands do everything on a fresh machine:
#   make demo   create .venv, install, classify the bundled clip
#   make test   create .venv, install with test tools, run lint + the full test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision pinned to the pair pytorchvideo 0.1.5 works with here.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/streamclf demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv lint
	# Two workers (pytest-xdist), a test module each at a time: the suite waits on servers,
	# outages and subprocesses as much as it computes; 23 min serial, 12 min so on 2 cores.
	$(BIN)/python -m pytest -q -n 2 --dist loadscope $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
