#!/usr/bin/env bash
# End-to-end benchmark of akgate against nginx, on 127.0.0.1 only. See benches/README.md.
#
#   bash benches/e2e.sh                # everything: ~20 minutes on 2 cores
#   QUICK=1 bash benches/e2e.sh        # a short smoke run of the same steps (~5 minutes)
#
# Scenarios, side by side, interleaved over ROUNDS rounds (medians reported):
#   direct        the generator straight to the upstream
#   akgate        akgate, full verification, --audit-log off
#   akgate-audit  akgate, full verification, audit log to a file
#   nginx         nginx proxy_pass, no authentication at all
#   nginx-lua     nginx + Lua ACS3-HMAC-SHA256 check (benches/nginx/akbench_hmac.lua)
# each at a fixed open-loop rate (RATE) and at max throughput (closed loop); then a rate sweep
# (plot), reloads under load, and the rule-set scaling table. Every request is signed by the
# generator with a fresh nonce. Output: target/bench/report.md (markdown, ready to paste),
# target/bench/results.jsonl (one JSON line per run), target/bench/latency-vs-rate.png (also
# copied to benches/latency-vs-rate.png).
#
# Knobs (environment): ROUNDS RATE DURATION WARMUP CONNECTIONS MAX_CONNECTIONS KEYS CIDRS
# SWEEP_RATES SWEEP_TARGETS SWEEP_DURATION RELOAD_HZ SCALING SCALING_MAX_KEYS SCALING_MAX_CIDRS
# PIN PORT_BASE QUICK HALTPOLL_NS.
#
# HALTPOLL_NS (root, a KVM guest with the haltpoll cpuidle driver): how long an idle CPU polls
# before it halts, for this run only (the value before is restored at exit). On a VM, waking a
# halted CPU costs a VM exit and entry, which dominates the latency a proxy adds at a fixed rate
# (nginx's as much as akgate's); machine.txt records the value in force either way.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
OUT="$TARGET_DIR/bench"
RUN="$OUT/run"
RULES="$TARGET_DIR/bench-rules"

if [ "${QUICK:-0}" = 1 ]; then
    : "${ROUNDS:=1}" "${DURATION:=3}" "${WARMUP:=1}" "${KEYS:=10000}" "${CIDRS:=10000}"
    : "${SWEEP_RATES:=1000 5000 10000 20000}" "${SWEEP_DURATION:=2}" "${SCALING_MAX_KEYS:=10000}"
    : "${SCALING_MAX_CIDRS:=10000}"
fi
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-5000}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
MAX_CONNECTIONS="${MAX_CONNECTIONS:-64}"
KEYS="${KEYS:-100000}"
CIDRS="${CIDRS:-100000}"
SWEEP_RATES="${SWEEP_RATES:-1000 2500 5000 7500 10000 15000 20000 30000 40000}"
SWEEP_TARGETS="${SWEEP_TARGETS:-akgate nginx nginx-lua}"
SWEEP_DURATION="${SWEEP_DURATION:-5}"
RELOAD_HZ="${RELOAD_HZ:-10}"
SCALING="${SCALING:-1}"
SCALING_MAX_KEYS="${SCALING_MAX_KEYS:-1000000}"
SCALING_MAX_CIDRS="${SCALING_MAX_CIDRS:-1000000}"
PIN="${PIN:-1}"
PORT_BASE="${PORT_BASE:-18080}"
HALTPOLL_NS="${HALTPOLL_NS:-}"
HALTPOLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns

UPSTREAM_PORT=$((PORT_BASE + 1))
declare -A PORT=(
    [direct]=$UPSTREAM_PORT
    [akgate]=$((PORT_BASE + 2))
    [akgate-audit]=$((PORT_BASE + 3))
    [nginx]=$((PORT_BASE + 4))
    [nginx-lua]=$((PORT_BASE + 5))
)
ADMIN_PORT=$((PORT_BASE + 12))
ADMIN_AUDIT_PORT=$((PORT_BASE + 13))
SCENARIOS=(direct akgate akgate-audit nginx nginx-lua)

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---------------------------------------------------------------------------------------------
step "what is needed: nginx, its Lua module, matplotlib"
if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then
    apt_install nginx libnginx-mod-http-lua
