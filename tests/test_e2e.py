"""Real gunicorn (2 workers, the project's gunicorn.conf.py) on a free loopback port."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from harness.checks import UNKNOWN_TOKEN, bearer
from harness.processes import Gunicorn, free_port, issue_token, request
from tests.conftest import replace_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(database_url, tmp_path):
    token = issue_token(database_url)
    with Gunicorn({"DATABASE_URL": database_url}, "--workers", "2", log_path=tmp_path / "gunicorn.log", token=token) as running:
        yield running


def test_serves_the_api_over_http(server, database_url):
    status, headers, body = request(
        server.port, "POST", "/users", json.dumps({"username": "e2e-user"}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 201, body
    created = json.loads(body)
    assert headers["location"] == f"/users/{created['id']}"

    status, headers, body = request(server.port, "GET", headers["location"])
    assert status == 200
    assert json.loads(body) == created
    assert headers["content-type"] == "application/json"

    status, _, body = request(server.port, "GET", "/users?limit=1000")
    assert status == 200
    assert created in json.loads(body)

    status, _, body = request(server.port, "GET", "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    assert len(server.worker_pids()) == 2


def test_errors_are_problem_json_over_http(server):
    status, headers, body = request(server.port, "GET", "/no/such/path", headers={"Accept": "text/html"})
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 404


def test_starts_and_answers_503_while_the_database_is_unreachable(tmp_path):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=1"
    with Gunicorn({"DATABASE_URL": unreachable, "DB_CONNECT_TIMEOUT": "1"}, "--workers", "2", log_path=tmp_path / "g.log") as server:
        assert request(server.port, "GET", "/healthz")[0] == 200
        for path in ("/readyz", "/users", "/users/1"):
            status, headers, body = request(server.port, "GET", path, headers=bearer(UNKNOWN_TOKEN))
            assert status == 503, (path, body)
            assert headers["retry-after"] == "1"
            assert headers["content-type"] == "application/problem+json"
        assert server.process.poll() is None


def test_command_line_workers_override_web_concurrency(database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "WEB_CONCURRENCY": "3"}
    with Gunicorn(env, "--workers", "1", log_path=tmp_path / "g.log") as server:
        assert len(server.worker_pids()) == 1


def test_a_bad_setting_stops_gunicorn_with_one_line_naming_it(tmp_path):
    server = Gunicorn({"STATEMENT_TIMEOUT_MS": "60000", "WORKER_TIMEOUT": "30"}, log_path=tmp_path / "g.log")
    with pytest.raises(RuntimeError, match="exited"):
        server.start(deadline=20)
    assert "STATEMENT_TIMEOUT_MS" in server.log()
    assert server.process.returncode != 0


def test_a_client_that_stops_sending_its_body_gets_408_after_client_timeout(database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "CLIENT_TIMEOUT": "1"}
    authorization = f"Authorization: Bearer {issue_token(database_url)}\r\n".encode()
    with Gunicorn(env, "--workers", "1", "--threads", "1", log_path=tmp_path / "g.log") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stalled:
            head = b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n" + authorization
            stalled.sendall(head + b'\r\n{"user')
            started = time.monotonic()
            answer = stalled.recv(65536).decode()
            waited = time.monotonic() - started
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "application/problem+json" in answer
        assert 0.5 < waited < 5, waited
        # The only thread is free again.
        assert request(server.port, "GET", "/healthz")[0] == 200


def test_requests_gunicorn_itself_rejects_are_problem_json(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"NOT A REQUEST LINE\r\n\r\n")
        answer = raw.recv(65536).decode()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400")
    assert "Content-Type: application/problem+json" in head
    assert json.loads(body)["status"] == 400


def test_an_unmigrated_database_is_said_once_at_start_and_answered_503(scratch_database, tmp_path):
    url = scratch_database("orgapi_e2e_empty")
    with Gunicorn({"DATABASE_URL": url}, "--workers", "2", log_path=tmp_path / "gunicorn.log") as server:
        for path in ("/readyz", "/users", "/users/1"):
            status, headers, body = request(server.port, "GET", path, headers=bearer(UNKNOWN_TOKEN))
            assert status == 503 and headers.get("retry-after") == "1", (path, headers, body)
            assert b"python -m scripts.migrate" in body
        said = [line for line in server.log().splitlines() if "python -m scripts.migrate" in line]
    assert len(said) == 1 and "[ERROR]" in said[0], server.log()


def test_a_misconfigured_database_is_said_at_start_and_named_by_readyz(database_url, tmp_path):
    missing = f"orgapi_missing_{uuid.uuid4().hex[:8]}"
    url = replace_database(database_url, missing)
    with Gunicorn({"DATABASE_URL": url}, "--workers", "2", log_path=tmp_path / "g.log") as server:
        for _ in range(10):
            for path in ("/readyz", "/users"):
                status, headers, body = request(server.port, "GET", path, headers=bearer(UNKNOWN_TOKEN))
                assert status == 503 and "retry-after" not in headers, (path, headers, body)
                assert f'database \\"{missing}\\" does not exist' in body.decode(), body
        log = server.log()
    said = [line for line in log.splitlines() if f'"{missing}" does not exist' in line]
    # Once, at ERROR, by the master at start; the workers that answered 20 requests add nothing.
    assert len(said) == 1 and "[ERROR]" in said[0] and "refuses this configuration" in said[0], log
    assert "unavailable" not in log, log
