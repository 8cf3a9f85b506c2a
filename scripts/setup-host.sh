#!/bin/bash
# Prepares a Debian 12 or 13 machine for the kit, as root: the Docker engine
# and Compose v2 from Debian's archive, a running engine, the base image
# (built with debootstrap where no registry can be reached) and the Python
# environment in .venv. Safe to run again: each step is skipped when done.
set -euo pipefail

cd "$(dirname "$0")/.."
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { echo "setup: $*"; }

[ "$(id -u)" -eq 0 ] || { echo "setup: run as root (it installs packages)" >&2; exit 1; }

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >/dev/null
}

install_engine() {
    if command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then
        return
    fi
    say "installing docker.io and debootstrap"
    apt-get update -qq
    apt_install docker.io debootstrap ca-certificates
}

# Debian 12 ships only the old Python docker-compose; Debian 13's Compose v2
# is a static binary that runs on 12 as well, so take that one package from
# trixie, pinned so that nothing else comes from there.
install_compose() {
    docker compose version >/dev/null 2>&1 && return
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
        say "installing docker-compose"
        apt-get update -qq
        apt_install docker-compose
        return
    fi
    say "installing docker-compose (Compose v2) from trixie on bookworm"
    cat > /etc/apt/sources.list.d/sim-trixie.sources <<SOURCES
Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    cat > /etc/apt/preferences.d/sim-trixie <<PIN
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
    apt-get update -qq
    apt_install -t trixie docker-compose
}

start_engine() {
    docker info >/dev/null 2>&1 && return
    say "starting the Docker engine"
    if [ -d /run/systemd/system ]; then
        systemctl start docker
    else
        nohup dockerd >/var/log/dockerd.log 2>&1 &
    fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    echo "setup: the Docker engine did not start in 60 s; see /var/log/dockerd.log" >&2
    tail -n 20 /var/log/dockerd.log >&2 || true
    exit 1
}

setup_python() {
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv"
        python3 -m venv .venv 2>/dev/null || { apt_install python3-venv; python3 -m venv .venv; }
    fi
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
}

install_engine
install_compose
start_engine
bash containers/build-base-image.sh "${BASE_SUITE:-trixie}"
setup_python
say "ready: docker $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null || docker compose version)"
