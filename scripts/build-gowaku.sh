#!/usr/bin/env bash
# Build go-waku's cmd/waku from the Go module proxy into a cache folder, idempotently.
#
# `go install github.com/waku-org/go-waku/cmd/waku@vX` is refused because go-waku's go.mod carries a
# `replace` of go-libp2p-pubsub; a throwaway wrapper module repeats that replace instead.
# RLN is left out with -tags gowaku_no_rln; cgo stays on for the sqlite store.
# Nothing of go-waku is committed: the wrapper module and the binary live under the cache folder.
#
# Usage: scripts/build-gowaku.sh            prints the binary's path on stdout
# Env:   UMBRA_WAKU_CACHE   cache folder (default: ~/.cache/umbra-waku)
#        GOWAKU_VERSION     go-waku tag (default: v0.10.1, falling back to v0.10.0)
set -euo pipefail

cache="${UMBRA_WAKU_CACHE:-$HOME/.cache/umbra-waku}"
versions=("${GOWAKU_VERSION:-v0.10.1}")
[ -z "${GOWAKU_VERSION:-}" ] && versions+=("v0.10.0")
pubsub_fork="github.com/waku-org/go-libp2p-pubsub@v0.13.1-gowaku"

if ! command -v go >/dev/null 2>&1; then
  echo "build-gowaku: Go is not installed (need Go >= 1.23: https://go.dev/doc/install)" >&2
  exit 3
fi

for version in "${versions[@]}"; do
  bin="$cache/go-waku-$version/waku"
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
  fi
  work="$cache/go-waku-$version/build"
  rm -rf "$work" && mkdir -p "$work"
  echo "build-gowaku: building go-waku $version in $work" >&2
  (
    cd "$work"
    export CGO_ENABLED=1 GOFLAGS=-mod=mod
    go mod init local/gowaku-build >/dev/null 2>&1
    go mod edit -replace=github.com/libp2p/go-libp2p-pubsub@v0.13.1="$pubsub_fork"
    go get "github.com/waku-org/go-waku/cmd/waku@$version" >&2
    go build -tags=gowaku_no_rln -trimpath -o "$bin.tmp" github.com/waku-org/go-waku/cmd/waku >&2
    mv "$bin.tmp" "$bin"
  ) && { echo "$bin"; exit 0; }
  echo "build-gowaku: go-waku $version failed to build" >&2
done
exit 1
