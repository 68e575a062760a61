#!/usr/bin/env bash
# The Debian package, as an operator meets it: build it, install it with
# dpkg, start the installed binary with the installed settings as its unit
# would (the `meshplay` user, /var/lib/meshplay, umask 0077), dispatch one
# event through the installed CLI, then remove and purge it and check that
# nothing is left running or behind. The unit's sandboxing is rated by
# `systemd-analyze security` (systemd is not PID 1 on CI, so the unit
# itself is not started there).
#
# Usage (as root): packaging/check-deb.sh [DEB]. Without DEB it builds the
# release package (`cargo deb`); CI hands it one built from the debug
# binary the tests already built, which keeps CI ten minutes shorter.
set -euo pipefail
cd "$(dirname "$0")/.."
deb="${1:-}"
if [ -z "$deb" ]; then
  cargo deb
  deb=$(ls -t target/debian/meshplay_*.deb | head -1)
fi
echo "package: $deb ($(du -h "$deb" | cut -f1))"

systemd-analyze security --offline=yes --threshold=20 packaging/meshplay.service | tail -1

fail() { echo "error: $*" >&2; tail -40 /tmp/meshplay-deb.log >&2 || true; exit 1; }
as_meshplay() { runuser -u meshplay -- "$@"; }

dpkg -i "$deb" >/dev/null
getent passwd meshplay >/dev/null || fail "no meshplay user after install"
[ "$(stat -c '%U %a' /var/lib/meshplay)" = "meshplay 700" ] || fail "/var/lib/meshplay is not meshplay's, mode 700"
[ "$(stat -c '%U:%G %a' /etc/meshplay/meshplay.toml)" = "root:meshplay 640" ] || fail "the config is not root:meshplay 640"
[ -f /usr/lib/systemd/system/meshplay.service ] || fail "no unit installed"
/usr/bin/meshplay config check /etc/meshplay/meshplay.toml >/dev/null || fail "the installed config does not check"

# As the unit runs it.
(cd /var/lib/meshplay && umask 0077 && exec runuser -u meshplay -- \
  /usr/bin/meshplay serve --config /etc/meshplay/meshplay.toml) >/tmp/meshplay-deb.log 2>&1 &
for _ in $(seq 1 120); do
  as_meshplay meshplay status --data-dir /var/lib/meshplay >/dev/null 2>&1 && break
  sleep 0.5
done
as_meshplay meshplay status --data-dir /var/lib/meshplay >/dev/null || fail "the installed master did not become ready"
answer=$(as_meshplay meshplay dispatch --data-dir /var/lib/meshplay --json user deb incr)
echo "dispatched through the installed package: $answer"
echo "$answer" | grep -q '"plugin": *"counter"' || fail "the dispatch did not reach the counter plugin"
[ "$(stat -c '%a' /var/lib/meshplay/admin-token)" = 600 ] || fail "the admin token is not mode 600"

dpkg -r meshplay >/dev/null
if pgrep -u meshplay >/dev/null || pgrep -f /usr/bin/meshplay >/dev/null; then
  fail "a meshplay process is left after dpkg -r: $(pgrep -a -f /usr/bin/meshplay)"
fi
[ -d /var/lib/meshplay ] || fail "dpkg -r removed the data directory (only purge may)"
dpkg --purge meshplay >/dev/null
! getent passwd meshplay >/dev/null || fail "the meshplay user is left after purge"
[ ! -e /var/lib/meshplay ] || fail "/var/lib/meshplay is left after purge"
[ ! -e /usr/bin/meshplay ] || fail "/usr/bin/meshplay is left after purge"
echo "deb: installed, served, dispatched, removed and purged; nothing left"
