# shellcheck shell=bash
# Shared by scripts/setup and scripts/test: install what is missing, never what is there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
APT_UPDATED=""

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; exit 1; fi
}

apt_install() {
    command -v apt-get >/dev/null || { say "please install: $*"; exit 1; }
    if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_python() {
    PYTHON="${PYTHON:-python3}"
    if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        apt_install python3
    fi
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
    command -v git >/dev/null || apt_install git
}

ensure_venv() {  # $1: pip extras, e.g. "[test]"
    ensure_python
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed$1"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        say "installing vmhost$1 into $VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT$1"
        touch "$stamp"
    fi
    # An editable install leaves vmhost uncompiled, and where PYTHONDONTWRITEBYTECODE is set every
    # CLI run would compile its modules again (~20 ms); compileall writes only what changed.
    "$VENV/bin/python" -m compileall -q "$ROOT/vmhost" >/dev/null
}

node_runs_redocly() {  # Redocly CLI 2 wants Node.js 20.19+ or 22.12+
    command -v npm >/dev/null && node -e '
        const [major, minor] = process.versions.node.split(".").map(Number);
        process.exit(major >= 23 || (major === 22 && minor >= 12) || (major === 20 && minor >= 19) ? 0 : 1)' 2>/dev/null
}

ensure_redocly() {  # the version in tools/package-lock.json, into tools/node_modules, only where Node.js already is
    local installed="$ROOT/tools/node_modules/.package-lock.json"
    if [ -f "$installed" ] && [ "$installed" -nt "$ROOT/tools/package-lock.json" ]; then return 0; fi
    if ! node_runs_redocly; then
        say "no Node.js 20.19+ with npm: the OpenAPI test runs without Redocly CLI"
        return 0
    fi
    say "installing Redocly CLI into tools/"
    npm ci --prefix "$ROOT/tools" --no-audit --no-fund --loglevel=error || say "could not install Redocly CLI"
}

docker_answers() { docker info >/dev/null 2>&1; }

ensure_docker() {
    docker_answers && return 0
    if ! command -v dockerd >/dev/null; then
        say "installing Debian's docker.io"
        apt_install docker.io
    fi
    docker_answers && return 0
    say "starting dockerd"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        as_root systemctl start docker || true
    fi
    if ! docker_answers; then
        as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    for _ in $(seq 1 60); do docker_answers && return 0; sleep 1; done
    say "dockerd did not come up; see /var/log/dockerd.log"
    exit 1
}
