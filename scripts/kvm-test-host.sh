#!/usr/bin/env bash
# Runs a command on a host whose /dev/kvm has real hardware-virtualization semantics, for
# machines whose own /dev/kvm cannot run a stock guest kernel (nested "PVM": guest ring 0 is
# emulated). QEMU (TCG) emulates an AMD CPU with SVM; a Debian kernel booted on it loads
# kvm-amd; the command runs there, in /host, with the files given by -f.
#
# usage: kvm-test-host.sh [-m MB] [-c CPUS] [-k cloud|generic] [-M MODULE]... [-f FILE]... -- 'COMMAND'
#   -c CPUS    emulated CPUs (default 1)
#   -k KIND    the host's kernel: Debian's cloud kernel (default) or its generic one, which has
#              the device drivers the cloud one lacks (uinput, evdev, DRM cards, V4L2 cameras)
#   -M MODULE  a module of that kernel loaded at boot, after the modules it depends on
#   -f FILE    is copied into /host (with the shared libraries of a dynamic program, at their paths)
# Prints the command's output; exits 0 only if the command succeeded, 3 if the emulator
# stalled (its timer interrupts stop for good now and then while a nested guest runs: the
# host's heartbeat on a second serial port stops, and it is ended within a minute).
# Needs: qemu-system-x86, linux-image-cloud-amd64 (linux-image-amd64 for -k generic), kmod,
# busybox-static, cpio, file (scripts/deps.sh).
set -euo pipefail
mem=2048
cpus=1
files=()
kind=cloud
modules=(kvm-amd tun overlay)
usage="usage: $0 [-m MB] [-c CPUS] [-k cloud|generic] [-M MODULE]... [-f FILE]... -- 'COMMAND'"
while [ $# -gt 0 ]; do
  case "$1" in
    -m) mem=$2; shift 2 ;;
    -c) cpus=$2; shift 2 ;;
    -f) files+=("$2"); shift 2 ;;
    -k) kind=$2; shift 2 ;;
    -M) modules+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
command=${1:?$usage}
case "$kind" in
  cloud) kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1) ;;
  generic) kernel=$(ls /boot/vmlinuz-*[0-9]-amd64 2>/dev/null | sort -V | tail -n 1) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
[ -n "$kernel" ] || { echo "kvm-test-host: no $kind kernel in /boot (linux-image-$([ "$kind" = cloud ] && echo cloud-)amd64)" >&2; exit 2; }
release=${kernel#/boot/vmlinuz-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"/{bin,proc,sys,dev,tmp,host,modules}
cp /bin/busybox "$root/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
# The modules (KVM, tun, overlay, and those asked for), each after those it depends on
# (modprobe reads the kernel's modules.dep here; nothing is loaded on this machine), numbered
# in load order.
n=0
for m in ${modules[@]+"${modules[@]}"}; do
  deps=$(modprobe -S "$release" --show-depends "$m") || { echo "kvm-test-host: no module $m in $release" >&2; exit 2; }
  for ko in $(echo "$deps" | awk '$1 == "insmod" { print $2 }'); do
    name=$(basename "${ko%%.ko*}")
    ls "$root"/modules/[0-9][0-9][0-9]-"$name".ko >/dev/null 2>&1 && continue
    n=$((n + 1))
    case "$ko" in
      *.xz) xz -dc "$ko" ;;
      *.zst) zstd -qdc "$ko" ;;
      *) cat "$ko" ;;
    esac > "$root/modules/$(printf %03d $n)-$name.ko"
  done
done
for f in "${files[@]}"; do
  cp "$f" "$root/host/"
  if file -L "$f" | grep -q 'dynamically linked'; then
    for lib in $(ldd "$f" | grep -oE '/[^ ]+'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  fi
done
printf '%s\n' "$command" > "$root/command"
cat > "$root/init" <<'INIT'
#!/bin/sh
# Move from the initramfs to a tmpfs root first: pivot_root (container domains) refuses the
# initramfs's rootfs.
if [ ! -e /.moved ]; then
  mkdir /newroot; mount -t tmpfs -o size=90% root /newroot
  for d in /*; do [ "$d" = /newroot ] || cp -a "$d" /newroot/; done
  touch /newroot/.moved
  exec switch_root /newroot /init
fi
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for ko in /modules/*.ko; do insmod "$ko"; done
ip link set lo up
# A heartbeat on the second serial port: the emulator sometimes stops this host's timer
# interrupts for good while a nested guest runs; the script outside then sees it stop.
(while :; do cut -d' ' -f1 /proc/uptime > /dev/ttyS1; sleep 5; done) &
[ -c /dev/kvm ] || echo "kvm-test-host: no /dev/kvm in the test host"
cd /host
if sh /command; then echo "KVM-TEST-HOST: ok"; else echo "KVM-TEST-HOST: failed ($?)"; fi
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$tmp/initrd.gz"
timeout "${KVM_TEST_HOST_TIMEOUT:-900}" qemu-system-x86_64 -machine q35 -cpu EPYC,+svm -smp "$cpus" \
  -m "$mem" -kernel "$kernel" -initrd "$tmp/initrd.gz" -append 'console=ttyS0 panic=-1 quiet' \
  -display none -serial stdio -serial "file:$tmp/heartbeat" -no-reboot \
  > "$tmp/console" 2>/dev/null < /dev/null &
qemu=$!
# Stalled: no heartbeat for a minute (two, before the first). Stop it at once, so a caller
# that retries does not wait for the whole timeout.
stalled=0
start=$(date +%s)
while kill -0 "$qemu" 2>/dev/null; do
  sleep 1
  last=$(stat -c %Y "$tmp/heartbeat" 2>/dev/null || echo 0)
  now=$(date +%s)
  if { [ "$last" -eq 0 ] && [ $((now - start)) -gt 120 ]; } || { [ "$last" -gt 0 ] && [ $((now - last)) -gt 60 ]; }; then
    stalled=1
    pkill -P "$qemu" 2>/dev/null; kill "$qemu" 2>/dev/null
    break
  fi
done
wait "$qemu" 2>/dev/null || true
grep -v '^KVM-TEST-HOST: ' "$tmp/console" | tr -d '\r' || true
if [ "$stalled" = 1 ]; then echo "kvm-test-host: the emulated host stalled (no heartbeat for a minute)" >&2; exit 3; fi
grep -q '^KVM-TEST-HOST: ok' <(tr -d '\r' < "$tmp/console")
