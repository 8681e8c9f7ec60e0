#!/usr/bin/env bash
# Exclusive devices taken back from the old foreground on a switch, with real devices of each
# kind: inside scripts/kvm-test-host.sh booted with Debian's generic kernel, whose modules make
# them — a keyboard made through uinput (an evdev input device, typing without end), the DRM
# card of QEMU's standard VGA (bochs), a vivid camera (V4L2). cellvisord runs a two-domain
# profile with those as its display, input and camera; trusted (in front) holds all three
# open (the input and the camera opened from its /dev, the DRM card taken from its port: it
# is never a node there), then `cellvisor fg common`: trusted's input descriptor is revoked
# (ENODEV), its DRM file is no longer master and cannot take master back, the process
# holding the camera is killed; common opens all three, becomes master and reads the
# keyboard's events. Back to trusted: its DRM file is master again. Then everything torn
# down with nothing left. Prints the transcript; exits 0 only if every step did as said.
# usage: revoke-test-host.sh          (binaries from $CELLVISOR_BIN, default target/release;
#                                      the static agent from $CELLVISOR_AGENT)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CELLVISOR_BIN:-target/release}
agent=${CELLVISOR_AGENT:-$bin/cellvisor-agent}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
scripts/mkrootfs.sh "$tmp/rootfs" >/dev/null
tar -C "$tmp" -czf "$tmp/rootfs.tgz" rootfs
cat > "$tmp/revoke.sh" <<'HOST'
set -e
mount -t cgroup2 none /sys/fs/cgroup
w=/tmp/rv; mkdir -p $w; cd $w
tar -xzf /host/rootfs.tgz
cp /host/cellvisor-agent $w/agent
fail() { echo "REVOKE-FAILED: $*"; cat $w/daemon.log; exit 1; }
# wait_for WHAT CMD: until CMD succeeds, 30 s at most.
wait_for() { what=$1; shift; i=0; until "$@" >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 300 ] || fail "$what"; sleep 0.1; done; }
$w/agent uinput cellvisor-test-keyboard > kbd < /dev/null 2>&1 &
kbd=$!
wait_for "the uinput keyboard" grep -q /dev/input/event kbd
input=$(cat kbd)
echo "devices: input $input (uinput), display /dev/dri/card0 ($(basename "$(readlink /sys/class/drm/card0/device/driver)")), camera /dev/video0 ($(cat /sys/class/video4linux/video0/name))"
cat > profile.toml <<EOF
name = "revoke"
base = "rootfs"
[foreground]
initial = "trusted"
background = "throttle"
[device_nodes]
display = "/dev/dri/card0"
input = "$input"
camera = "/dev/video0"
[[domain]]
name = "trusted"
role = "trusted"
backend = "container"
command = ["/bin/sh", "-c", "exec sleep 1000000"]
devices.exclusive = ["display", "input", "camera"]
[[domain]]
name = "common"
role = "common"
backend = "container"
command = ["/bin/sh", "-c", "exec sleep 1000000"]
devices.exclusive = ["display", "input", "camera"]
EOF
export CELLVISOR_SOCKET=$w/api.sock
/host/cellvisord --profile profile.toml --state $w/state --socket $CELLVISOR_SOCKET --agent $w/agent --prefix rv > daemon.log 2>&1 &
daemon=$!
wait_for "the daemon's socket" test -S $CELLVISOR_SOCKET
/host/cellvisor up
ex() { /host/cellvisor --root $w/state/oci exec rv-$1 sh -c "$2"; }
# trusted, in front, holds the three open; the display from its port.
ex trusted "[ ! -e /dev/dri/card0 ]" || fail "a DRM card is a node in trusted's /dev"
ex trusted "for d in $input display /dev/video0; do n=\$(basename \$d); \
  (/run/cellvisor/agent hold \$d > /tmp/\$n.log 2>&1 & echo \$! > /tmp/\$n.pid) < /dev/null > /dev/null 2>&1; done"
