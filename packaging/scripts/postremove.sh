#!/bin/sh
# Package postremove script of fleetagent and fleethub (build.sh puts the
# package's name in pkg=). Removing keeps the data; only a purge (`apt
# purge`, `dpkg --purge`) deletes it. rpm has no purge: delete the directory
# by hand. The modelfleet user stays: the other modelfleet package may use
# it, and a reused user ID could inherit files left behind.
# deb: $1 is remove, purge, upgrade, …; rpm: $1 is 0 (erase) or 1 (upgrade).
set -e

pkg=@PKG@
case "$pkg" in
fleetagent) state_dir=/var/lib/modelfleet/agent ;;
fleethub) state_dir=/var/lib/modelfleet/hub ;;
*) echo "$pkg: postremove: unknown package" >&2; exit 1 ;;
esac

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
	systemctl daemon-reload || true
fi

case "$1" in
purge)
	rm -rf "$state_dir"
	rmdir /var/lib/modelfleet 2>/dev/null || true
	if [ "$pkg" = fleethub ] && [ -d /etc/modelfleet/keys ]; then
		if rmdir /etc/modelfleet/keys 2>/dev/null; then :; else
			echo "$pkg: kept the signing keys in /etc/modelfleet/keys; delete them yourself if you mean to"
		fi
	fi
	rmdir /etc/modelfleet 2>/dev/null || true
	;;
remove | 0)
	if [ -d "$state_dir" ]; then
		echo "$pkg: kept the data in $state_dir (a purge deletes it)"
	fi
	;;
esac
exit 0
