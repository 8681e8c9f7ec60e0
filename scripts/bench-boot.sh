#!/usr/bin/env bash
# The microVM boot benchmark on a machine whose own /dev/kvm cannot boot a stock kernel: runs
# `cellvisor bench boot` (cellvisor's VMM beside QEMU's microvm, same kernel, initramfs and
# command line) inside scripts/kvm-test-host.sh, and writes DIR/boot.txt and DIR/boot.json.
# usage: bench-boot.sh [-n ROUNDS] [OUT_DIR]     (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
[ "${1:-}" = "-n" ] && { rounds=$2; shift 2; }
out=${1:-docs/benchmarks}
cv=${CELLVISOR:-target/release/cellvisor}
kernel=$(ls /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -n 1)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
scripts/mkinitramfs.sh "$tmp/initramfs.cpio.gz"
fw=()
for f in /usr/share/seabios/bios-microvm.bin /usr/share/qemu/pvh.bin /usr/share/qemu/linuxboot_dma.bin \
         /usr/share/seabios/bios-256k.bin /usr/share/qemu/kvmvapic.bin; do
  fw+=(-f "$f")
done
# The emulator sometimes stalls for good (kvm-test-host.sh then exits 3): up to three tries.
for try in 1 2 3; do
  rc=0
  KVM_TEST_HOST_TIMEOUT=${KVM_TEST_HOST_TIMEOUT:-1800} scripts/kvm-test-host.sh -m 1536 \
    -f "$cv" -f "$kernel" -f "$tmp/initramfs.cpio.gz" -f /usr/bin/qemu-system-x86_64 "${fw[@]}" -- \
    "./cellvisor bench boot -n $rounds --kernel $(basename "$kernel") --initrd initramfs.cpio.gz --qemu ./qemu-system-x86_64 --qemu-firmware /host" \
    > "$tmp/out" || rc=$?
  [ "$rc" = 3 ] && [ "$try" -lt 3 ] && { echo "the test host stalled; again ($try)" >&2; continue; }
  [ "$rc" = 0 ] || { cat "$tmp/out"; exit 1; }
  break
done
mkdir -p "$out"
grep -E '^(vmm|cellvisor|qemu-microvm) ' "$tmp/out" | tee "$out/boot.txt"
grep '^{"benchmark"' "$tmp/out" > "$out/boot.json"
echo "wrote $out/boot.txt and $out/boot.json"
