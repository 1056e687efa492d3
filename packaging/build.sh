#!/usr/bin/env bash
# Builds the fleetagent and fleethub packages (.deb and .rpm) into dist/ with
# nfpm (a Go tool dependency in go.mod). Run through `make package`, which
# first runs `make deps` for the ONNX Runtime library the agent package ships.
#
# Environment:
#   VERSION         version stamped into the binaries (default: git describe,
#                   as `make build` does)
#   PKG_VERSION     package version (default: derived from VERSION, see below)
#   PKG_ARCH        amd64 only for now: the bundled ONNX Runtime is x86-64
#   PKGS            packages to build (default: "fleetagent fleethub")
#   FORMATS         package formats (default: "deb rpm")
#   DIST            output directory (default: dist); SHA256SUMS lists every
#                   package in it
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf 'package: %s\n' "$*"; }
die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
PKG_ARCH=${PKG_ARCH:-amd64}
PKGS=${PKGS:-fleetagent fleethub}
FORMATS=${FORMATS:-deb rpm}
DIST=${DIST:-dist}
ort_lib=.deps/lib/libonnxruntime.so.1

# pkg_version turns a `git describe` result into a version dpkg and rpm both
# order correctly: v1.2.3 -> 1.2.3; v1.2.3-4-gabc1234 -> 1.2.3+4.gabc1234
# (after 1.2.3); an untagged abc1234 -> 0.0.0+git<commits>.abc1234; a
# trailing -dirty becomes .dirty. No '-' survives (rpm forbids it in a
# version; dpkg would read it as a revision).
pkg_version() {
	local v=$1 dirty=
	if [[ $v == *-dirty ]]; then
		v=${v%-dirty} dirty=.dirty
	fi
	if [[ $v =~ ^v?([0-9]+\.[0-9]+\.[0-9]+)(-([0-9A-Za-z.]+))?(-([0-9]+)-(g[0-9a-f]+))?$ ]]; then
		local out=${BASH_REMATCH[1]}
		# A pre-release tag (v1.2.3-rc.1) sorts before the release: ~.
		[ -n "${BASH_REMATCH[3]}" ] && out+="~${BASH_REMATCH[3]}"
		[ -n "${BASH_REMATCH[5]}" ] && out+="+${BASH_REMATCH[5]}.${BASH_REMATCH[6]}"
		printf '%s%s\n' "$out" "$dirty"
	elif [[ $v =~ ^[0-9a-f]{7,40}$ ]]; then
		printf '0.0.0+git%s.%s%s\n' "$(git rev-list --count HEAD 2>/dev/null || echo 0)" "$v" "$dirty"
	else
		die "cannot make a package version from VERSION=$1; set PKG_VERSION (e.g. 1.2.3)"
	fi
}
PKG_VERSION=${PKG_VERSION:-$(pkg_version "$VERSION")}
[[ $PKG_VERSION =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "PKG_VERSION=$PKG_VERSION: use digits, letters and . + ~ only, starting with a digit"

[ "$PKG_ARCH" = amd64 ] || die "PKG_ARCH=$PKG_ARCH: only amd64 packages can be built (the bundled ONNX Runtime library is x86-64)"
[ "$(go env GOARCH)" = amd64 ] || die "building amd64 packages needs an amd64 Go toolchain (cgo, for the agent)"
[ -f "$ort_lib" ] || die "$ort_lib is missing: run make deps (make package does)"

mkdir -p "$DIST" dist/.tools
ldflags="-s -w -X github.com/modelfleet/modelfleet/internal/buildinfo.Version=$VERSION"

# nfpm, at the version go.mod pins (tool directive).
go build -o dist/.tools/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm

export PKG_ARCH PKG_VERSION ROOT="$root"
export PKG_MAINTAINER=${PKG_MAINTAINER:-modelfleet maintainers <maintainers@modelfleet.invalid>}
export PKG_HOMEPAGE=${PKG_HOMEPAGE:-https://github.com/modelfleet/modelfleet}

for pkg in $PKGS; do
	# Always dist/.stage, whatever DIST: the nfpm configs name the scripts
	# there (nfpm does not expand variables in script paths).
	stage=dist/.stage/$pkg
	rm -rf "$stage"
	mkdir -p "$stage"
	case $pkg in
	# The agent needs cgo (ONNX Runtime is loaded with dlopen, NVML too).
	fleetagent) CGO_ENABLED=1 go build -trimpath -ldflags "$ldflags" -o "$stage/" ./cmd/fleetagent ;;
	# The hub is pure Go: a static binary runs on any glibc or musl system.
	fleethub) CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$stage/" ./cmd/fleethub ;;
	*) die "unknown package $pkg (fleetagent, fleethub)" ;;
	esac
	# DIST holds one version of each package: the one built last.
	rm -f "$DIST/${pkg}"_*.deb "$DIST/$pkg"-*.rpm
	for s in preinstall postinstall preremove postremove; do
		sed "s/@PKG@/$pkg/g" "packaging/scripts/$s.sh" >"$stage/$s.sh"
	done
	for format in $FORMATS; do
		case $format in
		deb) file=${pkg}_${PKG_VERSION}_${PKG_ARCH}.deb ;;
		rpm) file=$pkg-${PKG_VERSION}-1.x86_64.rpm ;;
		*) die "unknown format $format (deb, rpm)" ;;
		esac
		if ! out=$(STAGE=$root/$stage dist/.tools/nfpm package --config "packaging/nfpm/$pkg.yaml" \
			--packager "$format" --target "$DIST/$file" 2>&1); then
			printf '%s\n' "$out" >&2
			die "nfpm failed for $DIST/$file"
		fi
		log "$DIST/$file ($(du -h "$DIST/$file" | cut -f1))"
	done
done

# Checksums of every package in DIST, for install.sh and release pages.
(
	cd "$DIST"
	shopt -s nullglob
	pkgs=(*.deb *.rpm)
	sha256sum -- "${pkgs[@]}" >SHA256SUMS.tmp
	mv SHA256SUMS.tmp SHA256SUMS
)
log "$DIST/SHA256SUMS"
# The install script goes on release pages beside the packages.
cp packaging/install.sh "$DIST/install.sh"
