# Shared by the cli suite's scripts (sourced): expect DESCRIPTION EXPECTED_EXIT PATTERN -- command...
# runs the command, checks its exit status and that its output matches PATTERN (grep -E), says
# ok/FAIL, and counts failures in $fails. Needs $tmp (a scratch directory).
fails=0
expect() {
  local what=$1 code=$2 pattern=$3
  shift 4
  "$@" >"$tmp/out" 2>&1
  local rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -qE -- "$pattern" "$tmp/out"; then
    echo "FAIL: $what: exit $rc (want $code), output:"
    sed 's/^/    /' "$tmp/out"
    fails=$((fails + 1))
  else
    echo "ok: $what"
  fi
}
