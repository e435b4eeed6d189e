#!/usr/bin/env bash
# Build go-waku's cmd/waku from the Go module proxy into a cache folder, idempotently.
#
# `go install github.com/waku-org/go-waku/cmd/waku@vX` is refused because go-waku's go.mod carries a
# `replace` of go-libp2p-pubsub; a throwaway wrapper module repeats that replace instead.
# RLN is left out with -tags gowaku_no_rln; cgo stays on for the sqlite store.
# The version is stamped with -ldflags -X (as go-waku's Makefile does), so `waku --version` and
# REST GET /debug/v1/version report it. If the link step hits Go's linkname lock-down
# ("invalid reference to ..."), the build is retried once with -checklinkname=0.
# Nothing of go-waku is committed: the wrapper module and the binary live under the cache folder.
#
# Usage: scripts/build-gowaku.sh            prints the binary's path on stdout (progress on stderr)
# Env:   UMBRA_WAKU_CACHE   cache folder (default: ~/.cache/umbra-waku)
#        GOWAKU_VERSION     go-waku tag (default: v0.10.1, falling back to v0.10.0)
#
# Measured (2 cores, cold module and build caches, Go 1.26.8): v0.10.1 builds in ~4 min 10 s,
# a 61 MiB binary. Re-running with the binary present takes well under a second.
set -euo pipefail

cache="${UMBRA_WAKU_CACHE:-$HOME/.cache/umbra-waku}"
versions=("${GOWAKU_VERSION:-v0.10.1}")
[ -z "${GOWAKU_VERSION:-}" ] && versions+=("v0.10.0")
pubsub_fork="github.com/waku-org/go-libp2p-pubsub@v0.13.1-gowaku"
node_pkg="github.com/waku-org/go-waku/waku/v2/node"

if ! command -v go >/dev/null 2>&1; then
  echo "build-gowaku: Go is not installed (need Go >= 1.23: https://go.dev/doc/install)" >&2
  exit 3
fi

for version in "${versions[@]}"; do
  bin="$cache/go-waku-$version/waku"
  # A cached binary counts only if it runs and reports the version we stamp into it.
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$version"; then
    echo "$bin"
    exit 0
  fi
  work="$cache/go-waku-$version/build"
  rm -rf "$work" && mkdir -p "$work"
  echo "build-gowaku: building go-waku $version in $work" >&2
  ldflags="-X $node_pkg.Version=$version -X $node_pkg.GitCommit=gomodproxy"
  if (
    cd "$work"
    export CGO_ENABLED=1 GOFLAGS=-mod=mod
    go mod init local/gowaku-build >/dev/null 2>&1
    go mod edit -replace=github.com/libp2p/go-libp2p-pubsub@v0.13.1="$pubsub_fork"
    go get "github.com/waku-org/go-waku/cmd/waku@$version" >&2
    build() {
      go build -tags=gowaku_no_rln -trimpath -ldflags="$1" -o "$bin.tmp" \
        github.com/waku-org/go-waku/cmd/waku 2>&1 | tee "$work/build.log" >&2
      return "${PIPESTATUS[0]}"
    }
    if ! build "$ldflags"; then
      grep -q "invalid reference to" "$work/build.log" || exit 1
      echo "build-gowaku: linkname lock-down hit, retrying with -checklinkname=0" >&2
      build "$ldflags -checklinkname=0"
    fi
    mv "$bin.tmp" "$bin"
  ); then
    echo "build-gowaku: built $("$bin" --version 2>&1 | head -1)" >&2
    echo "$bin"
    exit 0
  fi
  echo "build-gowaku: go-waku $version failed to build" >&2
done
exit 1
