#!/usr/bin/env bash
# Create (or reuse) the Python virtualenv used by the SDK interop tests and print its python path.
#
#   tests/interop/setup-venv.sh            # venv at target/interop-venv (relative to the repo root)
#   AKGATE_INTEROP_VENV=/some/dir tests/interop/setup-venv.sh
#
# Idempotent: requirements.txt is installed only when its sha256 differs from the stamp left by the last
# successful install. All progress goes to stderr; the last (only) line on stdout is the venv's python.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
cd "$repo_root"

venv="${AKGATE_INTEROP_VENV:-target/interop-venv}"
case "$venv" in
    /*) ;;
    *) venv="$repo_root/$venv" ;;
esac
requirements="$here/requirements.txt"
stamp="$venv/.akgate-requirements.sha256"
python="$venv/bin/python"

log() { echo "setup-venv: $*" >&2; }

make_venv() {
    # A half-made venv (e.g. from a failed ensurepip) must not be mistaken for a good one.
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
}

if [ ! -x "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
    log "creating virtualenv at $venv"
    mkdir -p "$(dirname "$venv")"
    if ! make_venv; then
        # Debian's python3 ships venv/ensurepip separately (package python3-venv).
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            log "python3 -m venv failed; installing python3-venv with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
            make_venv
        else
            log "python3 -m venv failed (install python3-venv, or run as root so this script can)"
            exit 1
        fi
    fi
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    log "installing $(basename "$requirements") into $venv"
    rm -f "$stamp"
    "$python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$want" >"$stamp"
else
    log "requirements unchanged; skipping install"
fi

echo "$python"
