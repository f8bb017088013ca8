#!/usr/bin/env bash
# Installs the amd64 Debian package on this machine, checks what it
# installed, runs it as its own user the way the unit does, and purges it.
# Needs root (CI runs as root) and a package from scripts/package.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -t dist/alertd_*_amd64.deb | head -1)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

$sudo dpkg -i "$deb" >/dev/null
trap '$sudo dpkg --purge alertd >/dev/null 2>&1 || true' EXIT
/usr/bin/alertd version
/usr/bin/alertd check -config /etc/alertd/alertd.yaml
if command -v systemd-analyze >/dev/null; then
  # verify reads the unit as systemd would and names any mistake.
  out=$(systemd-analyze verify /lib/systemd/system/alertd.service 2>&1 || echo "exit $?")
  if [ -n "$out" ]; then echo "systemd-analyze verify:"; echo "$out"; exit 1; fi
  echo "systemd-analyze verify: ok"
fi
getent passwd alertd >/dev/null || { echo "the package did not create the alertd user"; exit 1; }
[ "$(stat -c '%U:%G %a' /etc/alertd/alertd.yaml)" = "root:alertd 640" ] || { echo "/etc/alertd/alertd.yaml: $(stat -c '%U:%G %a' /etc/alertd/alertd.yaml)"; exit 1; }

# What systemd's StateDirectory= would make, then the service as its user.
$sudo install -d -o alertd -g alertd -m 0750 /var/lib/alertd
log=$(mktemp)
(cd /var/lib/alertd && exec $sudo setpriv --reuid=alertd --regid=alertd --init-groups /usr/bin/alertd run -config /etc/alertd/alertd.yaml) 2>"$log" &
pid=$!
ok=""
for _ in $(seq 1 100); do
  if /usr/bin/alertd health -config /etc/alertd/alertd.yaml >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.1
done
kill -TERM "$pid"; wait "$pid" || { echo "alertd did not exit 0 on SIGTERM"; cat "$log"; exit 1; }
[ -n "$ok" ] || { echo "the installed alertd never became healthy:"; cat "$log"; exit 1; }
[ "$(stat -c '%U %a' /var/lib/alertd/alertd.db)" = "alertd 600" ] || { echo "store: $(stat -c '%U %a' /var/lib/alertd/alertd.db)"; exit 1; }
rm -f "$log"

$sudo dpkg --purge alertd >/dev/null
trap - EXIT
[ ! -e /usr/bin/alertd ] && [ ! -e /var/lib/alertd ] && ! getent passwd alertd >/dev/null \
  || { echo "purge left alertd behind"; exit 1; }
echo "package: installed, checked, ran as alertd, purged"
