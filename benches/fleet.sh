#!/usr/bin/env bash
# What fleet mode costs a request: akgate with `--state redis://` against akgate with its
# embedded state, side by side at the same fixed rate, on 127.0.0.1 only. See benches/README.md.
#
#   bash benches/fleet.sh              # ~4 minutes
#   QUICK=1 bash benches/fleet.sh      # a smoke run of the same steps
#
# Scenarios, interleaved over ROUNDS rounds (medians reported):
#   direct        the generator straight to the upstream
#   akgate        akgate, embedded state (memory)
#   akgate-redis  akgate, --state redis:// (a second instance shares the Redis; the probe checks
#                 that a request replayed to it is refused)
# Redis runs on this machine, so the figures hold a loopback round trip, not a network one: add
# the network's round trip between akgate and Redis for a real deployment.
#
# Knobs (environment): ROUNDS RATE DURATION WARMUP CONNECTIONS KEYS PIN PORT_BASE QUICK.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
OUT="$TARGET_DIR/bench-fleet"
RUN="$OUT/run"
RULES="$OUT/rules"

if [ "${QUICK:-0}" = 1 ]; then
    : "${ROUNDS:=1}" "${DURATION:=3}" "${WARMUP:=1}"
fi
ROUNDS="${ROUNDS:-5}"
RATE="${RATE:-5000}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
KEYS="${KEYS:-1000}"
PIN="${PIN:-1}"
PORT_BASE="${PORT_BASE:-18180}"

UPSTREAM_PORT=$((PORT_BASE + 1))
REDIS_PORT=$((PORT_BASE + 9))
declare -A PORT=(
    [direct]=$UPSTREAM_PORT
    [akgate]=$((PORT_BASE + 2))
    [akgate-redis]=$((PORT_BASE + 3))
    [akgate-redis-b]=$((PORT_BASE + 4))
)
declare -A ADMIN=(
    [akgate]=$((PORT_BASE + 12))
    [akgate-redis]=$((PORT_BASE + 13))
    [akgate-redis-b]=$((PORT_BASE + 14))
)
SCENARIOS=(direct akgate akgate-redis)

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

step "what is needed: redis-server"
REDIS_SERVER="$(command -v redis-server || true)"
[ -n "$REDIS_SERVER" ] || [ ! -x /usr/bin/redis-server ] || REDIS_SERVER=/usr/bin/redis-server
if [ -z "$REDIS_SERVER" ]; then
    apt_install --no-install-recommends redis-server
    REDIS_SERVER="$(command -v redis-server || echo /usr/bin/redis-server)"
fi
"$REDIS_SERVER" --version

step "build (release)"
cargo build --release --locked --bin akgate
AKGATE="$TARGET_DIR/release/akgate"
cargo bench --locked --no-run --bench loadgen
LOADGEN="$(bench_exe loadgen)"
[ -x "$LOADGEN" ] || die "cannot find the loadgen executable"

