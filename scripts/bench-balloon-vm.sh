#!/usr/bin/env bash
# Memory that microVMs give back, with Debian's kernel as the guest, inside
# scripts/kvm-test-host.sh (this machine's own /dev/kvm cannot boot a stock kernel):
#   - `cellvisor bench balloon`: two idle guests side by side, with and without free page
#     reporting; inflate and deflate; a guest allocating with its balloon inflated;
#   - `cellvisor bench vms` with N idle Debian guests at once, with a reporting balloon and
#     without: host memory per VM;
#   - `cellvisor bench vms --merge` with those guests: host memory per added VM with page
#     merging (KSM) off and on.
# Writes balloon.json, vms-reporting.json, vms-plain.json, merge.json and table.txt into DIR.
#   (The merge run has min(VMS, 6) guests.)
# usage: bench-balloon-vm.sh [-n VMS] [--idle SECS] [--settle SECS] [DIR]   (after `make build`;
#        binaries from $CELLVISOR_BIN, default target/release; KVM_TEST_HOST_MEM sets the
#        test host's memory in MB, default 3072)
set -euo pipefail
cd "$(dirname "$0")/.."
n=24
idle=60
settle=30
out=docs/benchmarks/balloon
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    -*) echo "usage: $0 [-n VMS] [--idle SECS] [--settle SECS] [DIR]" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
. scripts/test-host-lib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
scripts/mkinitramfs.sh "$tmp/initramfs.cpio.gz"
k=$(basename "$kernel")
g="--kernel $k --initrd initramfs.cpio.gz --mem 128M"
m=$(( n < 6 ? n : 6 ))
cmd="set -o pipefail; export PATH=/host:\$PATH; r=/tmp/report; mkdir -p \$r; \
  ./cellvisor bench balloon $g --idle $idle --out \$r 2>&1 | tee \$r/table.txt && \
  ./cellvisor bench vms $g -n $n --balloon reporting,deflate-on-oom --settle $settle --out \$r 2>&1 | tee -a \$r/table.txt && \
  mv \$r/vms.json \$r/vms-reporting.json && \
  ./cellvisor bench vms $g -n $n --settle $settle --out \$r 2>&1 | tee -a \$r/table.txt && \
  mv \$r/vms.json \$r/vms-plain.json && \
  ./cellvisor bench vms $g -n $m --merge --balloon reporting,deflate-on-oom --settle $settle --out \$r 2>&1 | tee -a \$r/table.txt && \
  echo REPORT-BEGIN && tar -C \$r -czf - . | base64 && echo REPORT-END"
export KVM_TEST_HOST_TIMEOUT=${KVM_TEST_HOST_TIMEOUT:-5400}
test_host_run "$tmp/out" -m "${KVM_TEST_HOST_MEM:-3072}" -c 2 \
  -f "$bin/cellvisor" -f "$kernel" -f "$tmp/initramfs.cpio.gz" -- "$cmd"
test_host_report "$tmp/out" "$out"
cat "$out/table.txt"
echo "wrote the report in $out"
