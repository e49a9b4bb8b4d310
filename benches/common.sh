# Sourced by the benchmark scripts (benches/e2e.sh, benches/fleet.sh, benches/instructions.sh):
# messages, package installs, bench executables, and the processes they start, all stopped on
# exit whatever happens. Needs RUN (the logs directory).

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

# Seconds from $2 (a `date +%s.%N` taken just before the process was started) until 127.0.0.1:$1
# accepts a connection, to the millisecond: one process polling every 2 ms. (`wait_port` forks a
# shell and a `sleep` per 100 ms try, which added 0.1-0.3 s to a start-up time.) On the load
# CPUs (`ON_LOAD`) when the caller pins, so the poller does not take CPU from what it times.
time_port() { # port t0 what
    ${ON_LOAD[@]+"${ON_LOAD[@]}"} python3 - "$@" <<'PY' || die "nothing listens on 127.0.0.1:$1 after 120 s ($3); see $RUN/"
import socket, sys, time
port, t0 = int(sys.argv[1]), float(sys.argv[2])
deadline = time.time() + 120
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        print(f"{time.time() - t0:.3f}")
        sys.exit(0)
    except OSError:
        time.sleep(0.002)
sys.exit(1)
PY
}

# Installs Debian packages (needs root), with their services kept from starting: a packaged
# nginx or redis would take ports and CPU the benchmark measures.
apt_install() { # [apt-get options] package...
    [ "$(id -u)" = 0 ] || die "missing: $* (apt-get install them, or run this once as root)"
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

# The executable cargo builds for a bench target (built if needed).
bench_exe() { # target
    cargo bench --locked --no-run --bench "$1" --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1" | tail -n 1
}
