#!/usr/bin/env bash
# Set up .venv and run the embedded demo: two bots, one bridge, encrypted messages, a transcript.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
exec .venv/bin/umbra-waku demo "$@"
