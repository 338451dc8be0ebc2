#!/usr/bin/env bash
# lb-healthd's and lbctl's front doors: usage errors exit 2 with one clear line (never CLI11's own
# codes, such as 106 for a missing --config), --help and --version exit 0, validation refuses
# what the start would refuse. Needs no daemon.
# Usage: tools_cli_test.sh LB_HEALTHD LBCTL EXAMPLES_DIR
set -u
healthd=$1
lbctl=$2
examples=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh"

# -- lb-healthd: usage errors are 2 ---------------------------------------------------------------
expect "lb-healthd without --config" 2 "^lb-healthd: --config is required" -- "$healthd"
expect "lb-healthd --check without --config" 2 "config is required" -- "$healthd" --check
expect "lb-healthd unknown option" 2 "^lb-healthd: .*--bogus" -- \
  "$healthd" --config "$examples/demo.cfg" --bogus
expect "lb-healthd --config without a value" 2 "^lb-healthd: " -- "$healthd" --config
expect "lb-healthd bad --log-level" 2 "^lb-healthd: --log-level" -- \
  "$healthd" --config "$examples/demo.cfg" --log-level loud --check
expect "lb-healthd --help" 0 "--config" -- "$healthd" --help
expect "lb-healthd --version" 0 "lb-healthd 0\\." -- "$healthd" --version
expect "lb-healthd --check on a good file" 0 "OK \\(1 service" -- \
  "$healthd" --config "$examples/demo.cfg" --check

# -- the control socket's accounts are checked where the file is validated ----------------------
{
  cat "$examples/demo.cfg"
  printf 'healthd = {\n  control_socket = "%s/ctl.sock";\n  socket_owner = "lbd-no-such-user";\n};\n' "$tmp"
} >"$tmp/owner.cfg"
line=$(grep -n 'socket_owner' "$tmp/owner.cfg" | cut -d: -f1)
expect "lb-healthd --check: socket_owner that does not exist, with file:line" 1 \
  "^lb-healthd: $tmp/owner.cfg:$line: healthd.socket_owner: no such user 'lbd-no-such-user'" -- \
  "$healthd" --config "$tmp/owner.cfg" --check
expect "lbctl config check: the same" 1 \
  "^lbctl: $tmp/owner.cfg:$line: healthd.socket_owner: no such user 'lbd-no-such-user'" -- \
  "$lbctl" config check "$tmp/owner.cfg"
sed 's/socket_owner = "lbd-no-such-user"/socket_group = "lbd-no-such-group"/' "$tmp/owner.cfg" \
  >"$tmp/group.cfg"
expect "lb-healthd --check: socket_group that does not exist" 1 \
  "^lb-healthd: $tmp/group.cfg:$line: healthd.socket_group: no such group 'lbd-no-such-group'" -- \
  "$healthd" --config "$tmp/group.cfg" --check
# ... and the real start refuses the same file the same way, before touching anything.
expect "lb-healthd start: the same refusal" 1 "healthd.socket_group: no such group" -- \
  "$healthd" --config "$tmp/group.cfg"
[ -e "$tmp/ctl.sock" ] && { echo "FAIL: the refused start left a socket"; fails=$((fails + 1)); }

# -- lbctl: number options are decimal, and an empty one is not 0 --------------------------------
for args in "backend set web 10.20.0.11:8080 --weight ''" \
            "backend add web 10.20.0.14:8080 --weight ''" \
            "backend set web 10.20.0.11:8080 --weight 0x10" \
            "backend set web 10.20.0.11:8080 --weight 1e3" \
            "backend set web 10.20.0.11:8080 --weight ' 5'" \
            "backend set web 10.20.0.11:8080 --weight five" \
            "service set web --port ''" \
            "service set web --interval ''" \
            "service add x 10.10.0.9:80 --rise ''" \
            "flows --limit ''" \
            "stats --count ''" \
            "--timeout '' status" \
            "backend remove web 10.20.0.11:8080 --drain-timeout ''" \
            "config reload --drain-timeout ''"; do
  opt=$(eval "set -- $args"; for a; do case $a in --*) last=$a;; esac; done; echo "$last")
  eval "set -- $args"
  expect "lbctl $args" 2 "^lbctl: $opt: expected (an integer|a number), found " -- \
    "$lbctl" --socket "$tmp/none.sock" "$@"
done
# Leading zeros are decimal (not octal), and the value reaches the request: here it fails only
# because no lb-healthd listens (exit 1, not 2).
expect "lbctl --weight 010 is accepted" 1 "cannot connect to lb-healthd" -- \
  "$lbctl" --socket "$tmp/none.sock" backend set web 10.20.0.11:8080 --weight 010
