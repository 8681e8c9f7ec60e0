#!/usr/bin/env bash
# The demo device: cellvisord runs examples/phone.toml — a trusted domain (banking, messages),
# a common domain (third-party apps) and a realtime domain (the modem) on one shared read-only
# base with a private layer each. It passes messages over a channel the policy allows, is
# refused one the policy forbids, moves the foreground (display, input, camera) twice, and
# tears everything down with nothing left behind. Then (with /dev/kvm) examples/vm.toml: a
# microVM domain beside a container domain, frozen in the background, its guest's console in
# its log, and again nothing left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CELLVISOR_BIN:-target/release}
cv=$bin/cellvisor
cvd=$bin/cellvisord
agent=${CELLVISOR_AGENT:-$bin/cellvisor-agent}
work=target/demo
state=$work/state
prefix=demo
export CELLVISOR_SOCKET=$work/api.sock
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
pid_of() { "$cv" ps --format json | sed 's/},{/}\n{/g' | grep "\"name\":\"$1\"" | sed 's/.*"pid":\([0-9]*\).*/\1/'; }
devs() { ls "/proc/$(pid_of "$1")/root/dev" | grep -E '^(vcs1|tty1|vcsa1)$' | tr '\n' ' '; }
# cellvisord on profile $1 with cgroup prefix $2, its API on $CELLVISOR_SOCKET.
start_daemon() {
    echo "\$ $cvd --profile $1 --state $state --socket $CELLVISOR_SOCKET --agent $agent --prefix $2 &"
    "$cvd" --profile "$1" --state "$state" --socket "$CELLVISOR_SOCKET" --agent "$agent" --prefix "$2" > "$work/daemon-$2.log" 2>&1 &
    daemon=$!
    trap 'kill -TERM $daemon 2>/dev/null || true' EXIT
    for _ in $(seq 100); do [ -S "$CELLVISOR_SOCKET" ] && break; sleep 0.05; done
}
# Every domain down with its private layer, then the daemon; fails if a mount, a cgroup of
# prefix $1, the state, the socket, an agent or one of the processes $2... is left.
stop_and_check() {
    local prefix=$1 left pid
    shift
    run "$cv" down --purge
    kill -TERM $daemon
    wait $daemon || true
    trap - EXIT
    left=$(grep -F "$PWD/$state" /proc/mounts || true)
    left+=$(find /sys/fs/cgroup -maxdepth 3 -name "$prefix-*" 2>/dev/null || true)
    left+=$(ls "$state" "$CELLVISOR_SOCKET" 2>/dev/null || true)
    left+=$(pgrep -f "/run/cellvisor/agent" || true)
    for pid in "$@"; do
        for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.05; done
        if [ -d "/proc/$pid" ]; then left+=" process $pid"; fi
    done
    if [ -n "$left" ]; then echo "left behind: $left"; exit 1; fi
    echo "nothing left behind (no mount, cgroup, process, socket or state)."
}

mkdir -p "$work"
step "the shared read-only base (examples/rootfs: busybox) and the profile"
scripts/mkrootfs.sh examples/rootfs
run "$cv" profile check examples/phone.toml

step "cellvisord (state in $state, API on $CELLVISOR_SOCKET)"
start_daemon examples/phone.toml "$prefix"

step "up: the realtime domain first, then the foreground one, then the rest"
run "$cv" up

step "a channel the policy allows: common -> trusted \"messages\" (64K per direction)"
run "$cv" channel open common trusted messages
for _ in $(seq 100); do "$cv" logs common | grep -q reply: && break; sleep 0.05; done
echo "--- common's log"; "$cv" logs common
echo "--- trusted's log"; "$cv" logs trusted
run "$cv" channel ls

step "a channel the policy forbids is refused, from the host and from inside a domain"
if "$cv" channel open common modem telephony; then echo "the policy let it through!"; exit 1; fi
echo "\$ cellvisor exec (in common) /run/cellvisor/agent send telephony hi --wait 0"
if "$cv" --root "$state/oci" exec $prefix-common /run/cellvisor/agent send telephony hi --wait 0; then
    echo "a domain reached a channel that is not its own!"; exit 1
fi

step "foreground: trusted holds display and input (/dev/vcs1, /dev/tty1 stand in)"
echo "trusted sees: $(devs trusted)   common sees: $(devs common)"
run "$cv" fg common
echo "trusted sees: $(devs trusted)   common sees: $(devs common)"
run "$cv" ps
run "$cv" fg trusted
echo "trusted sees: $(devs trusted)   common sees: $(devs common)"
run "$cv" top -n 1 --interval 0.5
run "$cv" sched

step "teardown: every domain down with its private layer, then the daemon"
stop_and_check "$prefix"

if [ -c /dev/kvm ]; then
    step "a microVM domain beside a container domain (examples/vm.toml; its VMM jailed in a container domain)"
    scripts/mktiny.sh "$work/idle.elf" idle
    run "$cv" profile check examples/vm.toml
    export CELLVISOR_SOCKET=$work/vm-api.sock
    start_daemon examples/vm.toml "${prefix}vm"
    run "$cv" up
    run "$cv" ps
    run "$cv" fg sandbox
    for _ in $(seq 100); do "$cv" logs sandbox | grep -q "idle guest" && break; sleep 0.05; done
    echo "--- sandbox's log (the guest's console)"; "$cv" logs sandbox
    vmm=$(pid_of sandbox)
    echo "the sandbox's process: $(tr '\0' ' ' < /proc/$vmm/cmdline)"
    run "$cv" balloon sandbox --size 8M
    run "$cv" fg apps
    run "$cv" ps
    stop_and_check "${prefix}vm" "$vmm"
fi
echo "Demo done."
