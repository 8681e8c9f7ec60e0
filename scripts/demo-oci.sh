#!/usr/bin/env bash
# The OCI demo: one isolated container domain from a busybox rootfs built here, driven through
# the whole OCI lifecycle with the release binary, then torn down with nothing left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
cv=${CELLVISOR:-target/release/cellvisor}
work=target/demo
root=$work/state
id=demo-domain
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

"$cv" --root "$root" delete --force "$id" 2>/dev/null || true
step "building a busybox root filesystem and the bundle ($work/bundle)"
scripts/mkrootfs.sh "$work/bundle/rootfs"
cp examples/domain.json "$work/bundle/config.json"
echo "rootfs: $(du -sh "$work/bundle/rootfs" | cut -f1), config: examples/domain.json"

step "create (namespaces, cgroups, mounts, seccomp ready; the process waits for start)"
echo "\$ $cv --root $root create --bundle $work/bundle --pid-file $work/pid $id"
"$cv" --root "$root" create --bundle "$work/bundle" --pid-file "$work/pid" "$id" > "$work/domain.log" 2>&1
run "$cv" --root "$root" state "$id"

step "start"
run "$cv" --root "$root" start "$id"
sleep 0.3
cat "$work/domain.log"
run "$cv" --root "$root" list

step "inside the domain: its own pids, hostname, network and mounts"
run "$cv" --root "$root" exec "$id" sh -c 'echo "hostname: $(hostname)"; echo "processes:"; ps; echo "network: $(ls /sys/class/net)"; echo "uid: $(id -u), capabilities: $(grep CapEff /proc/self/status)"'
echo "on the host, the domain's init is pid $(cat "$work/pid")"

step "the policy holds: seccomp refuses mount, the root is read-only, limits are set"
run "$cv" --root "$root" exec "$id" sh -c 'mount -t tmpfs x /tmp 2>&1; touch /x 2>&1; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null || true'

step "resource statistics"
"$cv" --root "$root" events --stats "$id" | cut -c1-300

step "pause (freeze) and resume"
run "$cv" --root "$root" pause "$id"
"$cv" --root "$root" state "$id" | grep status
run "$cv" --root "$root" resume "$id"
"$cv" --root "$root" state "$id" | grep status

step "stop and delete"
run "$cv" --root "$root" kill "$id" KILL
for _ in $(seq 100); do "$cv" --root "$root" state "$id" | grep stopped >/dev/null && break; sleep 0.05; done
run "$cv" --root "$root" delete "$id"
left=$(ls /sys/fs/cgroup/*/cellvisor/"$id" 2>/dev/null; ls "$root/$id" 2>/dev/null) || true
if [ -n "$left" ]; then echo "left behind: $left"; exit 1; fi
echo "nothing left behind (no state, cgroup or process). Demo done."
