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
# Usage errors exit 2 (not CLI11's 105..109); --help and --version exit 0.
expect "unknown option is a usage error" 2 "bogus" -- "$lbd" --config "$examples/demo.cfg" --bogus
expect "--config is required (usage error)" 2 "^lbd: --config is required \\(lbd --help\\)" -- "$lbd" --check
expect "no option at all (usage error)" 2 "config is required|--config" -- "$lbd"
expect "--help exits 0" 0 "--config" -- "$lbd" --help
expect "--version exits 0" 0 "^lbd " -- "$lbd" --version
expect "--check on a good file says OK" 0 "OK \\(2 port\\(s\\)" -- \
  "$lbd" --config "$examples/demo.cfg" --check
expect "no EAL args without --check is a usage error" 2 "EAL arguments expected" -- \
  "$lbd" --config "$examples/demo.cfg"

[ $fails -eq 0 ]
