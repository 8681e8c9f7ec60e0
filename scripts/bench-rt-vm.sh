#!/usr/bin/env bash
# `cellvisor bench rt` with its microVM variants on a machine whose own /dev/kvm cannot boot a
# stock kernel (nested "PVM"): inside scripts/kvm-test-host.sh with two emulated CPUs and
# cgroup v2 (the container variants run there too, their realtime core an isolated cpuset
# partition), the probe also inside a guest booting the Debian kernel: a realtime microVM
# (its vCPU SCHED_FIFO on the realtime core) beside the same VM as a common domain. Writes
# the report (rt.json, rt-latency.svg, table.txt) into DIR.
# usage: bench-rt-vm.sh [--quick | --samples N] [--rounds R] [DIR]
#        (after `make build`; KVM_TEST_HOST_MEM sets the test host's memory in MB)
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
out=docs/benchmarks/rt-vm
while [ $# -gt 0 ]; do
  case "$1" in
    --samples|--rounds) args+=("$1" "$2"); shift 2 ;;
    --quick) args+=("$1"); shift ;;
    -*) echo "usage: $0 [--quick | --samples N] [--rounds R] [DIR]" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
. scripts/test-host-lib.sh
files=()
if command -v cyclictest >/dev/null; then files+=(-f "$(command -v cyclictest)"); fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
scripts/mkinitramfs.sh "$tmp/initramfs.cpio.gz"
# In the test host: cgroup2 (the L1 kernel's default layout), the benchmark, then its report
# as a base64 tarball on the console.
cmd="set -o pipefail; mount -t cgroup2 none /sys/fs/cgroup && export PATH=/host:\$PATH && \
  ./cellvisor bench rt --agent ./cellvisor-agent --kernel $(basename "$kernel") \
  --initrd initramfs.cpio.gz ${args[*]} --out /tmp/report > /tmp/table.txt && cat /tmp/table.txt && \
  cp /tmp/table.txt /tmp/report/ && \
  echo REPORT-BEGIN && tar -C /tmp/report -czf - . | base64 && echo REPORT-END"
export KVM_TEST_HOST_TIMEOUT=${KVM_TEST_HOST_TIMEOUT:-3600}
test_host_run "$tmp/out" -c 2 -m "${KVM_TEST_HOST_MEM:-3072}" \
  -f "$bin/cellvisor" -f "$agent" -f "$kernel" -f "$tmp/initramfs.cpio.gz" -f "$mke2fs" \
  ${files[@]+"${files[@]}"} -- "$cmd"
test_host_report "$tmp/out" "$out"
cat "$out/table.txt"
echo "wrote the report in $out"
