#!/bin/sh
# Package postinstall script of fleetagent and fleethub (build.sh puts the
# package's name in pkg=). Makes the directories with their owners and
# modes, reloads systemd, restarts the service on upgrade if it was running,
# and prints the next step on a first install. It never enables or starts
# the service: that needs a configuration only the operator can write.
# deb: $1 is configure, $2 the previously configured version (empty on a
# first install); rpm: $1 is 1 (install) or 2 (upgrade).
set -e

pkg=@PKG@
case "$pkg" in
fleetagent) config=/etc/modelfleet/agent.yaml state_dir=/var/lib/modelfleet/agent ;;
fleethub) config=/etc/modelfleet/hub.yaml state_dir=/var/lib/modelfleet/hub ;;
*) echo "$pkg: postinstall: unknown package" >&2; exit 1 ;;
esac

case "$1" in
configure) upgrade=${2:+yes} ;;
1) upgrade= ;;
[0-9]*) upgrade=yes ;;
*) exit 0 ;; # abort-upgrade and the like: nothing to do
esac

# Configuration: the service reads it through its group, only root writes.
install -d -o root -g modelfleet -m 0750 /etc/modelfleet
chown root:modelfleet "$config"
chmod 0640 "$config"
if [ "$pkg" = fleethub ]; then
	# Signing keys: created by the service user (private keys must be
	# 0600), read-only to the running service (ProtectSystem=strict).
	install -d -o modelfleet -g modelfleet -m 0700 /etc/modelfleet/keys
fi

# State: owned by the service user. systemd's StateDirectory= makes it on
# the first start too; making it here shows it and serves non-systemd hosts.
install -d -o root -g root -m 0755 /var/lib/modelfleet
install -d -o modelfleet -g modelfleet -m 0750 "$state_dir"

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
	systemctl daemon-reload || true
	if [ -n "$upgrade" ]; then
		systemctl try-restart "$pkg.service" || true
	fi
fi

if [ -z "$upgrade" ]; then
	echo
	echo "$pkg is installed. The service is not enabled yet; next:"
	if [ "$pkg" = fleetagent ]; then
		cat <<'NEXT'
  1. Enroll, with a token from `fleethub devices enroll-token` on the hub:
       sudo fleetagent enroll --hub https://HUB:8400 --token mfe_...
     (it replaces this package's template agent.yaml, kept as
     agent.yaml.pre-enroll). Or, by hand: copy the hub's root.json to
     /etc/modelfleet/root.json and edit agent.yaml.
  2. Check:  sudo -u modelfleet fleetagent config validate
             sudo -u modelfleet fleetagent doctor
  3. Start:  sudo systemctl enable --now fleetagent
             journalctl -u fleetagent -f
NEXT
	else
		cat <<'NEXT'
  1. Create the signing keys as the service user, then move the root keys
     offline (docs/trust.md):
       sudo -u modelfleet fleethub keys init --dir /etc/modelfleet/keys
  2. Edit /etc/modelfleet/hub.yaml: hub.mqtt.brokers, s3 (for model push),
     api.token (required unless api.addr is loopback).
  3. Start:  sudo systemctl enable --now fleethub
             journalctl -u fleethub -f
  Agents enroll with /etc/modelfleet/keys/root.json.
NEXT
	fi
fi
exit 0
