#!/usr/bin/env bash
# Prepare the real-node integration tests (tests/realnodes, pytest markers gowaku / jswaku):
#
#   1. go-waku: scripts/build-gowaku.sh (Go module proxy; cached under ~/.cache/umbra-waku, so a
#      second run costs well under a second; a cold build about 4 minutes on 2 cores);
#   2. js-waku peer: `npm ci` in tools/jswaku-peer from the committed package-lock.json (skipped
#      when node_modules already matches the lock file).
#
# Prints `UMBRA_WAKU_GOWAKU_BIN=<path>` on stdout (progress goes to stderr); with
# `eval "$(scripts/setup-realnodes.sh --export)"` the variable lands in the calling shell, and on
# GitHub Actions it is also appended to $GITHUB_ENV. The tests read UMBRA_WAKU_GOWAKU_BIN and fall
# back to the same cache path, so exporting it is optional.
#
# Usage: scripts/setup-realnodes.sh [--export] [--skip-gowaku] [--skip-jswaku]
# Env:   UMBRA_WAKU_CACHE, GOWAKU_VERSION (see build-gowaku.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

export_form=0 skip_go=0 skip_js=0
for arg in "$@"; do
  case "$arg" in
    --export) export_form=1 ;;
    --skip-gowaku) skip_go=1 ;;
    --skip-jswaku) skip_js=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup-realnodes: unknown argument $arg" >&2; exit 2 ;;
  esac
done

say() { echo "setup-realnodes: $*" >&2; }

bin=""
if [ "$skip_go" = 0 ]; then
  started=$(date +%s)
  bin=$(scripts/build-gowaku.sh)
  say "go-waku binary: $bin ($("$bin" --version 2>&1 | head -1)), ready in $(( $(date +%s) - started )) s"
fi

if [ "$skip_js" = 0 ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "Node.js >= 20 and npm are required for the js-waku peer (https://nodejs.org)"
    exit 3
  fi
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 20 ]; then
    say "Node.js $(node --version) is too old: @waku/sdk 0.0.27 needs >= 20"
    exit 3
  fi
  peer=tools/jswaku-peer
  stamp="$peer/node_modules/.umbra-lock.sha256"
  want=$(sha256sum "$peer/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$peer/node_modules/@waku/sdk" ]; then
    say "js-waku peer: node_modules matches package-lock.json"
  else
    started=$(date +%s)
    (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$stamp"
    say "js-waku peer: npm ci done in $(( $(date +%s) - started )) s" \
        "(@waku/sdk $(node -p "require('./$peer/node_modules/@waku/sdk/package.json').version"))"
  fi
fi

if [ -n "$bin" ]; then
  if [ -n "${GITHUB_ENV:-}" ]; then
    echo "UMBRA_WAKU_GOWAKU_BIN=$bin" >> "$GITHUB_ENV"
  fi
  if [ "$export_form" = 1 ]; then
    echo "export UMBRA_WAKU_GOWAKU_BIN=$bin"
  else
    echo "UMBRA_WAKU_GOWAKU_BIN=$bin"
  fi
fi
