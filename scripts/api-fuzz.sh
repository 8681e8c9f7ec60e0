#!/usr/bin/env bash
# schemathesis (PyPI) against a running cellvisord, from docs/api/openapi.json: every
# operation with generated valid and invalid requests (-n examples each, default 300), the
# stateful phase too. The daemon runs the phone profile on a busybox root in a directory of
# its own, its Unix socket bridged to 127.0.0.1:PORT by socat; afterwards it must still
# answer, and it is stopped with nothing left. Run as root; installs schemathesis and socat
# when they are missing; nothing of the daemon may be left (its cgroups, mounts, state).
# usage: scripts/api-fuzz.sh [EXAMPLES] [PORT] [SCHEMATHESIS-OPTIONS...]
# (make test: 20 examples, without positive_data_acceptance: a CPU list's pattern cannot say
# that a range goes from low to high, below 8192, so some lists it allows are refused, rightly)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
port=${2:-18080}
shift 2 || shift $# || true
command -v schemathesis >/dev/null || pip install -q schemathesis
command -v socat >/dev/null || apt-get install -y -q socat >/dev/null
bin=${CELLVISOR_BIN:-target/debug}
work=$(mktemp -d)
cleanup() {
    curl -s -XPOST --unix-socket "$work/api.sock" "http://x/v1/down?purge=true" >/dev/null || true
    [ -n "${bridge:-}" ] && kill "$bridge" 2>/dev/null || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
scripts/mkrootfs.sh "$work/rootfs" >/dev/null
sed "s|base = \"rootfs\"|base = \"$work/rootfs\"|" examples/phone.toml >"$work/phone.toml"
"$bin/cellvisord" --profile "$work/phone.toml" --state "$work/state" --socket "$work/api.sock" \
    --agent "$bin/cellvisor-agent" --prefix apifuzz 2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 100); do [ -S "$work/api.sock" ] && break; sleep 0.05; done
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$work/api.sock" &
bridge=$!
sleep 0.3
curl -sf -XPOST "http://127.0.0.1:$port/v1/up" >/dev/null
rc=0
schemathesis run docs/api/openapi.json --url "http://127.0.0.1:$port" -n "$n" "$@" || rc=$?
# Still there, still answering.
curl -sf "http://127.0.0.1:$port/v1/domains" >/dev/null || { echo "api-fuzz: the daemon stopped answering"; cat "$work/daemon.log"; exit 1; }
cleanup
trap - EXIT
left=$(ls -d /sys/fs/cgroup/*/cellvisor/apifuzz-* /sys/fs/cgroup/*/apifuzz-* 2>/dev/null || true)
left+=$(grep " $work" /proc/self/mountinfo || true)
[ -z "$left" ] || { echo "api-fuzz: left behind: $left"; exit 1; }
exit $rc
