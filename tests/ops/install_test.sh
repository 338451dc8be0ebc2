#!/usr/bin/env bash
# `meson install` into a temporary tree, then what was installed: binaries that run and say the
# project's version, man pages, example configs that the installed lbd accepts, the tmpfiles.d
# entry (applied with systemd-tmpfiles --root), and the systemd units, checked with
# `systemd-analyze verify` (their ExecStart binaries pointed at the tree). When systemd is PID 1
# the units are also started for real on net_null ports.
# Usage: install_test.sh BUILD_DIR VERSION PREFIX SBINDIR BINDIR MANDIR SYSCONFDIR MAN(yes|no)
set -u
build=$1 version=$2 prefix=$3 sbindir=$4 bindir=$5 mandir=$6 sysconfdir=$7 man=$8
tmp=$(mktemp -d)
root=$tmp/root
started=()
cleanup() {
  for u in "${started[@]}"; do systemctl stop "$u" >/dev/null 2>&1; done
  if [ ${#started[@]} -gt 0 ]; then
    rm -f /run/systemd/system/lbd@.service /run/systemd/system/lb-healthd@.service
    systemctl daemon-reload
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

meson install -C "$build" --destdir "$root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; echo "FAIL: meson install"; exit 1; }
unitdir=$prefix/lib/systemd/system
docdir=$prefix/share/doc/lbd

for f in "$sbindir/lbd" "$sbindir/lb-healthd" "$bindir/lbctl" "$bindir/lb-gen" \
  "$bindir/lb-backend" "$unitdir/lbd@.service" "$unitdir/lb-healthd@.service" \
  "$prefix/lib/tmpfiles.d/lbd.conf" "$docdir/examples/demo.cfg" "$docdir/examples/full.cfg" \
  "$docdir/operations.md"; do
  [ -f "$root$f" ] && ok "installed $f" || bad "not installed: $f"
done
for b in "$sbindir/lbd" "$sbindir/lb-healthd" "$bindir/lbctl" "$bindir/lb-gen" "$bindir/lb-backend"
do
  out=$("$root$b" --version 2>&1)
  [ "$out" = "$(basename "$b") $version" ] && ok "$out" || bad "$b --version: '$out'"
done
if [ "$man" = yes ]; then
  for page in man8/lbd.8 man8/lb-healthd.8 man8/lbctl.8 man5/lbd.cfg.5; do
    if [ -s "$root$mandir/$page" ] && man -l "$root$mandir/$page" 2>/dev/null | grep -q NAME
    then ok "man page $page"; else bad "man page $page missing or unreadable"; fi
  done
else
  echo "note: scdoc was not found at configure time: man pages not built, not checked"
fi

# The example configs, as installed, pass the installed lbd's and lb-healthd's checks.
mkdir -p "$root$sysconfdir/lbd"
sed 's/^instance = "lb";/instance = "opsunit";/' "$root$docdir/examples/demo.cfg" \
  >"$root$sysconfdir/lbd/opsunit.cfg"
grep -q '^instance = "opsunit";' "$root$sysconfdir/lbd/opsunit.cfg" || bad "demo.cfg has no instance"

# tmpfiles.d: /run/lbd, 0755, as systemd-tmpfiles creates it at boot.
if command -v systemd-tmpfiles >/dev/null; then
  systemd-tmpfiles --root="$tmp/tmpfiles" --create "$root$prefix/lib/tmpfiles.d/lbd.conf" 2>&1 &&
    [ "$(stat -c %a "$tmp/tmpfiles/run/lbd" 2>/dev/null)" = 755 ] &&
    ok "tmpfiles.d creates /run/lbd 0755" || bad "tmpfiles.d entry does not create /run/lbd 0755"
else
  echo "note: systemd-tmpfiles not installed: tmpfiles.d entry not applied"
fi

# The units, with their binaries and config directory pointed at the tree (verify wants the
# ExecStart programs to exist). An instance of each template is verified (lbd@opsunit pulls in
# lb-healthd@opsunit); any message is a failure, warnings included (an unknown key is only a
# warning to systemd).
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed"; exit 77; }
mkdir -p "$tmp/units"
for u in lbd@.service lb-healthd@.service; do
  sed -e "s|=$sbindir/|=$root$sbindir/|g" -e "s|$sysconfdir/lbd/|$root$sysconfdir/lbd/|g" \
    "$root$unitdir/$u" >"$tmp/units/$u"
done
manopt=(--man=yes)
[ "$man" = yes ] || manopt=(--man=no)
MANPATH="$root$mandir:" systemd-analyze verify "${manopt[@]}" "$tmp/units/lbd@opsunit.service" \
  "$tmp/units/lb-healthd@opsunit.service" >"$tmp/verify.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ ! -s "$tmp/verify.log" ]; then
  ok "systemd-analyze verify lbd@opsunit.service lb-healthd@opsunit.service (man pages found)"
else
  bad "systemd-analyze verify (exit $rc):"
  sed 's/^/    /' "$tmp/verify.log"
fi
# What the units promise, read back: the relations between the two, and each ExecStartPre run.
unit_has() { grep -qx -- "$2" "$tmp/units/$1" && ok "$1: $2" || bad "$1 lacks '$2'"; }
unit_has lbd@.service "Wants=lb-healthd@%i.service"
unit_has lbd@.service "LimitMEMLOCK=infinity"
unit_has lbd@.service "Requires=dev-hugepages.mount"
unit_has lbd@.service "Restart=on-failure"
unit_has lb-healthd@.service "After=lbd@%i.service network-online.target"
unit_has lb-healthd@.service "Restart=on-failure"
for u in lbd@.service lb-healthd@.service; do
  if grep -qE "^(Requires|BindsTo|PartOf)=.*(lbd|lb-healthd)@" "$tmp/units/$u"; then
    bad "$u is bound to the other daemon: a restart of one would stop or restart the other"
  fi
  pre=$(sed -n 's/^ExecStartPre=//p' "$tmp/units/$u" | sed 's/%i/opsunit/g')
  if out=$($pre 2>&1); then ok "$u ExecStartPre: $out"; else bad "$u ExecStartPre: $out"; fi
done

# The real thing, where systemd runs the machine: both units started on net_null ports.
if [ "$(ps -p 1 -o comm=)" = systemd ] && [ "$(id -u)" -eq 0 ]; then
  cfg=$root$sysconfdir/lbd/opsunit.cfg
  sed -i 's/net_af_packet\([01]\),iface=[^"]*/net_null\1/' "$cfg"
  cp "$tmp/units/lbd@.service" "$tmp/units/lb-healthd@.service" /run/systemd/system/
  systemctl daemon-reload
  started=(lbd@opsunit.service lb-healthd@opsunit.service)
  if systemctl start lbd@opsunit.service; then
    for _ in $(seq 1 50); do
      systemctl is-active -q lb-healthd@opsunit.service && break
      sleep 0.2
    done
    systemctl is-active -q lbd@opsunit.service && systemctl is-active -q lb-healthd@opsunit.service &&
      ok "systemd started lbd@opsunit and (through Wants=) lb-healthd@opsunit" ||
      bad "units not active: $(systemctl status --no-pager lbd@opsunit lb-healthd@opsunit 2>&1)"
    pid=$(systemctl show -p MainPID --value lbd@opsunit.service)
    systemctl restart lb-healthd@opsunit.service
    [ "$(systemctl show -p MainPID --value lbd@opsunit.service)" = "$pid" ] &&
      ok "restarting lb-healthd leaves lbd running (pid $pid)" ||
      bad "restarting lb-healthd restarted lbd"
  else
    bad "systemctl start lbd@opsunit: $(journalctl -u lbd@opsunit -n 20 --no-pager 2>&1)"
  fi
else
  echo "note: systemd is not PID 1 here ($(ps -p 1 -o comm=)): units verified, not started"
fi

[ $fails -eq 0 ] && echo PASS
[ $fails -eq 0 ]
