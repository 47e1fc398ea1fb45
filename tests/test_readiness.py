"""Liveness, readiness and the database being down or dropping a connection."""

from __future__ import annotations

from dataclasses import replace

import pytest
from falcon import testing

import migrations
from app import create_app
from database import Database, admin_connection
from harness.checks import (
    JSON,
    assert_problem,
    assert_user,
    bearer,
    post_json,
)
from tokens import WRITE, TokenStore


def test_healthz_and_readyz(client):
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        result = client.simulate_get(path)
        assert result.status_code == 200
        assert result.headers["content-type"] == JSON
        assert result.json == {"status": status}
        head = client.simulate_head(path)
        assert (head.status_code, head.content) == (200, b"")


UNAVAILABLE_REQUESTS = [
    ("GET", "/readyz", None),
    ("GET", "/users", None),
    ("GET", "/users/1", None),
    ("POST", "/users", {"username": "amy"}),
    ("PATCH", "/users/1", {"full_name": "x"}),
    ("DELETE", "/users/1", None),
]


@pytest.mark.parametrize(("method", "path", "document"), UNAVAILABLE_REQUESTS)
def test_database_down_is_503_with_retry_after(dead_client, method, path, document):
    result = dead_client.simulate_request(method, path, json=document)
    assert_problem(result, 503)
    assert int(result.headers["retry-after"]) >= 1
    head = dead_client.simulate_head("/readyz")
    assert_problem(head, 503, head=True)
    assert head.headers["retry-after"] == result.headers["retry-after"]


def test_liveness_and_the_document_need_no_database(dead_client):
    result = dead_client.simulate_get("/healthz")
    assert (result.status_code, result.json) == (200, {"status": "ok"})
    assert dead_client.simulate_get("/openapi.json").status_code == 200
    # A write's token is checked before its body, and checking it needs the database: 503, not a 401 the client would act on.
    assert_problem(dead_client.simulate_post("/users", json={"username": "A"}), 503)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PATCH", "DELETE"])
def test_a_connection_the_server_closed_while_idle_costs_no_request(client, make_user, database_url, db, method):
    # What a database restart leaves in every idle thread: a connection the server has closed.
    make_user("amy")
    pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with admin_connection(database_url) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        assert cursor.fetchone() == (True,)
    path = "/users" if method in ("GET", "HEAD", "POST") else "/users/1"
    result = client.simulate_request(method, path, json={"username": "bob"} if method in ("POST", "PATCH") else None)
    assert result.status_code in (200, 201, 204), result.text
    assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid


def test_apps_on_two_databases_do_not_share_connections(client, settings, scratch_database):
    other_url = scratch_database()
    migrations.apply(Database(other_url), report=lambda line: None)
    other_token = TokenStore(Database(other_url)).create("test", [WRITE])[1]
    other = testing.TestClient(create_app(replace(settings, database_url=other_url)), headers=bearer(other_token))
    assert_user(post_json(client, {"username": "amy", "full_name": "😀"}), 201)
    assert other.simulate_get("/users").json == []
    assert_user(post_json(other, {"username": "bob"}), 201)
    assert [user["username"] for user in client.simulate_get("/users").json] == ["amy"]
