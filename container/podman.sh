#!/usr/bin/env bash
# podman with the project's containers.conf (runc, no default rlimits); arguments pass through.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
exec podman "$@"
