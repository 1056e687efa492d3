#!/usr/bin/env bash
# Installs everything modelfleet's build, tests and demo need on a Debian 12
# machine. Idempotent: every step checks its result first, and downloads are
# cached under .deps/ (git-ignored). Run through `make deps`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/.deps"
mkdir -p "$deps/bin" "$deps/lib" "$deps/cache"

# Pinned versions. onnxruntime_go v1.27.0 (go.mod) speaks ORT C API version
# 24+; ONNX Runtime 1.30.0 provides it (see docs/dependencies.md).
ORT_VERSION=1.30.0
ORT_TGZ_SHA256=6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75
ORT_LIB_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
STATICCHECK_VERSION=v0.8.2

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || die "need root or sudo to install Debian packages"
	sudo_cmd=(sudo)
fi

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- Debian packages ---------------------------------------------------------
need_apt=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
	log "installing Debian packages: ${need_apt[*]}"
	"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
	# Tests start their own brokers; the packaged system service is not wanted.
	if [[ " ${need_apt[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
		"${sudo_cmd[@]}" systemctl disable --now mosquitto >/dev/null 2>&1 || true
	fi
fi
log "mosquitto: $(command -v mosquitto || echo /usr/sbin/mosquitto)"

# --- ONNX Runtime shared library ---------------------------------------------
lib="$deps/lib/libonnxruntime.so.1"
if [ ! -f "$lib" ] || [ "$(sha256_of "$lib")" != "$ORT_LIB_SHA256" ]; then
	tgz="$deps/cache/onnxruntime-node-$ORT_VERSION.tgz"
	if [ ! -f "$tgz" ] || [ "$(sha256_of "$tgz")" != "$ORT_TGZ_SHA256" ]; then
		rm -f "$tgz"
		log "downloading onnxruntime-node@$ORT_VERSION (about 115 MB)"
		if command -v npm >/dev/null; then
			(cd "$deps/cache" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
		else
			curl -fsSL --retry 3 -o "$tgz.tmp" \
				"https://registry.npmjs.org/onnxruntime-node/-/onnxruntime-node-$ORT_VERSION.tgz"
			mv "$tgz.tmp" "$tgz"
		fi
		got=$(sha256_of "$tgz")
		[ "$got" = "$ORT_TGZ_SHA256" ] || { rm -f "$tgz"; die "onnxruntime-node tarball checksum mismatch: got $got, want $ORT_TGZ_SHA256"; }
	fi
	tmp=$(mktemp -d)
	tar -xzf "$tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
	got=$(sha256_of "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1")
	[ "$got" = "$ORT_LIB_SHA256" ] || { rm -rf "$tmp"; die "libonnxruntime.so.1 checksum mismatch: got $got, want $ORT_LIB_SHA256"; }
	mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$lib.tmp"
	mv "$lib.tmp" "$lib"
	rm -rf "$tmp"
fi
log "onnxruntime $ORT_VERSION: $lib"

# --- Go tools ----------------------------------------------------------------
go_install() { # name module@version
	if [ ! -x "$deps/bin/$1" ]; then
		log "building $1 ($2); this can take a few minutes"
		GOBIN="$deps/bin" CGO_ENABLED=0 go install "$2"
	fi
	log "$1: $deps/bin/$1"
}
go_install minio "github.com/minio/minio@$MINIO_VERSION"
go_install staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
