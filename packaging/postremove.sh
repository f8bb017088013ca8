#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
# Purge forgets everything: the store (queued mail, alert state), the token
# file and the user.
if [ "$1" = "purge" ]; then
  rm -rf /var/lib/alertd
  if getent passwd alertd >/dev/null; then
    deluser --system alertd >/dev/null 2>&1 || true
  fi
fi
