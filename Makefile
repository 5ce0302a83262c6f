# Two commands on a fresh machine: `make chat` (the main job) and `make test` (the test suite).
VENV ?= .venv
export HERD_VENV := $(VENV)

.PHONY: setup chat test
setup:
	bash scripts/setup.sh

chat: setup
	$(VENV)/bin/herd chat

test: setup
	$(VENV)/bin/python -m pytest -q
