#!/bin/sh
set -e
# On remove (not on upgrade) stop the service; queued mail stays in /var/lib/alertd.
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
  systemctl disable --now alertd >/dev/null 2>&1 || true
fi
