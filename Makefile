# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
VENV ?= .venv
# test processes (pytest-xdist; each file runs whole on one of them, each gets its share of the cores)
TEST_WORKERS ?= 2
export HERD_VENV := $(VENV)

.PHONY: setup demo chat test
setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/herd demo

chat: setup
	$(VENV)/bin/herd chat

test: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
