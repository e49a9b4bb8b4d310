#!/usr/bin/env bash
# What one proxied request costs each proxy, counted rather than timed: user-space instructions
# (valgrind's callgrind) and system calls (strace) per request, for akgate, nginx `proxy_pass` and
# nginx + Lua HMAC, each driven by the same signed-request generator at a low fixed rate.
#
# Time on these shared 2-CPU machines moves by ±40 % from one minute to the next; instruction and
# system-call counts do not, so they show what a change to the request path is worth, and how far
# akgate is from nginx, in one short run. They leave out what the kernel does for each system call
# and cache effects: `benches/e2e.sh` remains the measure of latency and throughput.
#
# Usage: bash benches/instructions.sh        (needs valgrind, strace, nginx, libnginx-mod-http-lua)
# Knobs: KEYS (10000), CIDRS (1000), REQUESTS (3000, sent at 300 req/s), TARGETS (akgate nginx
# nginx-lua), PORT_BASE (18180). Output: a markdown table on stdout and target/bench/instructions.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
OUT="$TARGET_DIR/bench"
RUN="$OUT/run-instructions"
RULES="$TARGET_DIR/bench-rules-instructions"
KEYS="${KEYS:-10000}"
CIDRS="${CIDRS:-1000}"
REQUESTS="${REQUESTS:-3000}"
RATE=300
TARGETS="${TARGETS:-akgate nginx nginx-lua}"
PORT_BASE="${PORT_BASE:-18180}"
UPSTREAM_PORT=$((PORT_BASE + 1))
PROXY_PORT=$((PORT_BASE + 2))
ADMIN_PORT=$((PORT_BASE + 3))

source "$ROOT/benches/common.sh"

step "what is needed: valgrind, strace, nginx with its Lua module"
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v strace >/dev/null || missing+=(strace)
command -v nginx >/dev/null || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=(libnginx-mod-http-lua)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

step "build (release)"
cargo build --release --locked --bin akgate
AKGATE="$TARGET_DIR/release/akgate"
LOADGEN="$(bench_exe loadgen)"
[ -x "$LOADGEN" ] || die "cannot find the loadgen executable"

