#!/bin/bash
# Makes sure the base image debian:SUITE-slim exists: pulled when a registry
# answers, otherwise built from a Debian mirror with debootstrap and imported
# under the same tag, so compose.yaml and the Dockerfile stay the same.
set -euo pipefail

SUITE=${1:-trixie}
TAG="debian:${SUITE}-slim"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$TAG" >/dev/null 2>&1; then
    exit 0
fi
if timeout "${PULL_TIMEOUT_S:-30}" docker pull -q "$TAG" >/dev/null 2>&1; then
    echo "base image: pulled $TAG"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "base image: $TAG cannot be pulled and debootstrap is not installed" >&2
    exit 1
}
root=$(mktemp -d /tmp/sim-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base image: building $TAG with debootstrap from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >/tmp/sim-debootstrap.log 2>&1 || {
    echo "base image: debootstrap failed; the log's end:" >&2
    tail -n 20 /tmp/sim-debootstrap.log >&2
    exit 1
}
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$TAG" >/dev/null
echo "base image: imported $TAG"