mkdir -p "$OUT" "$RUN"
rm -rf "${RUN:?}"/*
for p in "${PORT[@]}" "${ADMIN[@]}" "$REDIS_PORT"; do
    listening "$p" && die "127.0.0.1:$p is taken; set PORT_BASE"
done

NPROC="$(nproc)"
if [ "$PIN" = 1 ] && [ "$NPROC" -ge 2 ] && command -v taskset >/dev/null; then
    half=$((NPROC / 2))
    PROXY_CPUS="0-$((half - 1))"
    LOAD_CPUS="$half-$((NPROC - 1))"
    LOAD_THREADS=$((NPROC - half))
    ON_PROXY=(taskset -c "$PROXY_CPUS")
    ON_LOAD=(taskset -c "$LOAD_CPUS")
    PINNING="akgate on CPUs $PROXY_CPUS; generator, upstream and Redis on CPUs $LOAD_CPUS"
else
    LOAD_THREADS=1
    ON_PROXY=()
    ON_LOAD=()
    PINNING="no CPU pinning ($NPROC CPUs shared)"
fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ modified)')"
    echo "cpu: $NPROC × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "redis: $("$REDIS_SERVER" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), loopback, no persistence"
    echo "pinning: $PINNING"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

step "rules: $KEYS keys"
"${ON_LOAD[@]}" "$LOADGEN" rules --dir "$RULES" --keys "$KEYS" --cidrs 10 \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT"

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

step "start the upstream, Redis, akgate (embedded), akgate (Redis) twice"
"${ON_LOAD[@]}" "$LOADGEN" upstream --listen "127.0.0.1:$UPSTREAM_PORT" >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream
"${ON_LOAD[@]}" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$RUN" >"$RUN/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" redis-server

start_akgate() { # name extra-args...
    local name=$1
    shift
    "${ON_PROXY[@]}" "$AKGATE" serve --rules "$RULES" --listen "127.0.0.1:${PORT[$name]}" \
        --admin "127.0.0.1:${ADMIN[$name]}" --audit-log off --shutdown-grace 1s "$@" \
        >"$RUN/$name.out" 2>"$RUN/$name.err" &
    PIDS+=($!)
    PID_OF[$name]=$!
    wait_port "${PORT[$name]}" "$name"
}
declare -A PID_OF=()
# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
start_akgate akgate
start_akgate akgate-redis --state "redis://127.0.0.1:$REDIS_PORT"
start_akgate akgate-redis-b --state "redis://127.0.0.1:$REDIS_PORT"
ready() { # admin port
    local i
    for i in $(seq 1 100); do
        python3 - "$1" <<'EOF' && return 0
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
except Exception:
    sys.exit(1)
EOF
        sleep 0.1
    done
    die "akgate on admin port $1 is not ready (Redis connected?)"
}
ready "${ADMIN[akgate-redis]}"
ready "${ADMIN[akgate-redis-b]}"

step "probe: each answers a signed request and refuses forged and replayed ones; a replay to the other fleet instance is refused"
"${ON_LOAD[@]}" "$LOADGEN" probe --target "127.0.0.1:${PORT[akgate]}" --keys "$KEYS" --expect-auth
"${ON_LOAD[@]}" "$LOADGEN" probe --target "127.0.0.1:${PORT[akgate-redis]}" --keys "$KEYS" --expect-auth \
    --replay-to "127.0.0.1:${PORT[akgate-redis-b]}"

run() { # name round
    "${ON_LOAD[@]}" "$LOADGEN" run --name "$1" --kind fixed --round "$2" \
        --target "127.0.0.1:${PORT[$1]}" --keys "$KEYS" --threads "$LOAD_THREADS" \
        --warmup "$WARMUP" --out "$RESULTS" --rate "$RATE" --duration "$DURATION" \
        --connections "$CONNECTIONS" >/dev/null
}
declare -A TICKS0=()
for name in akgate akgate-redis; do
    TICKS0[$name]=$(cpu_ticks "${PID_OF[$name]}")
done
for round in $(seq 1 "$ROUNDS"); do
    order=("${SCENARIOS[@]:$(((round - 1) % 3))}" "${SCENARIOS[@]:0:$(((round - 1) % 3))}")
    step "round $round/$ROUNDS: fixed $RATE req/s (order: ${order[*]})"
    for name in "${order[@]}"; do
        run "$name" "$round"
    done
done

HZ=$(getconf CLK_TCK)
for name in akgate akgate-redis; do
    # Each instance served ROUNDS runs of (WARMUP + DURATION) s at RATE.
    awk -v t=$(($(cpu_ticks "${PID_OF[$name]}") - TICKS0[$name])) -v hz="$HZ" -v n="$name" \
        -v req="$(python3 -c "print(int($ROUNDS * ($WARMUP + $DURATION) * $RATE))")" \
        'BEGIN { printf "%s: %.1f µs of CPU per request (%d requests)\n", n, 1e6 * t / hz / req, req }'
done | tee "$OUT/cpu.txt"

step "the Redis round trip as akgate measured it (akgate_state_round_trip_seconds)"
python3 - "${ADMIN[akgate-redis]}" <<'EOF' | tee "$OUT/round-trip.txt"
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
buckets, total, count, errors = [], 0.0, 0, 0.0
for line in text.splitlines():
    if line.startswith("akgate_state_round_trip_seconds_bucket"):
        le = line.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    elif line.startswith("akgate_state_round_trip_seconds_sum"):
        total = float(line.rsplit(" ", 1)[1])
    elif line.startswith("akgate_state_round_trip_seconds_count"):
        count = int(float(line.rsplit(" ", 1)[1]))
    elif line.startswith("akgate_state_errors_total"):
        errors += float(line.rsplit(" ", 1)[1])
def bound(q):
    for le, c in sorted(buckets):
        if c >= q * count:
            return le
if count:
    print(f"{count} claims, mean {1e6 * total / count:.0f} µs, p50 ≤ {1e6 * bound(0.5):.0f} µs, "
          f"p99 ≤ {1e6 * bound(0.99):.0f} µs (histogram bucket bounds), state errors {errors:.0f}")
else:
    print("no claims recorded")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
stop_all

step "report"
# The fixed-rate table of `loadgen report`, without its heading.
fixed_table() { awk '/^### Latency at a fixed/ { f = 1; next } f && /^\|/ { print; t = 1; next } f && t { exit }'; }
{
    echo "### Fleet mode: added latency, $(date -u +%Y-%m-%d)"
    echo
    echo "Command: \`$( [ "${QUICK:-0}" = 1 ] && printf 'QUICK=1 ')bash benches/fleet.sh\` (rounds $ROUNDS, $DURATION s measured after $WARMUP s warm-up, $KEYS keys, $CONNECTIONS connections, open loop at $RATE req/s)."
    echo
    echo '```'
    cat "$OUT/machine.txt"
    cat "$OUT/cpu.txt" "$OUT/round-trip.txt"
    echo '```'
    echo
    echo "Against the upstream alone:"
    echo
    "$LOADGEN" report "$RESULTS" --baseline direct | fixed_table
    echo
    echo "What Redis adds to the embedded state (added = akgate-redis − akgate, same round):"
    echo
    "$LOADGEN" report "$RESULTS" --baseline akgate | fixed_table
} >"$OUT/report.md"
cat "$OUT/report.md"
echo >&2
echo "report: $OUT/report.md; raw results: $RESULTS" >&2