# A number too large for its type is refused as such: CLI11 saturated it (`--weight
# 99999999999999999999` reached lb-healthd as 9223372036854775807, and the error named that).
for args in "backend set web 10.20.0.11:8080 --weight 99999999999999999999" \
            "backend set web 10.20.0.11:8080 --weight -99999999999999999999" \
            "stats --count 9223372036854775808" \
            "flows --limit 99999999999999999999" \
            "backend remove web 10.20.0.11:8080 --drain-timeout 1$(printf '0%.0s' {1..400})"; do
  opt=$(eval "set -- $args"; for a; do case $a in --*) last=$a;; esac; done; echo "$last")
  eval "set -- $args"
  expect "lbctl ${args:0:70}" 2 "^lbctl: $opt: .* is out of range" -- \
    "$lbctl" --socket "$tmp/none.sock" "$@"
done
expect "lbctl --weight -9223372036854775808 still reaches lb-healthd" 1 "cannot connect" -- \
  "$lbctl" --socket "$tmp/none.sock" backend set web 10.20.0.11:8080 --weight -9223372036854775808
# Options that must be above 0 say so, in words (CLI11's PositiveNumber printed "not in range
# 0.000000 to 1797693134862315708...", 300 digits).
for args in "backend remove web 10.20.0.11:8080 --drain-timeout 0" \
            "backend remove web 10.20.0.11:8080 --drain-timeout -5" \
            "capture client -w /tmp/x.pcapng --count 0" \
            "capture client -w /tmp/x.pcapng --duration 0"; do
  opt=$(eval "set -- $args"; for a; do case $a in --*) last=$a;; esac; done; echo "$last")
  eval "set -- $args"
  expect "lbctl $args" 2 "^lbctl: $opt: expected a number above 0, found '-?[0-9]+' \\(lbctl --help\\)$" -- \
    "$lbctl" --socket "$tmp/none.sock" "$@"
done
# stats --count counts --watch's screens: without --watch it was ignored (one sample), and 0 or
# a negative count watched forever.
expect "lbctl stats --count 5 without --watch" 2 "^lbctl: --count requires --watch" -- \
  "$lbctl" --socket "$tmp/none.sock" stats --count 5
for n in 0 -1; do
  expect "lbctl stats --watch --count $n" 2 "^lbctl: --count: expected an integer of at least 1, found '$n'" -- \
    "$lbctl" --socket "$tmp/none.sock" stats --watch --count "$n"
done
# An empty --vip is not "no --vip": it was dropped, and the rest of the change made.
expect "lbctl service set --vip ''" 2 "^lbctl: --vip: expected VIP or VIP:PORT, found ''" -- \
  "$lbctl" --socket "$tmp/none.sock" service set web --vip '' --port 81
# A file that does not load is searched for the control socket and the instance: a commented-out
# line is not a setting (lbctl went to the socket a comment named: another instance's, say).
cat >"$tmp/half.cfg" <<CFG
# was: control_socket = "$tmp/comment1.sock";
// control_socket = "$tmp/comment2.sock";
/* healthd = { control_socket = "$tmp/comment3.sock"; }; */
dataplane: { workers = 1; ports = ( { name = "p0"; device = "net_null0"; ip = "10.0.0.1/24"; } ); };
services = ( { name = "web"; vip = "10.0.0.100"; port = ; } );   # being edited
healthd = { control_socket = "$tmp/real#1.sock"; };
CFG
expect "lbctl on a file that does not load: its control_socket, not a comment's" 1 \
  "^lbctl: cannot connect to lb-healthd at $tmp/real#1.sock: .*half.cfg:5: syntax error" -- \
  "$lbctl" -c "$tmp/half.cfg" backend set web 10.0.0.11:80 --weight 2
sed -i -e 's/^healthd = .*$/instance = "lbctl-test-mine";/' \
  -e '1i # instance = "lbctl-test-other";' "$tmp/half.cfg"
expect "lbctl on a file that does not load: its instance, not a comment's" 1 \
  "^lbctl: cannot connect to lb-healthd at /run/lbd/lbctl-test-mine.sock: " -- \
  "$lbctl" -c "$tmp/half.cfg" status
# An error is one line whatever the input holds: control characters are escaped.
expect "lbctl: a CR LF in an argument, one line" 2 \
  "^lbctl: backend: expected ADDR:PORT, found 'x\\\\r\\\\nforged\\\\x1b\\[2J'$" -- \
  "$lbctl" --socket "$tmp/none.sock" backend add web $'x\r\nforged\e[2J'
[ "$(wc -l <"$tmp/out")" -eq 1 ] || { echo "FAIL: the error is $(wc -l <"$tmp/out") lines"; fails=$((fails + 1)); }
expect "lbctl config reload --now --drain-timeout 5: excluded" 2 "excludes" -- \
  "$lbctl" --socket "$tmp/none.sock" config reload --now --drain-timeout 5
expect "lbctl without a subcommand" 2 "^lbctl: " -- "$lbctl"
expect "lbctl unknown option" 2 "^lbctl: .*--bogus" -- "$lbctl" --bogus status
expect "lbctl --help" 0 "Exit status" -- "$lbctl" --help
expect "lbctl --version" 0 "lbctl 0\\." -- "$lbctl" --version

[ $fails -eq 0 ]
