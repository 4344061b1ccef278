# The two commands of the README: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
RUN := tools/run.sh

.PHONY: setup demo test lint clean

setup:
	@tools/setup.sh

demo: setup
	@$(RUN) safe-ctrl-flagship

test: setup
	@$(RUN) tools/test.sh

lint: setup
	@$(RUN) ruff check .
	@$(RUN) mypy

clean:
	rm -rf build install log .pytest_cache .mypy_cache .ruff_cache
