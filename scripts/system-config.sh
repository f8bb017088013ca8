#!/usr/bin/env bash
# Prints rules.example.yaml as installed system-wide (the Debian package,
# the container): the store at the given absolute path, and, with a second
# argument, the admin HTTP listener there (the container's 0.0.0.0:9464).
#   scripts/system-config.sh /var/lib/alertd/alertd.db [0.0.0.0:9464]
set -euo pipefail
cd "$(dirname "$0")/.."
store=$1 listen=${2:-}
out=$(sed -e "s|^  path: alertd\.db .*|  path: ${store}   # the state directory|" rules.example.yaml)
if [ -n "$listen" ]; then
  out=$(sed -e "s|^  listen: 127\.0\.0\.1:9464 .*|  listen: ${listen}   # /metrics and /healthz for the published port; /api answers only this machine|" <<<"$out")
  grep -q "^  listen: ${listen} " <<<"$out" || { echo "system-config: http.listen not found in rules.example.yaml" >&2; exit 1; }
fi
grep -q "^  path: ${store} " <<<"$out" || { echo "system-config: store.path not found in rules.example.yaml" >&2; exit 1; }
printf '%s\n' "$out"
