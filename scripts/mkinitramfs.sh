#!/usr/bin/env bash
# A guest initramfs for microVM tests: static busybox and an /init of ours that mounts the
# pseudo file systems, prints "GUEST-UP <uptime>" (the first line from guest userspace), runs
# the command given on the kernel command line as cellvisor.run="..." if any, and reboots
# (which ends a microVM booted with reboot=k).
# usage: mkinitramfs.sh OUT.cpio.gz
set -euo pipefail
out=${1:?usage: mkinitramfs.sh OUT.cpio.gz}
bb=/bin/busybox
[ -x "$bb" ] || { echo "no $bb: apt-get install busybox-static" >&2; exit 1; }
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,sbin,proc,sys,dev,tmp,etc,root}
cp "$bb" "$dir/bin/busybox"
for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$dir/bin/$a"; done
cat > "$dir/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
cmd=$(sed -n 's/.*cellvisor\.run="\([^"]*\)".*/\1/p' /proc/cmdline)
[ -n "$cmd" ] && sh -c "$cmd"
echo "GUEST-DONE"
reboot -f
INIT
chmod +x "$dir/init"
mkdir -p "$(dirname "$out")"
(cd "$dir" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$out"
