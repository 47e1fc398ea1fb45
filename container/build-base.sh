#!/usr/bin/env bash
# The base image made from Debian's packages (for hosts that reach no image registry):
# debootstrap a minimal bookworm with python3 and venv, then `podman import` it.
# Skipped when the image already exists; REBUILD=1 makes it again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${1:-orgapi-base:bookworm}"
podman="$here/podman.sh"

if [[ -z "${REBUILD:-}" ]] && "$podman" image exists "$name"; then
  echo "base image $name exists (REBUILD=1 to make it again)"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install podman runc debootstrap)" >&2; exit 1; }
done

rootfs="$(mktemp -d -t orgapi-rootfs-XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
# minbase: dpkg, apt and the required packages only; python3-venv brings ensurepip (pip's wheel).
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" >"$rootfs.log" 2>&1 ||
  { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# Nothing in the image installs Debian packages: drop apt's lists, caches and the docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
tar --numeric-owner -C "$rootfs" -c . |
  "$podman" import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$name" >/dev/null
echo "base image $name: $("$podman" image inspect --format '{{.Size}}' "$name") bytes"
