#!/bin/sh
# alertd's Debian package: the system user it runs as, and the unit.
set -e
if ! getent passwd alertd >/dev/null; then
  adduser --system --group --no-create-home --home /nonexistent --gecos "alertd alerting service" alertd >/dev/null
fi
# The configuration may hold passwords (or name password files): readable
# by root and alertd only.
chown root:alertd /etc/alertd /etc/alertd/alertd.yaml
chmod 0750 /etc/alertd
chmod 0640 /etc/alertd/alertd.yaml
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  if systemctl is-active --quiet alertd; then
    systemctl try-restart alertd >/dev/null || true
  else
    echo "alertd: edit /etc/alertd/alertd.yaml, check it with 'alertd check -config /etc/alertd/alertd.yaml',"
    echo "        then: sudo systemctl enable --now alertd"
  fi
fi
