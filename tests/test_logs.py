"""Request ids and log lines: kept or made, returned, in every line about the request; JSON
lines for the service and gunicorn when LOG_FORMAT=json; never a token in any line."""

from __future__ import annotations

import json
import logging
import sys

import pytest

import logs
from harness.checks import UNKNOWN_TOKEN, bearer
from harness.processes import Gunicorn, free_port, issue_token, request
from logs import REQUEST_ID
from tokens import TOKEN

HEX_ID = r"[0-9a-f]{32}"


@pytest.mark.parametrize("given", ["abc-123", "a" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e", "req:1/2+3=4.5_x"[:13]])
def test_a_valid_incoming_request_id_is_kept(client, given):
    result = client.simulate_get("/healthz", headers={"X-Request-ID": given})
    assert result.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["", "a" * 129, "has space", "new\nline", 'quote"d', "ünï", "<script>"])
def test_an_invalid_request_id_is_replaced_by_a_new_one(client, given):
    result = client.simulate_get("/healthz", headers={"X-Request-ID": given})
    assert REQUEST_ID.fullmatch(result.headers["x-request-id"]) and result.headers["x-request-id"] != given


def test_every_answer_carries_an_id_errors_included_and_each_a_new_one(anonymous_client):
    ids = set()
    for method, path in [("GET", "/healthz"), ("GET", "/nowhere"), ("POST", "/users"), ("PUT", "/users")]:
        result = anonymous_client.simulate_request(method, path)
        ids.add(result.headers["x-request-id"])
    assert len(ids) == 4


def log_lines(server: Gunicorn) -> list[dict]:
    lines = [line for line in server.log().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


@pytest.mark.e2e
def test_json_logs_carry_request_ids_and_access_fields_and_never_a_token(database_url, tmp_path):
    token = issue_token(database_url)
    env = {"DATABASE_URL": database_url, "LOG_FORMAT": "json", "ACCESS_LOG": "true", "LOG_LEVEL": "debug"}
    sent = {
        "create": ("POST", "/users", b'{"username": "logged"}', {"Content-Type": "application/json", **bearer(token)}),
        "read": ("GET", "/users?limit=1", None, bearer(token)),
        "forged": ("GET", "/users/1", None, bearer(UNKNOWN_TOKEN)),
        "malformed": ("DELETE", "/users/1", None, {"Authorization": "Bearer not-a-token-at-all"}),
        "none": ("GET", "/nowhere", None, {}),
    }
    answers = {}
    with Gunicorn(env, "--workers", "2", log_path=tmp_path / "gunicorn.log") as server:
        for label, (method, path, body, headers) in sent.items():
            status, response_headers, _ = request(server.port, method, path, body, {"X-Request-ID": f"test-{label}", **headers})
            answers[label] = status
            assert response_headers["x-request-id"] == f"test-{label}"
        status, response_headers, _ = request(server.port, "GET", "/healthz", headers={"X-Request-ID": "bad id"})
        made_up = response_headers["x-request-id"]
    assert answers == {"create": 201, "read": 200, "forged": 401, "malformed": 401, "none": 404}

    lines = log_lines(server)  # every line, gunicorn's own included, is one JSON object
    assert {"gunicorn.error", "orgapi.access"} <= {line["logger"] for line in lines}
    access = {line["request_id"]: line for line in lines if line["logger"] == "orgapi.access"}
    assert access["test-create"] | {"duration_ms": 0} == {
        **access["test-create"],
        "method": "POST",
        "route": "/users",
        "status": 201,
        "duration_ms": 0,
        "level": "info",
    }
    assert access["test-create"]["bytes"] > 0 and access["test-create"]["duration_ms"] > 0
    assert (access["test-forged"]["route"], access["test-forged"]["status"]) == ("/users/{user_id:user_id}", 401)
    assert (access["test-none"]["route"], access["test-none"]["status"]) == ("unmatched", 404)
    assert made_up in access and REQUEST_ID.fullmatch(made_up)

    text = server.log()
    for secret in (token, TOKEN.fullmatch(token)[2], UNKNOWN_TOKEN, "not-a-token-at-all"):
        assert secret not in text, "a token reached the log"


@pytest.mark.e2e
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_error_logged_during_a_request_carries_its_id(tmp_path, log_format):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=1"
    env = {"DATABASE_URL": unreachable, "DB_CONNECT_TIMEOUT": "1", "LOG_FORMAT": log_format}
    with Gunicorn(env, "--workers", "1", log_path=tmp_path / "gunicorn.log") as server:
        status, headers, _ = request(server.port, "GET", "/readyz", headers={"X-Request-ID": "dead-db-1"})
        assert (status, headers["x-request-id"]) == (503, "dead-db-1")
    if log_format == "json":
        (warning,) = [line for line in log_lines(server) if "database unavailable during GET /readyz" in line["message"]]
        assert (warning["request_id"], warning["level"], warning["logger"]) == ("dead-db-1", "warning", "orgapi")
    else:
        (warning,) = [line for line in server.log().splitlines() if "database unavailable during GET /readyz" in line]
        assert "[WARNING]" in warning and warning.endswith("request_id=dead-db-1")


def test_a_traceback_stays_inside_its_one_json_line_with_the_request_id():
    logs.set_request_id("req-with-error")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = logging.getLogger("orgapi").makeRecord("orgapi", logging.ERROR, __file__, 1, "unhandled error", (), sys.exc_info())
        logs.RequestIdFilter().filter(record)  # as a handler does while the request is handled
    finally:
        logs.set_request_id(None)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["request_id"], entry["level"], entry["message"]) == ("req-with-error", "error", "unhandled error")
    assert "RuntimeError: boom" in entry["exception"] and "second line" in entry["exception"]
