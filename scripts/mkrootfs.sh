#!/usr/bin/env bash
# Builds a minimal root filesystem from the static busybox: DIR/bin/busybox plus one symlink
# per applet, and the few files a shell expects.
set -euo pipefail
dir=${1:?usage: mkrootfs.sh DIR}
bb=/bin/busybox
[ -x "$bb" ] || { echo "no $bb: apt-get install busybox-static" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"/{bin,dev,proc,sys,tmp,etc,root,var,run}
cp "$bb" "$dir/bin/busybox"
for a in $("$bb" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$dir/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$dir/etc/group"
chmod 1777 "$dir/tmp"
