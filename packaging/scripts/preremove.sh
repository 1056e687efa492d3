#!/bin/sh
# Package preremove script of fleetagent and fleethub (build.sh puts the
# package's name in pkg=). Stops and disables the service when the package
# is removed, not when it is upgraded (postinstall restarts it then).
# deb: $1 is remove, upgrade, deconfigure or failed-upgrade; rpm: $1 is 0
# (erase) or 1 (upgrade).
set -e

pkg=@PKG@
case "$1" in
remove | deconfigure | 0)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