t=/proc/$(/host/cellvisor ps --format json | sed 's/},{/}\n{/g' | grep '"name":"trusted"' | sed 's/.*"pid":\([0-9]*\).*/\1/')/root/tmp
ev=$(basename $input)
for n in $ev display video0; do wait_for "trusted holding $n" grep -q held: $t/$n.log; done
echo "trusted holds: $(cat $t/$ev.log) | $(cat $t/display.log) | $(cat $t/video0.log)"
grep -q "held: input open" $t/$ev.log && grep -q "held: drm master" $t/display.log && grep -q "held: camera vivid" $t/video0.log || fail "trusted's devices"
echo "common in the background opens: $(ex common "/run/cellvisor/agent probe $input 2>&1; /run/cellvisor/agent probe display 2>&1" | tr '\n' ' ')"
/host/cellvisor fg common
wait_for "trusted's input revoked" grep -q lost: $t/$ev.log
wait_for "trusted's display master dropped" grep -q lost: $t/display.log
# The camera's holder is dead: gone, or a zombie its parent (the domain's sleep) never reaps.
camera_dead() { ex trusted "s=\$(cut -d' ' -f3 /proc/$(cat $t/video0.pid)/stat 2>/dev/null); [ -z \"\$s\" ] || [ \"\$s\" = Z ]"; }
wait_for "trusted's camera holder killed" camera_dead
camera=killed
echo "after fg common, trusted's: $(grep lost: $t/$ev.log) | $(grep lost: $t/display.log) | camera holder $camera"
grep -q "lost: input: No such device" $t/$ev.log || fail "the input descriptor still works"
grep -q "lost: drm: not master (SET_MASTER: Permission denied" $t/display.log || fail "the display is still trusted's"
echo "common opens: $(ex common "/run/cellvisor/agent probe $input --count 4; /run/cellvisor/agent probe display; /run/cellvisor/agent probe /dev/video0" | tr '\n' ' ')" | tee common.out
grep -q "events: 4 (2 keys)" common.out && grep -q "drm master" common.out && grep -q "camera vivid" common.out || fail "common's devices"
echo "the daemon said: $(grep 'taken from' daemon.log | tr '\n' ' ')"
/host/cellvisor fg trusted
wait_for "trusted's display master given back" grep -q "back: drm master" $t/display.log
echo "back to trusted: its held display $(grep back: $t/display.log); it opens: $(ex trusted "/run/cellvisor/agent probe $input --count 2" | tr '\n' ' ')" | tee trusted.out
grep -q "events: 2" trusted.out || fail "trusted's input back"
# Once more, the holders still there: what was revoked stays so (its second revocation is
# nothing), the display's master goes and comes back again.
/host/cellvisor fg common > /dev/null
wait_for "trusted's display master dropped again" test "$(grep -c lost: $t/display.log)" = 2
/host/cellvisor fg trusted > /dev/null
wait_for "trusted's display master given back again" test "$(grep -c back: $t/display.log)" = 2
echo "a second round: $(grep -c lost: $t/display.log) losses and $(grep -c back: $t/display.log) returns of trusted's display master"
/host/cellvisor down --purge
kill $daemon; wait $daemon || true
kill $kbd; wait $kbd || true
left=$(grep -F "$w/state" /proc/mounts || true)$(find /sys/fs/cgroup -name 'rv-*' 2>/dev/null || true)$(ls $w/state $CELLVISOR_SOCKET 2>/dev/null || true)
[ -z "$left" ] || fail "left behind: $left"
echo "REVOKE-OK: nothing left behind"
HOST
export KVM_TEST_HOST_TIMEOUT=${KVM_TEST_HOST_TIMEOUT:-400}
scripts/kvm-test-host.sh -k generic -m 1024 -M uinput -M evdev -M bochs -M vivid \
  -f "$bin/cellvisor" -f "$bin/cellvisord" -f "$agent" -f "$tmp/rootfs.tgz" -- "$(cat "$tmp/revoke.sh")"
