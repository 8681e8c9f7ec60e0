#!/usr/bin/env bash
# A guest initramfs for microVM tests: static busybox and an /init of ours that mounts the
# pseudo file systems, prints "GUEST-UP <uptime>" (the first line from guest userspace), runs
# the command given on the kernel command line as cellvisor.run="..." if any, and reboots
# (which ends a microVM booted with reboot=k). With a kernel's modules at hand (KVER, default:
# the newest /lib/modules/*-cloud-amd64), it also carries the virtio drivers the Debian kernel
# builds as modules (mmio, block, net, vsock, balloon) and /init loads them, giving virtio_mmio the
# devices the VMM put on the command line (virtio_mmio.device=...). With cellvisor.root=DEV
# the command runs chrooted into the ext4 file system on DEV (proc, sys, dev, tmp mounted there).
# usage: mkinitramfs.sh [-a FILE]... OUT.cpio.gz [KVER]   (-a: a static program put in /bin)
set -euo pipefail
add=()
while [ "${1:-}" = -a ]; do add+=("$2"); shift 2; done
out=${1:?usage: mkinitramfs.sh [-a FILE]... OUT.cpio.gz [KVER]}
kver=${2:-$(ls -d /lib/modules/*-cloud-amd64 2>/dev/null | sort -V | tail -n1 | xargs -r basename)}
bb=/bin/busybox
[ -x "$bb" ] || { echo "no $bb: apt-get install busybox-static" >&2; exit 1; }
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,sbin,proc,sys,dev,tmp,etc,root}
cp "$bb" "$dir/bin/busybox"
for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$dir/bin/$a"; done
for f in ${add[@]+"${add[@]}"}; do cp "$f" "$dir/bin/"; done
if [ -n "$kver" ] && [ -d "/lib/modules/$kver/kernel" ]; then
    mkdir -p "$dir/lib/modules"
    n=10
    for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio \
             drivers/block/virtio_blk net/core/failover drivers/net/net_failover \
             drivers/net/virtio_net net/vmw_vsock/vsock \
             net/vmw_vsock/vmw_vsock_virtio_transport_common \
             net/vmw_vsock/vmw_vsock_virtio_transport drivers/virtio/virtio_balloon; do
        f=/lib/modules/$kver/kernel/$m.ko
        [ -f "$f" ] || continue  # built in, or not in this kernel
        cp "$f" "$dir/lib/modules/$n-$(basename "$f")"
        n=$((n + 1))
    done
fi
cat > "$dir/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in /lib/modules/*.ko; do
    [ -f "$m" ] || continue
    case $m in
    *virtio_mmio.ko)
        # shellcheck disable=SC2046
        insmod "$m" $(tr ' ' '\n' < /proc/cmdline | sed -n 's/^virtio_mmio\.device=/device=/p') ;;
    *) insmod "$m" ;;
    esac
done
# The free page reporting order the VMM put on the command line: Linux 6.1 (Debian 12's)
# replaces the parameter with its default (2 MiB blocks, which a small guest never has
# enough of to report) when virtio_balloon registers, so it is set again here.
order=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^page_reporting\.page_reporting_order=//p')
p=/sys/module/page_reporting/parameters/page_reporting_order
[ -n "$order" ] && [ -w $p ] && echo "$order" > $p
echo "GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
cmd=$(sed -n 's/.*cellvisor\.run="\([^"]*\)".*/\1/p' /proc/cmdline)
root=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^cellvisor\.root=//p')
if [ -n "$root" ]; then
    # The command runs chrooted in an ext4 root on a disk (the benchmark suite's domain root).
    mkdir -p /newroot
    if mount -t ext4 "$root" /newroot; then
        for d in proc sys dev tmp; do mkdir -p "/newroot/$d"; done
        mount -t proc proc /newroot/proc
        mount -t sysfs sys /newroot/sys
        mount -t devtmpfs dev /newroot/dev
        mount -t tmpfs tmp /newroot/tmp
        [ -n "$cmd" ] && chroot /newroot /bin/sh -c "$cmd"
    else
        echo "GUEST-ROOT-FAILED $root"
    fi
elif [ -n "$cmd" ]; then
    sh -c "$cmd"
fi
echo "GUEST-DONE"
reboot -f
INIT
chmod +x "$dir/init"
mkdir -p "$(dirname "$out")"
(cd "$dir" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$out"
