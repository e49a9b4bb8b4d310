# Sourced by the benchmark scripts (benches/e2e.sh, benches/fleet.sh): messages, and the
# processes they start, all stopped on exit whatever happens. Needs RUN (the logs directory).

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '\n!!! %s\n' "$*" >&2; exit 1; }

PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port what
    local i
    # akgate loads its rules before it listens: a big rule set takes a while.
    for i in $(seq 1 1200); do
        listening "$1" && return 0
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 120 s ($2); see $RUN/"
}
