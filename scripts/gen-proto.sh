#!/usr/bin/env bash
# Regenerate umbra_waku/_proto from proto/*.proto with the pinned generator of the `gen` extra
# (grpcio-tools, mypy-protobuf). The output is checked in; `scripts/gen-proto.sh --check` fails when
# regenerating would change anything (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python}"
# protoc finds the mypy-protobuf plugin on PATH: put the interpreter's scripts folder first.
export PATH="$(dirname "$(command -v "$py")"):$PATH"
out=umbra_waku/_proto
check=0; [ "${1:-}" = "--check" ] && check=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" -m grpc_tools.protoc -Iproto --python_out="$tmp" --mypy_out="$tmp" proto/*.proto
# protoc emits top-level imports between generated modules; make them package-relative.
sed -i -E 's/^import ([a-z_]+_pb2) as /from . import \1 as /' "$tmp"/*_pb2.py
sed -i -E 's/^import ([a-z_]+_pb2)$/from . import \1/' "$tmp"/*_pb2.pyi
printf '"""Generated protobuf code (scripts/gen-proto.sh). Do not edit; import through umbra_waku."""\n' > "$tmp/__init__.py"
if [ "$check" = 1 ]; then
  if ! diff -ru "$out" "$tmp" --exclude=__pycache__; then
    echo "gen-proto: umbra_waku/_proto is out of date with proto/; run scripts/gen-proto.sh" >&2
    exit 1
  fi
  echo "gen-proto: generated code is up to date"
else
  rm -rf "$out" && mkdir -p "$out" && cp "$tmp"/* "$out"/
  echo "gen-proto: wrote $out"
fi
