#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 600), one after the other, each in one
# process on one core (libFuzzer's -jobs would fork workers and log to files of its own).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs only a stable toolchain: libFuzzer's nightly-only compiler flags are allowed here (and only
# here) with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz from crates.io if it is missing. New corpus
# entries land in fuzz/corpus/<target>/ (minimise with `cargo fuzz cmin` before committing);
# crashes land in fuzz/artifacts/<target>/. A summary line per target is printed at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${1:-600}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(auth_parse canonicalize rules_load decide)
fi

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The seeds come from the project's own SDK vectors and shipped rules.
python3 seeds.py

# -s none: akgate forbids unsafe code, so AddressSanitizer would mostly watch dependencies at
# twice the cost; -a keeps debug assertions and overflow checks, which is where safe Rust fails.
build_flags=(-s none -O -a)
cargo fuzz build "${build_flags[@]}"

summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" logs
    log="logs/$t.log"
    echo "==> $t for ${seconds}s (log: fuzz/$log)"
    status=0
    cargo fuzz run "${build_flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo ?)"
    speed="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo ?)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo ?)"
    ft="$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo ?)"
    files="$(find "corpus/$t" -type f | wc -l)"
    size="$(du -sk "corpus/$t" | cut -f1)"
    crashes="$(find "artifacts/$t" -type f | wc -l)"
    summary+=("$t: exit $status, $runs runs, $speed exec/s, cov $cov, ft $ft, corpus $files files / ${size} KiB, artifacts $crashes")
done

echo
printf '%s\n' "${summary[@]}"