mkdir -p "$OUT" "$RUN"
rm -rf "${RUN:?}"/*
"$LOADGEN" rules --dir "$RULES" --keys "$KEYS" --cidrs "$CIDRS" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" --lua-secrets "$RUN/lua-secrets.txt"
rm -f "$RULES/zz-bench-reload.toml"

"$LOADGEN" upstream --listen "127.0.0.1:$UPSTREAM_PORT" >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream

# Starts the proxy under `$@` (a wrapper: valgrind or nothing) and sets PROXY_PID.
start_proxy() { # name wrapper...
    local name=$1
    shift
    case $name in
    akgate)
        "$@" "$AKGATE" serve --rules "$RULES" --listen "127.0.0.1:$PROXY_PORT" \
            --admin "127.0.0.1:$ADMIN_PORT" --audit-log off --shutdown-grace 1s \
            >"$RUN/$name.out" 2>"$RUN/$name.err" &
        ;;
    nginx | nginx-lua)
        local conf=plain
        [ "$name" = nginx-lua ] && conf=lua
        mkdir -p "$RUN/nginx-$conf-tmp"
        # One process (no master): the worker is the process measured.
        sed -e "s|@WORKERS@|1|g; s|@RUN@|$RUN|g; s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" \
            -e "s|@LISTEN@|127.0.0.1:$PROXY_PORT|g; s|@BENCHES@|$ROOT/benches|g" \
            -e "s|@SECRETS@|$RUN/lua-secrets.txt|g; s|^daemon off;|daemon off; master_process off;|" \
            "$ROOT/benches/nginx/$conf.conf" >"$RUN/$name.conf"
        "$@" nginx -p "$RUN" -c "$RUN/$name.conf" >"$RUN/$name.out" 2>&1 &
        ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$PROXY_PORT" "$name"
}

stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

# Warms connections, pools and caches (not counted), then sends REQUESTS signed requests, each
# with its own nonce, over 8 keep-alive connections at `rate`, between `before` and `after`.
drive() { # name rate before after
    "$LOADGEN" run --name "$1" --kind fixed --round 0 --target "127.0.0.1:$PROXY_PORT" \
        --keys "$KEYS" --threads 1 --warmup 0 --out /dev/null --rate 100 --duration 1 \
        --connections 8 >/dev/null
    "$3"
    "$LOADGEN" run --name "$1" --kind fixed --round 0 --target "127.0.0.1:$PROXY_PORT" \
        --keys "$KEYS" --threads 1 --warmup 0 --out "$RUN/runs.jsonl" --rate "$2" \
        --duration "$(((REQUESTS + $2 - 1) / $2))" --connections 8 >/dev/null
    "$4"
}
answered() { tail -n 1 "$RUN/runs.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])'; }

measure_on() { callgrind_control -i on "$PROXY_PID" >/dev/null; }
measure_off() {
    callgrind_control -i off "$PROXY_PID" >/dev/null
    callgrind_control -d "$PROXY_PID" >/dev/null
}
trace_on() {
    strace -f -c -p "$PROXY_PID" -o "$RUN/$name.strace" 2>/dev/null &
    TRACER=$!
    sleep 0.5
}
trace_off() {
    kill -INT "$TRACER"
    wait "$TRACER" 2>/dev/null || true
}

: >"$RUN/runs.jsonl"
declare -A INSTR SYSCALLS DETAIL HASH
for name in $TARGETS; do
    step "$name under callgrind"
    # Counting starts after start-up (rule loading is not a request's cost).
    start_proxy "$name" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$RUN/$name.callgrind"
    drive "$name" "$RATE" measure_on measure_off
    stop_proxy
    dump="$RUN/$name.callgrind.1"
    [ -s "$dump" ] || die "no callgrind dump for $name"
    # Whole outputs to files: a reader that stops early would end the writer with SIGPIPE.
    callgrind_annotate --inclusive=yes "$dump" >"$RUN/$name.annotate.txt" 2>/dev/null
    total=$(awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }' "$RUN/$name.annotate.txt")
    ok=$(answered)
    [ "$ok" -gt 0 ] || die "$name answered no request"
    INSTR[$name]=$((total / ok))
    echo "$name: $((total / ok)) instructions per request ($ok requests)" >&2
    # The hash block functions' own instructions. Valgrind does not emulate SHA-NI, so here they
    # run the crates' portable code; natively the same binary uses the CPU's SHA instructions and
    # these are a few hundred cycles per request.
    callgrind_annotate "$dump" >"$RUN/$name.self.txt" 2>/dev/null
    # Only the per-function table at the top: the annotated sources below it repeat the counts.
    HASH[$name]=$(awk -v n="$ok" '/-- (Auto|User)-annotated source/ { exit }
        /(sha2::sha256|sha1|sm3)::compress/ && $1 ~ /^[0-9,]+$/ && !/=>/ {
            gsub(",", "", $1); s += $1 } END { printf "%d", s / n }' "$RUN/$name.self.txt")

    step "$name under strace"
    start_proxy "$name"
    drive "$name" 1000 trace_on trace_off
    stop_proxy
    ok=$(answered)
    [ "$ok" -gt 0 ] || die "$name answered no request under strace"
    SYSCALLS[$name]=$(awk -v n="$ok" '$NF == "total" { printf "%.2f", $4 / n }' "$RUN/$name.strace")
    # strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall.
    DETAIL[$name]=$(awk -v n="$ok" 'NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" {
            if ($4 / n >= 0.05) printf "%s %.2f, ", $NF, $4 / n }' "$RUN/$name.strace" | sed 's/, $//')
done

{
    echo "Command: \`bash benches/instructions.sh\` ($REQUESTS signed requests, $KEYS keys, $CIDRS CIDRs, 8 keep-alive connections; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ', src/ modified'))"
    echo
    echo "| proxy | user-space instructions per request | × nginx | system calls per request | of which (per request) |"
    echo "|---|---:|---:|---:|---|"
    for name in $TARGETS; do
        ratio="—"
        [ -n "${INSTR[nginx]:-}" ] && ratio=$(python3 -c "print(f'{${INSTR[$name]} / ${INSTR[nginx]}:.2f}')")
        echo "| $name | ${INSTR[$name]} | $ratio | ${SYSCALLS[$name]} | ${DETAIL[$name]} |"
    done
    if [ -n "${HASH[akgate]:-}" ] && [ "${HASH[akgate]}" -gt 0 ]; then
        echo
        echo "Of akgate's ${INSTR[akgate]}, ${HASH[akgate]} are SHA block compression in portable code:" \
            "valgrind does not emulate SHA-NI, which the same binary uses natively (those blocks then" \
            "cost a few hundred cycles). Without them: $((INSTR[akgate] - HASH[akgate])) per request."
    fi
} | tee "$OUT/instructions.md"
