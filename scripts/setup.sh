# Sourced by the scripts in this folder: make a fresh machine ready.
# Creates .venv, installs the pinned requirements when they changed, and (for the tests and
# the demo) installs Mosquitto and Chromium with apt-get when they are missing and we are root.
# Every message goes to stderr: `TOKEN=$(scripts/flask machines add … --token-only)` must
# capture the token alone, even on the run that creates .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() {
    echo "setup: $*" >&2
}

# True when the script was asked for its usage: -h or --help as its first argument. Checked
# before anything is set up, so asking for help never creates .venv or starts anything.
wants_help() {
    [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]
}

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

# The hash a stamp records for a requirements file: the file and the runtime set it includes
# (requirements-dev.txt starts with `-r requirements.txt`), so a change to either reinstalls.
requirements_hash() {
    cat "$ROOT/requirements.txt" "$ROOT/$1" | sha256sum | cut -d' ' -f1
}

stamp_of() {
    echo "$VENV/.requirements-$1.sha256"
}

apt_updated=""
apt_install() {
    local log
    log="$(mktemp -t arcade-apt.XXXXXX)"
    if [ -z "$apt_updated" ]; then
        say "apt-get update"
        apt-get update -qq >"$log" 2>&1 || {
            say "apt-get update failed:"
            tail -n 20 "$log" >&2
            return 1
        }
        apt_updated=yes
    fi
    say "apt-get install $* (one line per package set up)"
    # One line per package shows it is alive; apt's own output, pages long, goes to the log.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" 2>&1 | tee "$log" |
        { grep --line-buffered '^Setting up' || true; } | sed -u 's/^/setup:   /' >&2; then
        say "apt-get install $* failed; the end of its output ($log):"
        tail -n 20 "$log" >&2
        return 1
    fi
    rm -f "$log"
}

ensure_venv() {
    local requirements="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(pick_python)"
        say "creating $VENV with $python"
        "$python" -m venv "$VENV" || {
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                apt_install python3-venv
                "$python" -m venv "$VENV"
            else
                say "'$python -m venv' failed; install your system's venv package"
                return 1
            fi
        }
    fi
    # Reinstall only when the requirement files changed since the last install.
    local wanted
    wanted="$(requirements_hash "$requirements")"
    if [ -f "$(stamp_of "$requirements")" ] &&
        [ "$(cat "$(stamp_of "$requirements")")" = "$wanted" ]; then
        return 0
    fi
    say "installing $requirements into .venv (takes a few minutes the first time)…"
    local log="$VENV/setup-pip.log"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip \
        >"$log" 2>&1 || {
        say "pip could not upgrade itself; the end of its output ($log):"
        tail -n 30 "$log" >&2
        return 1
    }
    # One line per package ("Collecting flask==3.1.3"), the rest kept in the log for when it
    # fails.
    if ! "$VENV/bin/python" -m pip install --progress-bar off --disable-pip-version-check \
        -r "$ROOT/$requirements" 2>&1 | tee -a "$log" |
        { grep --line-buffered -E '^(Collecting|Processing|Successfully installed)' || true; } |
        sed -u 's/^/setup:   /' >&2; then
        say "pip failed; the end of its output ($log):"
        tail -n 30 "$log" >&2
        return 1
    fi
    echo "$wanted" >"$(stamp_of "$requirements")"
    # The dev set includes the runtime set, pinned the same: scripts/serve after scripts/test
    # has nothing left to install.
    if [ "$requirements" != requirements.txt ] &&
        grep -qE '^[[:space:]]*-r[[:space:]]*requirements\.txt[[:space:]]*$' "$ROOT/$requirements"; then
        requirements_hash requirements.txt >"$(stamp_of requirements.txt)"
    fi
    say "installed $requirements"
}

ensure_mosquitto() {
    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing mosquitto with apt-get"
        apt_install mosquitto
        # The package may start a broker on 1883; the tests start their own TLS brokers.
        return 0
    fi
    say "Mosquitto is needed for the tests and the demo."
    say "  Install it (Debian/Ubuntu: sudo apt-get install mosquitto; macOS: brew install mosquitto)"
    return 1
}

# The browser tests drive Debian's Chromium through its own chromedriver at these paths:
# nothing is downloaded at test time (Selenium Manager would fetch a browser of its own).
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

ensure_chromium() {
    if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing chromium and chromium-driver with apt-get for the browser tests" \
            "(a minute or two the first time)…"
        apt_install chromium chromium-driver
        if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
            return 0
        fi
        say "apt-get did not provide $CHROMIUM and $CHROMEDRIVER"
        return 1
    fi
    say "Chromium and its driver are needed for the browser tests, at $CHROMIUM and $CHROMEDRIVER."
    say "  Install them (Debian: sudo apt-get install chromium chromium-driver)"
    return 1
}
