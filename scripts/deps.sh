#!/usr/bin/env bash
# Installs the Debian packages the build, demo and tests need, when they are missing:
# busybox-static (the rootfs of demo and tests), podman and containerd (real clients in tests),
# systemd and dbus (booted in a container: the systemd cgroup driver's tests),
# and for microVM tests a stock guest kernel (linux-image-cloud-amd64) and the emulated KVM
# test host (qemu-system-x86, cpio, file, xz-utils; scripts/kvm-test-host.sh), Debian's generic
# kernel (linux-image-amd64: the test host with real input, DRM and camera devices), e2fsprogs
# (mke2fs: the benchmark suite's microVM root image), and rt-tests (cyclictest: the real-time
# benchmark's cross-check).
set -euo pipefail
pkgs=(busybox-static podman containerd systemd dbus linux-image-cloud-amd64 linux-image-amd64 qemu-system-x86 cpio file xz-utils zstd binutils e2fsprogs rt-tests)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "need root to install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
