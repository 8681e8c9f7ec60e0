#!/usr/bin/env bash
# Builds one of the project's test guests (guests/NAME/NAME.S: tiny by default, idle or fill) into
# an ELF "kernel" for `cellvisor vm run`.
# usage: mktiny.sh OUT.elf [NAME]   (needs binutils: as, ld)
set -euo pipefail
out=${1:?usage: mktiny.sh OUT.elf [tiny|idle|fill]}
name=${2:-tiny}
src=$(dirname "$0")/../guests/$name/$name.S
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
as --64 -o "$tmp/tiny.o" "$src"
mkdir -p "$(dirname "$out")"
ld -static -nostdlib -Ttext=0x200000 -e _start -o "$out" "$tmp/tiny.o"
