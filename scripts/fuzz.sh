#!/usr/bin/env bash
# Runs every Go fuzz target in the tree for FUZZTIME each (default 30s).
# A crash is written by `go test` under the package's testdata/fuzz/ and
# becomes a regression case of the normal test run once committed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
status=0
while IFS= read -r line; do
  file=${line%%:*}
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"${line#*:}")
  pkg=./$(dirname "$file")
  echo "== $pkg $name ($fuzztime)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"; then
    status=1
  fi
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' internal cmd | sed -E 's/^([^:]*):[0-9]+:/\1:/')
exit $status
