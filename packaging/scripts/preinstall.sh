#!/bin/sh
# Package preinstall script of fleetagent and fleethub (build.sh puts the
# package's name in pkg=). Creates the modelfleet system user before the
# files are unpacked, so the package's config file can belong to group
# modelfleet.
# deb: $1 is install or upgrade; rpm: $1 is 1 (install) or 2 (upgrade).
set -e

if ! getent group modelfleet >/dev/null; then
	groupadd --system modelfleet
fi
if ! getent passwd modelfleet >/dev/null; then
	useradd --system --gid modelfleet --home-dir /var/lib/modelfleet \
		--no-create-home --shell /usr/sbin/nologin \
		--comment "modelfleet services" modelfleet
fi
exit 0
