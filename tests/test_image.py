"""The container image under podman on the host's network, on a PostgreSQL cluster this test owns (make test-image)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from harness.pgcluster import PostgresCluster
from harness.processes import PROJECT_ROOT, free_port, request

pytestmark = pytest.mark.image

IMAGE = os.environ.get("IMAGE", "localhost/orgapi:latest")
PODMAN = str(PROJECT_ROOT / "container" / "podman.sh")
CLOUD_RUN_STOP_SECONDS = 10


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)


def run_once(*command: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """A throwaway container of the image on the host's network (no health check timers: a host may lack systemd)."""
    env_args = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    return podman("run", "--rm", "--no-healthcheck", "--network", "host", *env_args, IMAGE, *command, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def image_present():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman runc debootstrap)")
    if podman("image", "exists", IMAGE).returncode != 0:
        pytest.skip(f"no image {IMAGE}: run make image")


@pytest.fixture(scope="module")
def database_url():
    with PostgresCluster(prefix="orgapi-image-pg-") as cluster:
        url = cluster.create_database("orgapi")
        migrated = run_once("python", "-m", "scripts.migrate", "--wait", "10", env={"DATABASE_URL": url})
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "schema at version" in migrated.stdout, migrated.stdout
        yield url


@pytest.fixture(scope="module")
def token(database_url):
    """An API token made by the image's own script, as an operator makes one."""
    created = run_once(
        "python", "-m", "scripts.tokens", "create", "--name", "image-test", "--scope", "users:write", env={"DATABASE_URL": database_url}
    )
    assert created.returncode == 0, created.stdout + created.stderr
    return created.stdout.strip()


class Container:
    """One detached container of the image serving on a free loopback port."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.token = ""
        self.name = f"orgapi-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.env = {"DATABASE_URL": database_url, "PORT": str(self.port), **env}

    def start(self, deadline: float = 60) -> Container:
        env_args = [arg for key, value in self.env.items() for arg in ("-e", f"{key}={value}")]
        started = podman("run", "--detach", "--name", self.name, "--network", "host", *env_args, IMAGE)
        assert started.returncode == 0, started.stderr
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                if request(self.port, "GET", "/healthz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            assert self.state()["Running"], self.logs()
            time.sleep(0.2)
        raise AssertionError(f"the container never answered /healthz:\n{self.logs()}")

    def state(self) -> dict:
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        logs = podman("logs", self.name)
        return logs.stdout + logs.stderr

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name)


@pytest.fixture(scope="module")
def container(database_url, token):
    running = Container(database_url, WEB_CONCURRENCY="2").start()
    running.token = token
    yield running
    running.remove()


def call(container: Container, method: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, _, raw = request(container.port, method, path, data, {**headers, "Authorization": f"Bearer {container.token}"})
    return status, json.loads(raw) if raw else None


def test_the_api_answers_through_the_container(container):
    assert call(container, "GET", "/readyz") == (200, {"status": "ready"})
    status, created = call(container, "POST", "/users", {"username": "in-a-box", "email": "box@example.org"})
    assert status == 201, created
    assert call(container, "GET", f"/users/{created['id']}") == (200, created)
    status, page = call(container, "GET", "/users?username_prefix=in-a-box")
    assert status == 200 and page == [created]
    status, problem = call(container, "POST", "/users", {"username": "in-a-box"})
    assert status == 409, problem
    status, _, _ = request(container.port, "POST", "/users", b'{"username": "no-token"}', {"Content-Type": "application/json"})
    assert status == 401  # writes need a token in the image too


def test_port_and_workers_come_from_the_environment(container):
    logs = container.logs()
    assert f"Listening at: http://0.0.0.0:{container.port}" in logs, logs
    assert logs.count("Booting worker") == 2, logs


def test_runs_as_a_user_without_compilers(container):
    uid = podman("exec", container.name, "id", "-u")
    assert uid.returncode == 0 and uid.stdout.strip() != "0", uid
    compilers = podman("exec", container.name, "sh", "-c", "command -v gcc cc c++ clang")
    assert compilers.returncode != 0 and compilers.stdout == "", compilers.stdout


def test_the_health_check_answers(container):
    health = podman("healthcheck", "run", container.name)
    assert health.returncode == 0, health.stdout + health.stderr


def test_sigterm_stops_it_within_cloud_runs_ten_seconds(database_url, token):
    # A client that sent its headers but holds back its body keeps a request in flight
    # for CLIENT_TIMEOUT (30 s here): only the image's graceful timeout bounds the stop.
    server = Container(database_url, WEB_CONCURRENCY="1", CLIENT_TIMEOUT="30").start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as stalled:
            head = f"POST /users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            head += "Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{"
            stalled.sendall(head.encode())
            time.sleep(0.5)
            began = time.monotonic()
            stopped = podman("stop", "--time", "30", server.name, timeout=60)
            elapsed = time.monotonic() - began
        assert stopped.returncode == 0, stopped.stderr
        state = server.state()
        logs = server.logs()
        assert elapsed < CLOUD_RUN_STOP_SECONDS, (elapsed, logs)
        assert state["ExitCode"] == 0, (state, logs)
        assert "Handling signal: term" in logs and "Shutting down: Master" in logs, logs
    finally:
        server.remove()


def test_without_database_url_it_refuses_in_one_line():
    refused = run_once(timeout=30)
    output = (refused.stdout + refused.stderr).strip()
    assert refused.returncode != 0
    assert len(output.splitlines()) == 1, output
    assert "DATABASE_URL is not set" in output, output


def test_a_bad_worker_count_is_one_line_naming_the_variable():
    refused = run_once(env={"DATABASE_URL": "postgresql://orgapi@127.0.0.1/orgapi", "WEB_CONCURRENCY": "abc"}, timeout=30)
    output = (refused.stdout + refused.stderr).strip()
    assert refused.returncode != 0
    assert output == "orgapi: configuration error: WEB_CONCURRENCY='abc' is not an integer", output
