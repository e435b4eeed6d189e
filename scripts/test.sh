#!/usr/bin/env bash
# Set up everything and run every check: the README's test command, and what .ci/run runs.
#   1. .venv with umbra-waku and its dev tools (scripts/setup.sh)
#   2. the real Waku nodes: go-waku built from the Go module proxy, js-waku from npm
#      (scripts/setup-realnodes.sh; cached after the first run)
#   3. generated protobuf code in sync, ruff, mypy --strict, then pytest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-realnodes.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== protobuf gencode drift"; PYTHON=.venv/bin/python scripts/gen-proto.sh --check
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy --strict"; mypy
echo "== pytest"; python -m pytest "$@"