fi
nginx -v 2>&1
VENV="$TARGET_DIR/bench-venv"
PLOT=1
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet matplotlib; }; then
        printf '!!! matplotlib could not be installed: no plot this time\n' >&2
        PLOT=0
    fi
fi

step "build (release)"
cargo build --release --locked --bin akgate
AKGATE="$TARGET_DIR/release/akgate"
cargo bench --locked --no-run --bench loadgen --bench scaling
LOADGEN="$(bench_exe loadgen)"
SCALING_BIN="$(bench_exe scaling)"
[ -x "$LOADGEN" ] && [ -x "$SCALING_BIN" ] || die "cannot find the loadgen/scaling executables"

mkdir -p "$OUT" "$RUN"
rm -rf "$RUN"/*
for name in "${SCENARIOS[@]}"; do
    listening "${PORT[$name]}" && die "127.0.0.1:${PORT[$name]} is taken; set PORT_BASE"
done

# ---------------------------------------------------------------------------------------------
# How busy the CPUs are with other work: 2 s of /proc/stat, less what the benchmark's own (idle,
# between runs) servers used meanwhile; an akgate reload in progress counts as ours.
own_ticks() {
    local p t=0 all=()
    for p in "${PIDS[@]}"; do
        all+=("$p")
        all+=($(pgrep -P "$p" 2>/dev/null || true))
    done
    for p in "${all[@]}"; do
        # Fields after "pid (comm) ": utime and stime are the 12th and 13th.
        [ -r "/proc/$p/stat" ] && t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}
cpu_busy() { # label
    local a b own1 own2
    a=$(head -n 1 /proc/stat)
    own1=$(own_ticks)
    sleep 2
    b=$(head -n 1 /proc/stat)
    own2=$(own_ticks)
    printf '%s\n%s\n' "$a" "$b" | awk -v own=$((own2 - own1)) '{
        idle[NR] = $5 + $6; total[NR] = 0; for (i = 2; i <= NF; i++) total[NR] += $i }
        END { t = total[2] - total[1]; busy = t - (idle[2] - idle[1])
              printf "CPU busy with other work %s: %.0f %% (the benchmark'"'"'s own idle servers: %.0f %%)\n",
                     label, 100 * (busy - own) / t, 100 * own / t }' label="$1" |
        tee -a "$OUT/machine.txt" >&2
}

if [ -n "$HALTPOLL_NS" ]; then
    [ -w "$HALTPOLL" ] || die "HALTPOLL_NS: $HALTPOLL is not writable (needs root and the haltpoll driver)"
    HALTPOLL_BEFORE=$(cat "$HALTPOLL")
    trap 'stop_all; echo "$HALTPOLL_BEFORE" >"$HALTPOLL"' EXIT
    echo "$HALTPOLL_NS" >"$HALTPOLL"
fi

step "machine"
NPROC="$(nproc)"
if [ "$PIN" = 1 ] && [ "$NPROC" -ge 2 ] && command -v taskset >/dev/null; then
    # The proxy under test gets the first half of the CPUs; the generator and the upstream the
    # other half, so they do not steal its cycles (and every proxy gets the same CPUs).
    half=$((NPROC / 2))
    PROXY_CPUS="0-$((half - 1))"
    LOAD_CPUS="$half-$((NPROC - 1))"
    PROXY_WORKERS=$half
    LOAD_THREADS=$((NPROC - half))
    ON_PROXY=(taskset -c "$PROXY_CPUS")
    ON_LOAD=(taskset -c "$LOAD_CPUS")
    PINNING="proxies on CPUs $PROXY_CPUS ($PROXY_WORKERS workers), generator and upstream on CPUs $LOAD_CPUS"
else
    PROXY_WORKERS=$NPROC
    LOAD_THREADS=1
    ON_PROXY=()
    ON_LOAD=()
    PINNING="no CPU pinning ($NPROC CPUs shared)"
fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ modified)')"
    echo "cpu: $NPROC × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), Lua module $(dpkg-query -W -f '${Version}' libnginx-mod-http-lua 2>/dev/null || echo '?')"
    echo "pinning: $PINNING"
    echo "idle CPUs poll before halting: $(cat "$HALTPOLL" 2>/dev/null || echo '?') ns (cpuidle driver $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?'))"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"
cpu_busy "before the run"

# ---------------------------------------------------------------------------------------------
step "rules: $KEYS keys, $CIDRS CIDRs"
"${ON_LOAD[@]}" "$LOADGEN" rules --dir "$RULES" --keys "$KEYS" --cidrs "$CIDRS" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" --lua-secrets "$RUN/lua-secrets.txt"
rm -f "$RULES/zz-bench-reload.toml"

RESULTS="$OUT/results.jsonl"
[ -f "$RESULTS" ] && mv "$RESULTS" "$OUT/results.prev.jsonl"
: >"$RESULTS"

step "start the upstream, akgate (twice), nginx (twice)"
"${ON_LOAD[@]}" "$LOADGEN" upstream --listen "127.0.0.1:$UPSTREAM_PORT" >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream

AKGATE_PID=
start_akgate() { # name port admin audit-log
    local t0 pid
    t0=$(date +%s.%N)
    "${ON_PROXY[@]}" "$AKGATE" serve --rules "$RULES" --listen "127.0.0.1:$2" --admin "127.0.0.1:$3" \
        --audit-log "$4" --shutdown-grace 1s >"$RUN/$1.out" 2>"$RUN/$1.err" &
    pid=$!
    PIDS+=("$pid")
    local secs
    secs=$(time_port "$2" "$t0" "$1")
    local rss
    rss=$(awk '/VmRSS/ { print $2 / 1024 }' "/proc/$pid/status")
    printf '{"kind":"startup","name":"%s","keys":%s,"cidrs":%s,"start_s":%s,"rss_mb":%s}\n' \
        "$1" "$KEYS" "$CIDRS" "$secs" "$rss" >>"$RESULTS"
    echo "$1: listening after ${secs}s (rule load included), RSS ${rss} MB" >&2
    AKGATE_PID=$pid
}
start_akgate akgate "${PORT[akgate]}" "$ADMIN_PORT" off
AKGATE_MAIN_PID=$AKGATE_PID
start_akgate akgate-audit "${PORT[akgate-audit]}" "$ADMIN_AUDIT_PORT" "$RUN/audit.log"
AKGATE_AUDIT_PID=$AKGATE_PID

start_nginx() { # name conf port
    mkdir -p "$RUN/nginx-$2-tmp"
    sed -e "s|@WORKERS@|$PROXY_WORKERS|g; s|@RUN@|$RUN|g; s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" \
        -e "s|@LISTEN@|127.0.0.1:$3|g; s|@BENCHES@|$ROOT/benches|g; s|@SECRETS@|$RUN/lua-secrets.txt|g" \
        "$ROOT/benches/nginx/$2.conf" >"$RUN/$1.conf"
    "${ON_PROXY[@]}" nginx -p "$RUN" -c "$RUN/$1.conf" >"$RUN/$1.out" 2>&1 &
    PIDS+=($!)
    wait_port "$3" "$1"
}
start_nginx nginx plain "${PORT[nginx]}"
start_nginx nginx-lua lua "${PORT[nginx-lua]}"

step "probe: every target answers a signed request; the verifying ones refuse tampered, forged and replayed ones"
for name in direct nginx; do
    "${ON_LOAD[@]}" "$LOADGEN" probe --target "127.0.0.1:${PORT[$name]}" --keys "$KEYS"
done
for name in akgate akgate-audit nginx-lua; do
    "${ON_LOAD[@]}" "$LOADGEN" probe --target "127.0.0.1:${PORT[$name]}" --keys "$KEYS" --expect-auth ||
        die "$name does not verify signatures as it should"
done

# akgate's memory after each phase: the nonce cache grows with the requests served (one entry per
# request for nonce_ttl), and each reload builds a whole new snapshot.
record_rss() { # phase
    local rss hwm
    rss=$(awk '/VmRSS/ { print $2 / 1024 }' "/proc/$AKGATE_MAIN_PID/status")
    hwm=$(awk '/VmHWM/ { print $2 / 1024 }' "/proc/$AKGATE_MAIN_PID/status")
    printf '{"kind":"rss","name":"akgate","phase":"%s","rss_mb":%s,"hwm_mb":%s}\n' "$1" "$rss" "$hwm" >>"$RESULTS"
    echo "akgate RSS $1: $rss MB (peak $hwm MB)" | tee -a "$OUT/machine.txt" >&2
}

# ---------------------------------------------------------------------------------------------
run() { # name kind round args...
    local name=$1 kind=$2 round=$3
    shift 3
    "${ON_LOAD[@]}" "$LOADGEN" run --name "$name" --kind "$kind" --round "$round" \
        --target "127.0.0.1:${PORT[$name]}" --keys "$KEYS" --threads "$LOAD_THREADS" \
        --warmup "$WARMUP" --out "$RESULTS" "$@" >/dev/null
}
# Each result carries the hypervisor's steal during its run (the time it gave other guests): on
# a shared VM that, not the proxy, is often what moves p99 and max throughput from one run to
# the next, and the 2 s samples of `cpu_busy` miss neighbours that come and go.
steal_summary() { # label kind [round]
    python3 - "$RESULTS" "$1" "$2" "${3:-}" <<'PY' | tee -a "$OUT/machine.txt" >&2
import json, sys
results, label, kind, rnd = sys.argv[1:]
runs = []
for line in open(results):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("kind") == kind and v.get("steal_pct") is not None and (not rnd or str(v.get("round")) == rnd):
        runs.append(v)
if runs:
    worst = max(runs, key=lambda v: v["steal_pct"])
    mean = sum(v["steal_pct"] for v in runs) / len(runs)
    print(f"hypervisor steal during {label}: mean {mean:.0f} %, worst {worst['steal_pct']:.0f} % ({worst['name']})")
PY
}

for round in $(seq 1 "$ROUNDS"); do
    # A different order each round, so no scenario always follows the same one.
    order=("${SCENARIOS[@]:$(((round - 1) % 5))}" "${SCENARIOS[@]:0:$(((round - 1) % 5))}")
    step "round $round/$ROUNDS: fixed $RATE req/s, then max throughput (order: ${order[*]})"
    cpu_busy "before round $round"
    for name in "${order[@]}"; do
        run "$name" fixed "$round" --rate "$RATE" --duration "$DURATION" --connections "$CONNECTIONS"
    done
    for name in "${order[@]}"; do
        run "$name" max "$round" --max --duration "$DURATION" --connections "$MAX_CONNECTIONS"
    done
    steal_summary "round $round at $RATE req/s" fixed "$round"
    steal_summary "round $round at max" max "$round"
done

record_rss after-rounds

step "rate sweep: $SWEEP_TARGETS at $SWEEP_RATES req/s"
cpu_busy "before the sweep"
declare -A SATURATED=()
for rate in $SWEEP_RATES; do
    for name in direct $SWEEP_TARGETS; do
        [ -n "${SATURATED[$name]:-}" ] && continue
        run "$name" sweep 0 --rate "$rate" --duration "$SWEEP_DURATION" --connections "$MAX_CONNECTIONS"
        # Past saturation latency only measures the queue; one point there is enough.
        if tail -n 1 "$RESULTS" | python3 -c 'import json,sys
v = json.loads(sys.stdin.read())
bad = sum(v["bad_status"].values()) + v["errors"] + v["unsent"]
sys.exit(0 if v["achieved_rps"] < 0.95 * v["rate"] or v["p99_us"] > 200000 or bad else 1)'; then
            SATURATED[$name]=1
            echo "$name saturated at $rate req/s" >&2
        fi
    done
done

steal_summary "the sweep" sweep
record_rss after-sweep

step "reloads under load: $KEYS keys, rules rewritten and reloaded ${RELOAD_HZ}×/s, $RATE req/s"
# The audit instance watches the same directory: stop it so only the measured one reloads.
kill -TERM "$AKGATE_AUDIT_PID" 2>/dev/null || true
wait "$AKGATE_AUDIT_PID" 2>/dev/null || true
cpu_busy "before the reloads"
for round in $(seq 1 "$ROUNDS"); do
    run akgate reload-baseline "$round" --rate "$RATE" --duration "$DURATION" --connections "$CONNECTIONS"
    run akgate reload "$round" --rate "$RATE" --duration "$DURATION" --connections "$CONNECTIONS" \
        --reload-dir "$RULES" --reload-admin "127.0.0.1:$ADMIN_PORT" --reload-hz "$RELOAD_HZ"
    # Reloads the watcher queued during the run would otherwise land in the next baseline.
    "${ON_LOAD[@]}" "$LOADGEN" settle --admin "127.0.0.1:$ADMIN_PORT"
done
rm -f "$RULES/zz-bench-reload.toml"
steal_summary "the runs without reloads" reload-baseline
steal_summary "the runs with reloads" reload
record_rss after-reloads
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
cpu_busy "at the end"
stop_all

# ---------------------------------------------------------------------------------------------
if [ "$PLOT" = 1 ]; then
    step "plot"
    "$VENV/bin/python" "$ROOT/benches/plot.py" "$RESULTS" "$OUT/latency-vs-rate.png" \
        "Latency vs offered rate, $KEYS keys, $(date -u +%Y-%m-%d)"
    # A smoke run does not replace the committed figure.
    [ "${QUICK:-0}" = 1 ] || cp "$OUT/latency-vs-rate.png" "$ROOT/benches/latency-vs-rate.png"
fi

if [ "$SCALING" = 1 ]; then
    step "scaling: rule sets up to $SCALING_MAX_KEYS keys and $SCALING_MAX_CIDRS CIDRs"
    "$SCALING_BIN" sweep --dir "$TARGET_DIR/bench-scaling" --max-keys "$SCALING_MAX_KEYS" \
        --max-cidrs "$SCALING_MAX_CIDRS" >"$OUT/scaling.md"
    rm -rf "$TARGET_DIR/bench-scaling"
fi

step "report"
{
    echo "## Results $(date -u +%Y-%m-%d)"
    echo
    echo "Command: \`$( [ "${QUICK:-0}" = 1 ] && printf 'QUICK=1 ')bash benches/e2e.sh\` (rounds $ROUNDS, $DURATION s measured after $WARMUP s warm-up, $KEYS keys, $CIDRS CIDRs, $CONNECTIONS connections open loop, $MAX_CONNECTIONS closed loop)."
    echo
    echo '```'
    cat "$OUT/machine.txt"
    echo '```'
    echo
    "$LOADGEN" report "$RESULTS"
    if [ -s "$OUT/scaling.md" ] && [ "$SCALING" = 1 ]; then
        echo "### Rule-set scaling (in process, one fresh process per size)"
        echo
        cat "$OUT/scaling.md"
        echo
    fi
} >"$OUT/report.md"
cat "$OUT/report.md"
echo >&2
echo "report: $OUT/report.md; raw results: $RESULTS" >&2
