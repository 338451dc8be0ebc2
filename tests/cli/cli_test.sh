#!/usr/bin/env bash
# lbd refuses bad configs and bad options with one clear line and a non-zero exit.
set -u
lbd=$1
examples=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh"

sed 's/port = 80;/port = 80000;/' "$examples/demo.cfg" >"$tmp/range.cfg"
line=$(grep -n 'port = 80000;' "$tmp/range.cfg" | cut -d: -f1)
expect "out-of-range port names file:line" 1 "^lbd: $tmp/range.cfg:$line: services\\.\\[0\\]\\.port" -- \
  "$lbd" --config "$tmp/range.cfg" --check

printf 'dataplane: { workers = 1 \n' >"$tmp/syntax.cfg"
expect "syntax error names file:line" 1 "^lbd: $tmp/syntax.cfg:[0-9]+:" -- \
  "$lbd" --config "$tmp/syntax.cfg" --check

expect "missing file" 1 "^lbd: $tmp/none.cfg" -- "$lbd" --config "$tmp/none.cfg" --check
expect "unknown option" 109 "bogus" -- "$lbd" --config "$examples/demo.cfg" --bogus
expect "--config is required" 106 "config is required|--config" -- "$lbd" --check
expect "--check on a good file says OK" 0 "OK \\(2 port\\(s\\)" -- \
  "$lbd" --config "$examples/demo.cfg" --check
expect "no EAL args without --check is refused" 1 "EAL arguments expected" -- \
  "$lbd" --config "$examples/demo.cfg"

[ $fails -eq 0 ]
