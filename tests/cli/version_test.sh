#!/usr/bin/env bash
# Every binary says meson's project version with --version, and lbd --help names the program
# and lists every option, with the way to EAL's.
# Usage: version_test.sh VERSION LBD LB_HEALTHD LBCTL LB_GEN LB_BACKEND
set -u
version=$1
shift
fails=0
for bin in "$@"; do
  name=$(basename "$bin")
  out=$("$bin" --version 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && [ "$out" = "$name $version" ]; then
    echo "ok: $out"
  else
    echo "FAIL: $name --version: exit $rc, '$out' (want '$name $version')"
    fails=$((fails + 1))
  fi
  out=$("$bin" --help 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && grep -q "^Usage: $name " <<<"$out"; then
    echo "ok: $name --help names $name"
  else
    echo "FAIL: $name --help: exit $rc, no 'Usage: $name':"
    sed 's/^/    /' <<<"$out"
    fails=$((fails + 1))
  fi
done

lbd=$1
help=$("$lbd" --help 2>&1)
for want in -- "--config" "--instance" "--check" "--eal-help" "--version" "--help" \
  "EAL options come before '--'" "--lcores" "--file-prefix" "lbd(8)"; do
  if ! grep -qF -- "$want" <<<"$help"; then
    echo "FAIL: lbd --help does not mention $want"
    fails=$((fails + 1))
  fi
done
[ $fails -eq 0 ] && echo "ok: lbd --help lists its options and the usual EAL ones"
out=$("$lbd" --eal-help 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q "EAL common options" <<<"$out" && grep -q -- "--file-prefix" <<<"$out"; then
  echo "ok: lbd --eal-help lists EAL's options"
else
  echo "FAIL: lbd --eal-help: exit $rc"
  fails=$((fails + 1))
fi
[ $fails -eq 0 ]
