# Shared by the scripts that run a benchmark inside scripts/kvm-test-host.sh (sourced).
# The binaries come from $CELLVISOR_BIN (default target/release), the static agent from
# $CELLVISOR_AGENT; the guest kernel is the newest /boot/vmlinuz-*-cloud-amd64.
bin=${CELLVISOR_BIN:-target/release}
agent=${CELLVISOR_AGENT:-$bin/cellvisor-agent}   # the static agent (make agent)
kernel=$(ls /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -n 1)
mke2fs=$(command -v mke2fs || echo /usr/sbin/mke2fs)

# test_host_run OUT ARGS... -- CMD: kvm-test-host.sh ARGS -- CMD, its output in OUT. The
# emulator sometimes stalls for good (kvm-test-host.sh then exits 3): up to three tries.
test_host_run() {
  local out=$1 try rc; shift
  for try in 1 2 3; do
    rc=0
    scripts/kvm-test-host.sh "$@" > "$out" || rc=$?
    [ "$rc" = 3 ] && [ "$try" -lt 3 ] && { echo "the test host stalled; again ($try)" >&2; continue; }
    [ "$rc" = 0 ] || { cat "$out"; exit 1; }
    return 0
  done
}

# test_host_report OUT DIR: the report the command printed between REPORT-BEGIN and
# REPORT-END (a base64 tarball) unpacked into DIR.
test_host_report() {
  mkdir -p "$2"
  sed -n '/^REPORT-BEGIN/,/^REPORT-END/p' "$1" | sed '1d;$d' | base64 -d | tar -C "$2" -xzf - || { echo "no report:"; cat "$1"; exit 1; }
}
