#!/usr/bin/env bash
# make test: lint (ruff), type-check the core (mypy), then the test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"
ruff check .
echo "== mypy"
mypy
echo "== pytest"
exec pytest "$@"
