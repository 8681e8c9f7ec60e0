#!/usr/bin/env bash
# The benchmark suite with its microvm column on a machine whose own /dev/kvm cannot boot a
# stock kernel (nested "PVM"): runs `cellvisor bench --backends native,container,microvm`
# (and runc, crun when installed and --peers is given) inside scripts/kvm-test-host.sh, where
# every backend, native included, runs on the same emulated CPU, and writes the report
# (results.json, CSVs, SVG plots, table.txt) into DIR.
# usage: bench-suite-vm.sh [-n ROUNDS] [--quick] [--max-domains N] [--peers] [DIR]
#        (after `make build`; KVM_TEST_HOST_MEM sets the test host's memory in MB)
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
peers=0
out=docs/benchmarks/suite-vm
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--max-domains) args+=("$1" "$2"); shift 2 ;;
    --quick) args+=("$1"); shift ;;
    --peers) peers=1; shift ;;
    -*) echo "usage: $0 [-n ROUNDS] [--quick] [--max-domains N] [--peers] [DIR]" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
. scripts/test-host-lib.sh
backends=native,container,microvm
files=()
if [ "$peers" = 1 ]; then
  for p in runc crun; do
    if command -v "$p" >/dev/null; then backends+=,$p; files+=(-f "$(command -v "$p")"); fi
  done
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
scripts/mkinitramfs.sh "$tmp/initramfs.cpio.gz"
# In the test host: cgroup2 for the container domains (the L1 kernel's default layout), the
# suite, then its report as a base64 tarball on the console.
# (Piped through cat: the console is a terminal, where the progress bars would draw.)
cmd="set -o pipefail; mount -t cgroup2 none /sys/fs/cgroup && export PATH=/host:\$PATH && \
  ./cellvisor bench --backends $backends --kernel $(basename "$kernel") \
  --initrd initramfs.cpio.gz ${args[*]} --out /tmp/report 2>&1 | cat && \
  echo REPORT-BEGIN && tar -C /tmp/report -czf - . | base64 && echo REPORT-END"
export KVM_TEST_HOST_TIMEOUT=${KVM_TEST_HOST_TIMEOUT:-7200}
test_host_run "$tmp/out" -m "${KVM_TEST_HOST_MEM:-6144}" \
  -f "$bin/cellvisor" -f "$agent" -f "$bin/cellvisor-app" -f "$kernel" \
  -f "$tmp/initramfs.cpio.gz" -f "$mke2fs" ${files[@]+"${files[@]}"} -- "$cmd"
test_host_report "$tmp/out" "$out"
sed "/^REPORT-BEGIN/,/^REPORT-END/d" "$tmp/out" | sed -n "/survey Section 5/,\$p" | sed "s/.*survey Section 5/survey Section 5/" | grep -v "^\[ *[0-9.]*\]" > "$out/table.txt"
cat "$out/table.txt"
echo "wrote the report in $out"
