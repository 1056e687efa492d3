#!/bin/sh
# Installs the modelfleet agent (or hub) package that fits this machine:
# .deb with apt-get on Debian and Ubuntu, .rpm with dnf, yum or zypper on
# RHEL, Fedora and SUSE. Checks the download against SHA256SUMS. Never
# starts the service: it prints the next steps instead.
#
#   curl -fsSLO https://github.com/modelfleet/modelfleet/releases/download/v1.2.3/install.sh
#   sudo sh install.sh --version 1.2.3              # fleetagent from the release
#   sudo sh install.sh --from ./dist                 # from a local `make package`
#   sudo sh install.sh --version 1.2.3 fleethub      # the hub instead
#
# Options (or environment variables):
#   --version V   (MODELFLEET_VERSION)  release to install; required with a URL
#   --from SRC    (MODELFLEET_FROM)     directory or base URL holding the
#                 packages and SHA256SUMS; default: the GitHub release of V
#   --dry-run                           print what would be done, change nothing
#   --skip-checksum                     do not require SHA256SUMS (not advised)
#   PACKAGE...                          fleetagent (default) and/or fleethub
set -eu

releases=https://github.com/modelfleet/modelfleet/releases/download

say() { printf 'install.sh: %s\n' "$*"; }
die() {
	printf 'install.sh: error: %s\n' "$*" >&2
	exit 1
}
usage() {
	sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'
}

version=${MODELFLEET_VERSION:-}
from=${MODELFLEET_FROM:-}
dry_run=
verify=yes
packages=
while [ $# -gt 0 ]; do
	case $1 in
	--version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
	--version=*) version=${1#*=}; shift ;;
	--from) [ $# -ge 2 ] || die "--from needs a value"; from=$2; shift 2 ;;
	--from=*) from=${1#*=}; shift ;;
	--dry-run) dry_run=yes; shift ;;
	--skip-checksum) verify=; shift ;;
	-h | --help) usage; exit 0 ;;
	fleetagent | fleethub) packages="$packages $1"; shift ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
packages=${packages:-fleetagent}
version=${version#v}

# --- what this machine is ---------------------------------------------------
[ "$(uname -s)" = Linux ] || die "modelfleet packages are for Linux; this is $(uname -s)"
case $(uname -m) in
x86_64 | amd64) deb_arch=amd64 rpm_arch=x86_64 ;;
aarch64 | arm64) die "no arm64 packages yet (the bundled ONNX Runtime is x86-64 only); build from source: see README.md" ;;
*) die "unsupported architecture $(uname -m); packages exist for x86_64 only" ;;
esac

if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
	format=deb
	installer="apt-get install -y"
elif command -v rpm >/dev/null 2>&1; then
	format=rpm
	if command -v dnf >/dev/null 2>&1; then
		installer="dnf install -y"
	elif command -v yum >/dev/null 2>&1; then
		installer="yum install -y"
	elif command -v zypper >/dev/null 2>&1; then
		installer="zypper --non-interactive install --allow-unsigned-rpm"
	else
		die "found rpm but none of dnf, yum or zypper to install with"
	fi
else
	die "neither apt-get/dpkg nor rpm found: install from source instead (see README.md)"
fi

run=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || [ -n "$dry_run" ] || die "run as root (installing packages needs it)"
	run=sudo
fi
[ -d /run/systemd/system ] || say "note: systemd is not running here; the package installs, but you start fleetagent yourself"

# --- where the packages come from -------------------------------------------
case $from in
'')
	[ -n "$version" ] || die "--version is required to install from the releases (or use --from DIR)"
	from=$releases/v$version
	;;
esac
case $from in
http://* | https://*) remote=yes ;;
*)
	remote=
	[ -d "$from" ] || die "--from $from: no such directory"
	from=$(cd "$from" && pwd)
	;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
# apt-get reads local packages as its unprivileged _apt user.
chmod 0755 "$tmp"

fetch() { # name -> $tmp/name
	if [ -n "$remote" ]; then
		if command -v curl >/dev/null 2>&1; then
			curl -fsSL --retry 3 -o "$tmp/$1" "$from/$1"
		elif command -v wget >/dev/null 2>&1; then
			wget -q -O "$tmp/$1" "$from/$1"
		else
			die "need curl or wget to download from $from"
		fi
	else
		cp "$from/$1" "$tmp/$1"
	fi
}

# pick NAME: the file name of NAME's package. From a directory without
# --version, the one package of this format there.
pick() {
	if [ -n "$version" ]; then
		case $format in
		deb) echo "${1}_${version}_$deb_arch.deb" ;;
		rpm) echo "$1-$version-1.$rpm_arch.rpm" ;;
		esac
		return
	fi
	[ -z "$remote" ] || die "--version is required with a URL"
	case $format in
	deb) set -- "$from/${1}"_*_"$deb_arch.deb" ;;
	rpm) set -- "$from/$1"-*."$rpm_arch.rpm" ;;
	esac
	[ -e "$1" ] || die "no $format package for $deb_arch in $from: build one with make package"
	[ $# = 1 ] || die "several packages in $from; pick one with --version"
	basename "$1"
}

if [ -n "$dry_run" ]; then
	for p in $packages; do
		f=$(pick "$p")
		[ -z "$verify" ] || echo "would check against $from/SHA256SUMS"
		echo "would install $from/$f with: $run $installer"
	done
	exit 0
fi
if [ -n "$verify" ]; then
	fetch SHA256SUMS || die "no SHA256SUMS at $from (--skip-checksum installs unchecked; not advised)"
fi
files=
for p in $packages; do
	f=$(pick "$p")
	say "fetching $f from $from"
	fetch "$f" || die "could not get $from/$f: is $version a released version?"
	if [ -n "$verify" ]; then
		want=$(awk -v f="$f" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")
		[ -n "$want" ] || die "$f is not listed in SHA256SUMS"
		got=$(sha256sum "$tmp/$f" | cut -d' ' -f1)
		[ "$got" = "$want" ] || die "$f: checksum mismatch (got $got, want $want); not installing"
	fi
	files="$files $tmp/$f"
done

# --- install --------------------------------------------------------------------
say "installing with: $run $installer"
# shellcheck disable=SC2086 # word splitting of the command and files is intended
$run $installer $files

say "done. Next:"
for p in $packages; do
	case $p in
	fleetagent)
		cat <<'EOF'
  fleetagent: enroll with a token from `fleethub devices enroll-token`:
    sudo fleetagent enroll --hub https://HUB:8400 --token mfe_...
  then
    sudo -u modelfleet fleetagent config validate
    sudo systemctl enable --now fleetagent
EOF
		;;
	fleethub)
		cat <<'EOF'
  fleethub: sudo -u modelfleet fleethub keys init --dir /etc/modelfleet/keys,
  edit /etc/modelfleet/hub.yaml, then
    sudo systemctl enable --now fleethub
EOF
		;;
	esac
done
