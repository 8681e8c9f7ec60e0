#!/usr/bin/env bash
# Builds the tiny test guest (guests/tiny/tiny.S) into an ELF "kernel" for `cellvisor vm run`.
# usage: mktiny.sh OUT.elf   (needs binutils: as, ld)
set -euo pipefail
out=${1:?usage: mktiny.sh OUT.elf}
src=$(dirname "$0")/../guests/tiny/tiny.S
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
as --64 -o "$tmp/tiny.o" "$src"
mkdir -p "$(dirname "$out")"
ld -static -nostdlib -Ttext=0x200000 -e _start -o "$out" "$tmp/tiny.o"
