# Sourced by scripts/serve, scripts/test and scripts/demo: make a fresh machine ready.
# Creates .venv, installs the pinned requirements when they changed, and (for the tests and
# the demo) installs Mosquitto with apt-get when it is missing and we are root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "Python 3.11 or newer is needed (python3 --version says: $(python3 --version 2>&1))" >&2
    return 1
}

ensure_venv() {
    local requirements="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(pick_python)"
        echo "setup: creating $VENV with $python"
        "$python" -m venv "$VENV" || {
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
                "$python" -m venv "$VENV"
            else
                echo "setup: '$python -m venv' failed; install your system's venv package" >&2
                return 1
            fi
        }
    fi
    # Reinstall only when the requirement files changed since the last install.
    local stamp="$VENV/.requirements-$(basename "$requirements").sha256"
    local wanted
    wanted="$(cat "$ROOT/requirements.txt" "$ROOT/$requirements" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        echo "setup: installing $requirements into .venv"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -r "$ROOT/$requirements"
        echo "$wanted" >"$stamp"
    fi
}

ensure_mosquitto() {
    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing mosquitto with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
        # The package may start a broker on 1883; the tests start their own TLS brokers.
        return 0
    fi
    echo "setup: Mosquitto is needed for the tests and the demo." >&2
    echo "       Install it (Debian/Ubuntu: sudo apt-get install mosquitto; macOS: brew install mosquitto)" >&2
    return 1
}
