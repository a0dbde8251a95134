#!/usr/bin/env bash
# The Debian package end to end: build it (scripts/package) or take one built, lintian
# (no errors), install it, run the installed gaond as a sidecar with the echo ikernel and
# the installed gaonctl against its control socket, then purge it and check its files
# are gone. Root only (dpkg -i); skipped, with the reason, otherwise (exit 77).
#
#   tests/package_test.sh [PATH.deb]     (default: build one with scripts/package)
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

skip() { echo "package_test: skipped: $*"; exit 77; }
((EUID == 0)) || skip "not root (dpkg -i needs root)"
command -v dpkg >/dev/null || skip "no dpkg"
command -v lintian >/dev/null || skip "no lintian"
if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' gaon 2>/dev/null || true)" == ii* ]]; then
  skip "a gaon package is installed on this host already (not touching it)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gaon-package-test.XXXXXX")
gaond_pid=
cleanup() {
  [[ -z "$gaond_pid" ]] || kill "$gaond_pid" 2>/dev/null || true
  # Never leave the package installed, whatever failed.
  if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' gaon 2>/dev/null || true)" != "" ]]; then
    dpkg --purge gaon >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

deb=${1:-}
if [[ -z "$deb" ]]; then
  deb=$(scripts/package --out "$work/dist" | tail -n 1)
fi
[[ -f "$deb" ]] || { echo "package_test: no package at $deb" >&2; exit 1; }
echo "package_test: $deb"

echo "== lintian"
lintian --fail-on error "$deb"

echo "== dpkg -i"
dpkg -i "$deb"
for f in /usr/sbin/gaond /usr/bin/gaonctl /usr/bin/gaon-run /etc/gaon/gaond.conf \
  /lib/systemd/system/gaond.service /usr/share/man/man8/gaond.8.gz \
  /usr/share/bash-completion/completions/gaonctl /usr/include/gaon/libgaon.h; do
  [[ -e "$f" ]] || { echo "package_test: not installed: $f" >&2; exit 1; }
done
dpkg-query -W -f='${Conffiles}\n' gaon | grep -q '/etc/gaon/gaond.conf' ||
  { echo "package_test: /etc/gaon/gaond.conf is not a conffile" >&2; exit 1; }
/usr/sbin/gaond --version | grep -qx 'gaond [0-9.]*' ||
  { echo "package_test: gaond --version: $(/usr/sbin/gaond --version)" >&2; exit 1; }

echo "== the installed gaond (sidecar, echo) and gaonctl"
free_port() { python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wire=$(free_port) host=$(free_port)
sock=$work/gaond.sock
/usr/sbin/gaond --control "$sock" --state-dir none --ikernel echo \
  --wire "udp:127.0.0.1:$wire" --host "udp:127.0.0.1:$host" >"$work/gaond.log" 2>&1 &
gaond_pid=$!
for _ in $(seq 100); do
  [[ -S "$sock" ]] && break
  kill -0 "$gaond_pid" 2>/dev/null || { cat "$work/gaond.log" >&2; exit 1; }
  sleep 0.1
done
[[ -S "$sock" ]] || { echo "package_test: no control socket" >&2; cat "$work/gaond.log" >&2; exit 1; }
types=$(/usr/bin/gaonctl --control "$sock" types)
echo "$types"
grep -qw echo <<<"$types" || { echo "package_test: gaonctl types lists no echo" >&2; exit 1; }
kill "$gaond_pid"
wait "$gaond_pid" || true
gaond_pid=

echo "== dpkg --purge"
dpkg --purge gaon
for f in /usr/sbin/gaond /usr/bin/gaonctl /etc/gaon/gaond.conf /etc/gaon \
  /lib/systemd/system/gaond.service /usr/share/man/man8/gaond.8.gz \
  /usr/share/bash-completion/completions/gaonctl /usr/lib/x86_64-linux-gnu/libgaon.so.0; do
  [[ ! -e "$f" ]] || { echo "package_test: left after purge: $f" >&2; exit 1; }
done
echo "package_test: passed"
