#!/usr/bin/env bash
# Installs the .deb packages from dist/ into a clean Debian 12 root and checks
# what an operator relies on: files, modes and owners, the modelfleet user,
# the systemd units, the binaries running, the documented first steps, an
# edited config surviving reinstall and upgrade, data surviving removal and
# going on purge. Also checks the .rpm files' contents and scripts.
#
# Run through `make package-test` (builds the packages first, with the same
# VERSION). Needs root
# (chroot). The pristine root (debootstrap --variant=minbase bookworm) is
# cached in .deps/cache/; delete it to start cold.
#
# Environment: DIST (default dist), VERSION (as for build.sh),
# DEBIAN_MIRROR (default http://deb.debian.org/debian),
# KEEP_ROOT=1 keeps the test root for inspection.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
DIST=${DIST:-dist}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
cache=$root/.deps/cache
pristine=$cache/debian-bookworm-minbase-amd64.tar.gz
start=$SECONDS
checks=0

step() { printf '\n== %s\n' "$*"; }
ok() { checks=$((checks + 1)); printf '  ok   %s\n' "$*"; }
fail() { printf '  FAIL %s\n' "$*" >&2; exit 1; }
die() { printf 'package-test: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs packages into a chroot): sudo make package-test"
shopt -s nullglob
debs=("$DIST"/fleetagent_*_amd64.deb)
[ ${#debs[@]} = 1 ] || die "want exactly one $DIST/fleetagent_*_amd64.deb, found ${#debs[@]}: run make package (after make clean if there are several)"
agent_deb=${debs[0]}
debs=("$DIST"/fleethub_*_amd64.deb)
[ ${#debs[@]} = 1 ] || die "want exactly one $DIST/fleethub_*_amd64.deb, found ${#debs[@]}: run make package"
hub_deb=${debs[0]}
rpms=("$DIST"/fleetagent-*.x86_64.rpm "$DIST"/fleethub-*.x86_64.rpm)
[ ${#rpms[@]} = 2 ] || die "want one .rpm per package in $DIST, found ${#rpms[@]}: run make package"
shopt -u nullglob
pkg_version=$(dpkg-deb -f "$agent_deb" Version)

need_apt=()
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v rpm >/dev/null || need_apt+=(rpm)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
BOOT=${PACKAGE_TEST_BOOT:-1}
if [ "$BOOT" = 1 ]; then
	command -v systemd-nspawn >/dev/null || need_apt+=(systemd-container)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
	step "installing ${need_apt[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/modelfleet-package-test.XXXXXX")
cleanup() {
	if [ "${KEEP_ROOT:-}" = 1 ]; then
		echo "kept the test root in $work/root"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
r=$work/root
# Commands in the root get a clean environment, as under systemd: nothing
# from this shell (make exports MODELFLEET_ORT_LIB, for one) leaks in.
clean_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
in_root() { chroot "$r" "${clean_env[@]}" HOME=/root "$@"; }
as_service() { chroot --userspec=modelfleet:modelfleet "$r" "${clean_env[@]}" HOME=/var/lib/modelfleet "$@"; }

# --- a clean Debian 12 ---------------------------------------------------------
if [ ! -f "$pristine" ]; then
	step "debootstrap --variant=minbase bookworm (once; cached in $pristine)"
	t=$SECONDS
	mkdir -p "$cache" "$work/boot"
	debootstrap --variant=minbase --arch=amd64 bookworm "$work/boot" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	rm -rf "$work/boot/var/cache/apt/archives/"*.deb
	tar -C "$work/boot" --numeric-owner -czf "$pristine.tmp" .
	mv "$pristine.tmp" "$pristine"
	rm -rf "${work:?}/boot"
	echo "  debootstrap took $((SECONDS - t)) s"
fi
step "unpacking a copy of the pristine root"
mkdir "$r"
tar -C "$r" --numeric-owner -xzf "$pristine"
in_root test -x /usr/bin/dpkg || die "$pristine is not a Debian root; delete it and rerun"
cp "$agent_deb" "$hub_deb" "$r/tmp/"
agent_in=/tmp/$(basename "$agent_deb")
hub_in=/tmp/$(basename "$hub_deb")

# --- install -----------------------------------------------------------------
step "dpkg -i fleetagent fleethub ($pkg_version)"
in_root dpkg -i "$agent_in" "$hub_in" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i"; }
for want in "fleetagent is installed. The service is not enabled yet" "systemctl enable --now fleetagent" \
	"fleethub is installed. The service is not enabled yet" "sudo -u modelfleet fleethub keys init --dir /etc/modelfleet/keys"; do
	grep -qF "$want" "$work/install.log" || { cat "$work/install.log" >&2; fail "install output lacks: $want"; }
done
ok "installed; printed the next steps"
sed -n '/fleetagent is installed/,/journalctl -u fleetagent/p' "$work/install.log" | sed 's/^/     | /'

step "the modelfleet user"
IFS=: read -r _ _ uid gid _ home shell < <(in_root getent passwd modelfleet) || fail "no modelfleet user"
if [ "$uid" -ge 1000 ] || [ "$home" != /var/lib/modelfleet ] || [ "$shell" != /usr/sbin/nologin ]; then
	fail "modelfleet user: uid $uid home $home shell $shell; want a system uid, /var/lib/modelfleet, /usr/sbin/nologin"
fi
[ "$(in_root getent group modelfleet | cut -d: -f3)" = "$gid" ] || fail "modelfleet's primary group is not modelfleet"
ok "system user modelfleet (uid $uid), home /var/lib/modelfleet, no login shell"

# check_files reads lines "path mode owner group" and compares with the root.
check_files() {
	local path mode owner group got
	while read -r path mode owner group; do
		[ -n "$path" ] || continue
		got=$(in_root stat -c '%a %U %G' "$path" 2>/dev/null) || fail "$path is missing"
		[ "$got" = "$mode $owner $group" ] || fail "$path: $got, want $mode $owner $group"
		ok "$(printf '%-48s %s' "$path" "$got")"
	done
}
step "files, modes and owners"
check_files <<'EOF'
/usr/bin/fleetagent                            755 root root
/usr/bin/fleethub                              755 root root
/usr/lib/modelfleet                            755 root root
/usr/lib/modelfleet/libonnxruntime.so.1        644 root root
/usr/share/doc/fleetagent/onnxruntime-LICENSE  644 root root
/usr/lib/systemd/system/fleetagent.service     644 root root
/usr/lib/systemd/system/fleethub.service       644 root root
/etc/modelfleet                                750 root modelfleet
/etc/modelfleet/agent.yaml                     640 root modelfleet
/etc/modelfleet/hub.yaml                       640 root modelfleet
/etc/modelfleet/keys                           700 modelfleet modelfleet
/var/lib/modelfleet                            755 root root
/var/lib/modelfleet/agent                      750 modelfleet modelfleet
/var/lib/modelfleet/hub                        750 modelfleet modelfleet
EOF
cmp -s "$r/usr/lib/modelfleet/libonnxruntime.so.1" .deps/lib/libonnxruntime.so.1 || fail "packaged ONNX Runtime differs from .deps/lib"
ok "libonnxruntime.so.1 is the checksum-verified one from make deps"
for p in fleetagent:/etc/modelfleet/agent.yaml fleethub:/etc/modelfleet/hub.yaml; do
	in_root dpkg-query -W -f="\${Conffiles}\n" "${p%%:*}" | grep -q " ${p#*:} " || fail "${p#*:} is not a conffile of ${p%%:*}"
done
ok "agent.yaml and hub.yaml are conffiles (edits survive upgrades)"
if in_root ldd /usr/lib/modelfleet/libonnxruntime.so.1 | grep -q 'not found'; then
	in_root ldd /usr/lib/modelfleet/libonnxruntime.so.1 >&2
	fail "libonnxruntime.so.1 misses libraries on Debian 12"
fi
ok "libonnxruntime.so.1 finds all its libraries (ldd)"

step "the binaries run"
for bin in fleetagent fleethub; do
	out=$(in_root "$bin" --version 2>&1) || fail "$bin --version: $out"
	[[ $out == *"$VERSION"* ]] || fail "$bin --version printed \"$out\", want it to name $VERSION (dist/ is stale? run make package)"
	ok "$bin --version: $out"
done

step "the documented first steps, as the service user"
out=$(as_service fleetagent config validate 2>&1) && fail "config validate passed without a trust root"
# One line per problem after the "configuration has problems:" line.
problems=$(tail -n +2 <<<"$out" | grep -c . || true)
if [[ $out != *"trust_root: stat /etc/modelfleet/root.json: no such file or directory"* ]] || [ "$problems" != 1 ]; then
	echo "$out" >&2
	fail "fresh agent.yaml: want exactly one problem, the missing trust root"
fi
ok "fleetagent config validate on the shipped agent.yaml: only the trust root is missing"
as_service fleethub keys init --dir /etc/modelfleet/keys >"$work/keys.log" 2>&1 || { cat "$work/keys.log" >&2; fail "fleethub keys init as modelfleet"; }
ok "sudo -u modelfleet fleethub keys init --dir /etc/modelfleet/keys"
# The hub on the shipped hub.yaml, as the service user, with its API on a
# free loopback port (nothing on this machine can collide), and an S3
# endpoint to hand to enrolled agents. No broker or S3 runs: the hub keeps
# retrying the broker in the background while the API answers.
chroot --userspec=modelfleet:modelfleet "$r" "${clean_env[@]}" HOME=/var/lib/modelfleet \
	fleethub serve --api-addr 127.0.0.1:0 --s3-endpoint http://127.0.0.1:9000 --s3-bucket models >"$work/serve.log" 2>&1 &
serve_pid=$!
stop_hub() {
	if kill "$serve_pid" 2>/dev/null; then
		wait "$serve_pid" 2>/dev/null || true
	fi
}
trap 'stop_hub; cleanup' EXIT
hub_url=
for _ in $(seq 60); do
	hub_url=$(grep 'fleethub API listening' "$work/serve.log" | grep -o 'addr=http://[0-9.:]*' | sed 's/^addr=//' || true)
	[ -z "$hub_url" ] || break
	kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; fail "fleethub serve exited on the shipped hub.yaml"; }
	sleep 0.5
done
[ -n "$hub_url" ] || { cat "$work/serve.log" >&2; fail "fleethub serve did not start its API within 30 s"; }
[ "$(in_root stat -c %U /var/lib/modelfleet/hub/hub.db)" = modelfleet ] || fail "hub.db is not owned by modelfleet"
ok "fleethub serve runs on the shipped hub.yaml as modelfleet ($hub_url, store /var/lib/modelfleet/hub/hub.db)"
# Enroll the agent exactly as the postinstall message says.
in_root fleethub devices enroll-token --hub "$hub_url" --device-id press-01 -o json >"$work/token.json" 2>&1 ||
	{ cat "$work/token.json" >&2; fail "fleethub devices enroll-token"; }
token=$(grep -o '"token": *"[^"]*"' "$work/token.json" | sed 's/.*"\([^"]*\)"$/\1/')
[ -n "$token" ] || { cat "$work/token.json" >&2; fail "no token in the output of fleethub devices enroll-token -o json"; }
in_root fleetagent enroll --hub "$hub_url" --token "$token" >"$work/enroll.log" 2>&1 ||
	{ cat "$work/enroll.log" >&2; fail "fleetagent enroll"; }
[ -f "$r/etc/modelfleet/agent.yaml.pre-enroll" ] || fail "enroll did not keep the package's template as agent.yaml.pre-enroll"
for f in agent.yaml device-key.pem; do
	got=$(in_root stat -c '%U:%G %a' "/etc/modelfleet/$f")
	[ "$got" = "root:modelfleet 640" ] || fail "/etc/modelfleet/$f after enroll: $got, want root:modelfleet 640"
done
ok "fleetagent enroll over the package's template, exactly as the next steps say"
stop_hub
out=$(as_service fleetagent config validate 2>&1) || { echo "$out" >&2; fail "config validate as modelfleet after enrolling"; }
ok "after enrolling, as modelfleet: $out"
# doctor as the service user: the packaged ONNX Runtime loads (dlopen, as
# `fleetagent run` will) and the state directory is writable. Its broker and
# S3 checks depend on this machine's ports, so only these two are asserted.
as_service fleetagent doctor -o json >"$work/doctor.json" 2>&1 || true
doctor=$(tr -d '\n' <"$work/doctor.json")
for c in onnxruntime data_dir; do
	grep -qE "\"name\": *\"$c\", *\"status\": *\"ok\"" <<<"$doctor" || { cat "$work/doctor.json" >&2; fail "fleetagent doctor: check $c is not ok"; }
done
grep -q 'loads from /usr/lib/modelfleet/libonnxruntime.so.1' <<<"$doctor" || { cat "$work/doctor.json" >&2; fail "doctor did not load the packaged ONNX Runtime"; }
ok "fleetagent doctor as modelfleet: the packaged ONNX Runtime loads, /var/lib/modelfleet/agent is writable"

step "systemd units"
# Verify the installed units, with their ExecStart pointing into the root.
mkdir "$work/units"
for u in fleetagent fleethub; do
	sed "s#/usr/bin/#$r/usr/bin/#g" "$r/usr/lib/systemd/system/$u.service" >"$work/units/$u.service"
done
out=$(systemd-analyze verify "$work/units/fleetagent.service" "$work/units/fleethub.service" 2>&1) ||
	{ echo "$out" >&2; fail "systemd-analyze verify"; }
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify printed warnings"; }
ok "systemd-analyze verify: no errors, no warnings (systemd $(systemctl --version | awk 'NR==1{print $2}'))"
for u in fleetagent fleethub; do
	out=$(systemd-analyze security --offline=yes --threshold=25 "$work/units/$u.service" 2>&1) ||
		{ echo "$out" | tail -5 >&2; fail "$u.service exposure is above 2.5"; }
	ok "$u.service: $(grep -o 'Overall exposure level.*' <<<"$out")"
done

# --- the units under a real systemd --------------------------------------------
# A second root with systemd, booted with systemd-nspawn: a driver unit
# enables both services (the agent enrolled, nothing listening on its broker),
# records what the kernel says about the running processes, kills the agent
# to see it restarted, and powers off. PACKAGE_TEST_BOOT=0 skips this.
if [ "$BOOT" = 1 ]; then
	step "booting a Debian 12 root with systemd-nspawn: the units start, hardened"
	booted=$cache/debian-bookworm-minbase-systemd-amd64.tar.gz
	if [ ! -f "$booted" ]; then
		echo "  adding systemd to the pristine root (once; cached in $booted)"
		mkdir "$work/sd"
		tar -C "$work/sd" --numeric-owner -xzf "$pristine"
		cp /etc/resolv.conf "$work/sd/etc/resolv.conf"
		chroot "$work/sd" "${clean_env[@]}" DEBIAN_FRONTEND=noninteractive sh -c \
			'apt-get update -q && apt-get install -y -q --no-install-recommends systemd systemd-sysv dbus && apt-get clean' \
			>"$work/sd.log" 2>&1 || { tail -20 "$work/sd.log" >&2; die "could not install systemd in the test root (log above)"; }
		rm -rf "$work/sd/var/lib/apt/lists/"*
		tar -C "$work/sd" --numeric-owner -czf "$booted.tmp" .
		mv "$booted.tmp" "$booted"
		rm -rf "${work:?}/sd"
	fi
	b=$work/booted
	mkdir "$b"
	tar -C "$b" --numeric-owner -xzf "$booted"
	cp "$agent_deb" "$hub_deb" "$b/tmp/"
	chroot "$b" "${clean_env[@]}" dpkg -i "$agent_in" "$hub_in" >"$work/boot-install.log" 2>&1 ||
		{ cat "$work/boot-install.log" >&2; fail "dpkg -i in the systemd root"; }
	chroot --userspec=modelfleet:modelfleet "$b" "${clean_env[@]}" fleethub keys init --dir /etc/modelfleet/keys >/dev/null
	install -m 0644 "$b/etc/modelfleet/keys/root.json" "$b/etc/modelfleet/root.json"
	echo modelfleet-package-test >"$b/etc/hostname"
	cat >"$b/usr/local/sbin/modelfleet-package-test" <<'DRIVER'
#!/bin/sh
exec >/package-test.out 2>&1
systemctl enable --now fleetagent fleethub
sleep 10
for u in fleetagent fleethub; do
	pid=$(systemctl show -p MainPID --value "$u")
	echo "unit $u $(systemctl show -p ActiveState -p SubState -p NRestarts "$u" | tr '\n' ' ')"
	grep -E '^(NoNewPrivs|Seccomp|CapEff):' "/proc/$pid/status" | tr -d '\t' | sed "s/^/status $u /"
	awk -v u="$u" '{ print "mount", u, $5, $6 }' "/proc/$pid/mountinfo"
done
systemctl kill -s KILL fleetagent
sleep 9
echo "after-kill fleetagent $(systemctl show -p ActiveState -p SubState -p NRestarts fleetagent | tr '\n' ' ')"
journalctl --no-pager -b -u fleetagent -u fleethub
journalctl --no-pager -b | grep -i 'WITHOUT applying ACL'
systemctl poweroff
DRIVER
	chmod 0755 "$b/usr/local/sbin/modelfleet-package-test"
	cat >"$b/etc/systemd/system/modelfleet-package-test.service" <<'UNIT'
[Unit]
Description=modelfleet package test driver
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/modelfleet-package-test
UNIT
	ln -s /etc/systemd/system/modelfleet-package-test.service "$b/etc/systemd/system/multi-user.target.wants/"
	timeout 300 systemd-nspawn -D "$b" --boot --register=no --keep-unit --console=pipe -q >"$work/nspawn.log" 2>&1 ||
		{ tail -20 "$work/nspawn.log" >&2; fail "systemd-nspawn --boot failed (PACKAGE_TEST_BOOT=0 skips this step)"; }
	res=$b/package-test.out
	[ -f "$res" ] || { tail -20 "$work/nspawn.log" >&2; fail "the driver unit did not run in the booted root"; }
	show_res() { cat "$res" >&2; }
	for u in fleetagent fleethub; do
		grep -q "^unit $u NRestarts=0 ActiveState=active SubState=running" "$res" || { show_res; fail "$u.service is not running after 10 s"; }
		for want in "status $u CapEff:0000000000000000" "status $u NoNewPrivs:1" "status $u Seccomp:2" \
			"mount $u / ro," "mount $u /var/lib/modelfleet/${u#fleet} rw,"; do
			grep -q "^$want" "$res" || { show_res; fail "$u.service: want \"$want\" (capabilities, seccomp, mounts)"; }
		done
		ok "$u.service active (running) under systemd 252: no capabilities, no_new_privs, seccomp filter, / read-only, its state dir writable"
	done
	grep -q 'msg="ONNX Runtime loaded".*path=/usr/lib/modelfleet/libonnxruntime.so.1' "$res" || { show_res; fail "the agent did not load the packaged ONNX Runtime"; }
	ok "the agent loaded the packaged ONNX Runtime under the unit's sandbox, without an NVIDIA device (DevicePolicy=closed, DeviceAllow=char-nvidia*)"
	if grep -q 'WITHOUT applying ACL' "$res"; then
		echo "  note systemd could not apply the device allow-list here (no BPF device controller)"
	fi
	grep -q "^after-kill fleetagent NRestarts=1 ActiveState=active SubState=running" "$res" || { show_res; fail "fleetagent was not restarted after SIGKILL"; }
	ok "fleetagent restarted by systemd after SIGKILL (Restart=on-failure, RestartSec=5s)"
fi

step "reinstall and upgrade keep an edited config and the data"
echo "# edited by package-test" >>"$r/etc/modelfleet/agent.yaml"
echo "edited by package-test" >>"$r/etc/modelfleet/hub.yaml"
edited_agent=$(sha256sum <"$r/etc/modelfleet/agent.yaml")
edited_hub=$(sha256sum <"$r/etc/modelfleet/hub.yaml")
echo data >"$r/var/lib/modelfleet/agent/marker"
in_root chown modelfleet:modelfleet /var/lib/modelfleet/agent/marker
in_root dpkg -i "$agent_in" "$hub_in" >"$work/reinstall.log" 2>&1 </dev/null || { cat "$work/reinstall.log" >&2; fail "reinstall"; }
ok "reinstalled $pkg_version"
upgrade_version=$pkg_version.1
DIST=$work/upgrade PKG_VERSION=$upgrade_version FORMATS=deb VERSION=$VERSION packaging/build.sh | sed 's/^/  /'
cp "$work"/upgrade/*.deb "$r/tmp/"
in_root dpkg -i "/tmp/fleetagent_${upgrade_version}_amd64.deb" "/tmp/fleethub_${upgrade_version}_amd64.deb" \
	>"$work/upgrade.log" 2>&1 </dev/null || { cat "$work/upgrade.log" >&2; fail "upgrade"; }
[ "$(in_root dpkg-query -W -f="\${Version}" fleetagent)" = "$upgrade_version" ] || fail "fleetagent was not upgraded"
ok "upgraded to $upgrade_version"
grep -q "is installed. The service is not enabled yet" "$work/upgrade.log" && fail "the upgrade printed the first-install steps again"
ok "the upgrade did not repeat the first-install steps"
[ "$(sha256sum <"$r/etc/modelfleet/agent.yaml")" = "$edited_agent" ] || fail "agent.yaml edit lost"
[ "$(sha256sum <"$r/etc/modelfleet/hub.yaml")" = "$edited_hub" ] || fail "hub.yaml edit lost"
ok "edited agent.yaml and hub.yaml kept"
check_files <<'EOF'
/etc/modelfleet/agent.yaml                     640 root modelfleet
/var/lib/modelfleet/agent/marker               644 modelfleet modelfleet
EOF
[ -z "$(find "$r/etc/modelfleet" -name '*.dpkg-*')" ] || fail "dpkg left .dpkg-* files: $(find "$r/etc/modelfleet" -name '*.dpkg-*')"
ok "no .dpkg-new/.dpkg-dist files"

step "remove keeps configuration and data"
in_root dpkg -r fleetagent fleethub >"$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; fail "dpkg -r"; }
in_root test ! -e /usr/bin/fleetagent || fail "/usr/bin/fleetagent still there after remove"
in_root test ! -e /usr/lib/modelfleet/libonnxruntime.so.1 || fail "ONNX Runtime still there after remove"
ok "binaries, library and units gone"
grep -q "fleetagent: kept the data in /var/lib/modelfleet/agent" "$work/remove.log" || { cat "$work/remove.log" >&2; fail "remove did not say it kept the data"; }
[ "$(sha256sum <"$r/etc/modelfleet/agent.yaml")" = "$edited_agent" ] || fail "agent.yaml changed or gone after remove"
in_root test -f /var/lib/modelfleet/agent/marker || fail "agent data gone after remove"
in_root test -f /var/lib/modelfleet/hub/hub.db || fail "hub store gone after remove"
in_root getent passwd modelfleet >/dev/null || fail "modelfleet user gone after remove"
ok "config, /var/lib/modelfleet/{agent,hub} and the modelfleet user kept"

step "purge deletes configuration and data"
in_root dpkg -P fleetagent fleethub >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg -P"; }
for gone in /etc/modelfleet/agent.yaml /etc/modelfleet/hub.yaml /var/lib/modelfleet/agent /var/lib/modelfleet/hub /var/lib/modelfleet; do
	in_root test ! -e "$gone" || fail "$gone still there after purge"
done
ok "configs and /var/lib/modelfleet gone"
in_root test -f /etc/modelfleet/keys/root.json || fail "purge deleted the signing keys"
grep -q "kept the signing keys in /etc/modelfleet/keys" "$work/purge.log" || fail "purge did not say it kept the keys"
ok "signing keys in /etc/modelfleet/keys kept, and said so"

step "install.sh"
mkdir "$r/tmp/dist"
cp "$agent_deb" "$hub_deb" "$DIST/SHA256SUMS" "$r/tmp/dist/"
cp packaging/install.sh "$r/tmp/install.sh"
out=$(in_root sh /tmp/install.sh --dry-run --version 1.2.3 fleetagent fleethub 2>&1) || { echo "$out" >&2; fail "install.sh --dry-run"; }
for want in "would install https://github.com/modelfleet/modelfleet/releases/download/v1.2.3/fleetagent_1.2.3_amd64.deb with:  apt-get install -y" \
	"would check against https://github.com/modelfleet/modelfleet/releases/download/v1.2.3/SHA256SUMS" \
	"releases/download/v1.2.3/fleethub_1.2.3_amd64.deb"; do
	[[ $out == *"$want"* ]] || { echo "$out" >&2; fail "install.sh --dry-run --version 1.2.3 lacks: $want"; }
done
ok "install.sh --version 1.2.3 --dry-run: the release URLs, SHA256SUMS, apt-get"
mv "$r/usr/bin/apt-get" "$r/usr/bin/apt-get.off"
out=$(in_root sh /tmp/install.sh --from /tmp/dist 2>&1) && fail "install.sh ran without apt-get or rpm"
mv "$r/usr/bin/apt-get.off" "$r/usr/bin/apt-get"
[[ $out == *"neither apt-get/dpkg nor rpm found"* ]] || { echo "$out" >&2; fail "install.sh without a package manager: unclear refusal"; }
ok "install.sh refuses a system without apt-get or rpm: ${out#install.sh: error: }"
cp -r "$r/tmp/dist" "$r/tmp/bad"
zeros=$(printf '%064d' 0)
sed -i -E "s/^[0-9a-f]{64}/$zeros/" "$r/tmp/bad/SHA256SUMS"
out=$(in_root sh /tmp/install.sh --from /tmp/bad 2>&1) && fail "install.sh installed a package whose checksum is wrong"
[[ $out == *"checksum mismatch"* ]] || { echo "$out" >&2; fail "install.sh on a bad checksum: unclear refusal"; }
in_root dpkg-query -W fleetagent >/dev/null 2>&1 && fail "install.sh installed fleetagent despite the checksum"
ok "install.sh refuses a package that does not match SHA256SUMS"
in_root sh /tmp/install.sh --from /tmp/dist fleetagent fleethub >"$work/install-sh.log" 2>&1 </dev/null ||
	{ cat "$work/install-sh.log" >&2; fail "install.sh --from /tmp/dist"; }
for p in fleetagent fleethub; do
	[ "$(in_root dpkg-query -W -f="\${Status}" "$p")" = "install ok installed" ] || fail "install.sh did not install $p"
done
grep -q "sudo systemctl enable --now fleetagent" "$work/install-sh.log" || fail "install.sh did not print the next step"
ok "install.sh --from DIR installed fleetagent and fleethub with apt-get and printed the next steps"

step ".rpm packages (contents and scripts; not installed: this is Debian)"
for pkg in fleetagent fleethub; do
	rpm_file=$(ls "$DIST/$pkg"-*.x86_64.rpm)
	case $pkg in
	fleetagent) want_files="/etc/modelfleet/agent.yaml /usr/bin/fleetagent /usr/lib/modelfleet/libonnxruntime.so.1 /usr/lib/systemd/system/fleetagent.service" ;;
	fleethub) want_files="/etc/modelfleet/hub.yaml /usr/bin/fleethub /usr/lib/systemd/system/fleethub.service" ;;
	esac
	list=$(rpm -qpl "$rpm_file" 2>/dev/null)
	for f in $want_files; do
		grep -qx "$f" <<<"$list" || fail "$rpm_file lacks $f"
	done
	conf=$(rpm -qp --configfiles "$rpm_file" 2>/dev/null)
	[ "$conf" = "/etc/modelfleet/${pkg#fleet}.yaml" ] || fail "$rpm_file config files: $conf"
	rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" 2>/dev/null | grep -q '^cn /etc/modelfleet/' ||
		fail "$rpm_file: config is not %config(noreplace)"
	scripts=$(rpm -qp --scripts "$rpm_file" 2>/dev/null)
	for s in preinstall postinstall preuninstall postuninstall; do
		grep -q "^$s scriptlet" <<<"$scripts" || fail "$rpm_file has no $s scriptlet"
	done
	grep -q "^pkg=$pkg\$" <<<"$scripts" || fail "$rpm_file scripts are not rendered for $pkg"
	ok "$(basename "$rpm_file"): files, %config(noreplace), four scriptlets"
done

printf '\npackage-test: %d checks passed in %d s\n' "$checks" "$((SECONDS - start))"
