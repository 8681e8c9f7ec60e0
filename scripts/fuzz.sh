#!/usr/bin/env bash
# The fuzz campaign: every cargo-fuzz target in fuzz/ for SECONDS each (default 60), from its
# seeds (fuzz/seeds/TARGET, in the repository) and the corpus grown so far (fuzz/corpus/TARGET,
# not committed), built with debug assertions (so an overflow is a crash) and AddressSanitizer.
# Prints one line per target: executions, seconds, libFuzzer's coverage (cov: edges, ft:
# features) and the corpus size. A crash fails the run; its input is in fuzz/artifacts/TARGET
# (replay it with `cargo +nightly fuzz run -a TARGET FILE`).
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (needs the nightly toolchain; installs
# cargo-fuzz from crates.io when it is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(oci_config profile port_request channel_peer stream_frames virtio_queues virtio_balloon)
fi
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: skipped, no nightly toolchain (rustup toolchain list)"
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cargo +nightly fuzz build -a >/dev/null
fail=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
    log=$(mktemp)
    if ! cargo +nightly fuzz run -a "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        echo "$t: CRASHED"
        grep -E "panicked|ERROR: |SUMMARY|artifact_prefix|Test unit written" "$log" | head -20 || tail -30 "$log"
        fail=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(find "fuzz/corpus/$t" -type f | wc -l)
    printf '%-14s %12s executions %6s s   cov %6s   ft %6s   corpus %5s\n' \
        "$t" "${runs:-?}" "${took:-?}" "${cov:-?}" "${ft:-?}" "$corp"
    rm -f "$log"
done
exit $fail
