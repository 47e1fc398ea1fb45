"""Routing and error shape: 404, 405 with Allow, problem+json whatever the Accept header, 500 without details."""

from __future__ import annotations

import peewee
import pytest
from falcon import testing

import migrations
from app import create_app
from database import Database
from harness.checks import (
    JSON,
    assert_problem,
    bearer,
)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/users/1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("POST", "/users/1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("DELETE", "/users", {"GET", "HEAD", "POST"}),
        ("PATCH", "/users", {"GET", "HEAD", "POST"}),
        ("PUT", "/users", {"GET", "HEAD", "POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
        ("DELETE", "/readyz", {"GET", "HEAD"}),
        ("POST", "/openapi.json", {"GET"}),
    ],
)
def test_unsupported_methods_are_405_with_allow(client, make_user, method, path, allowed, users):
    make_user("amy")
    result = client.simulate_request(method, path, json={"username": "bob"})
    assert_problem(result, 405)
    allow = {name.strip() for name in result.headers["allow"].split(",")}
    assert allowed <= allow and method not in allow
    assert users.count() == 1


@pytest.mark.parametrize("path", ["/", "/nope", "/users/1/friends", "/user", "/users/abc", "/healthz/x"])
def test_unknown_paths_are_404(client, path):
    assert_problem(client.simulate_get(path), 404)


ERROR_REQUESTS = [
    ("GET", "/nope", {}, None, 404),
    ("GET", "/users/999", {}, None, 404),
    ("PUT", "/users/1", {}, None, 405),
    ("GET", "/users?limit=0", {}, None, 400),
    ("POST", "/users", {"Content-Type": JSON}, b"{", 400),
    ("POST", "/users", {"Content-Type": "text/plain"}, b"{}", 415),
    ("POST", "/users", {"Content-Type": JSON}, b"{}", 422),
    ("POST", "/users", {"Content-Type": JSON}, b'{"username": "amy"}', 409),
    ("PATCH", "/users/1", {"Content-Type": JSON, "If-Match": '"9"'}, b'{"full_name": "x"}', 412),
]


@pytest.mark.parametrize("accept", [None, "text/html", "application/xml", "*/*", "application/json", "text/plain;q=0.5, image/png"])
@pytest.mark.parametrize(("method", "path", "headers", "body", "status"), ERROR_REQUESTS, ids=[f"{r[0]}-{r[4]}" for r in ERROR_REQUESTS])
def test_errors_are_problem_json_whatever_the_accept_header(client, make_user, accept, method, path, headers, body, status):
    make_user("amy")
    if accept is not None:
        headers = {**headers, "Accept": accept}
    path, _, query = path.partition("?")
    assert_problem(client.simulate_request(method, path, query_string=query, headers=headers, body=body), status)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError('Traceback: SELECT password FROM users -- psycopg2 File "models.py"'),
        peewee.ProgrammingError('syntax error at or near "SELECT" DETAIL: constraint users_pkey'),
    ],
    ids=["RuntimeError", "ProgrammingError"],
)
def test_unexpected_errors_are_500_problems_without_details(settings, token, caplog, error):
    class FailingOnce(Database):
        """The real database, but its next prepared statement raises `error`."""

        failures = 1

        def run_prepared(self, name, params, **options):
            if self.failures:
                self.failures -= 1
                raise error
            return super().run_prepared(name, params, **options)

    db = FailingOnce(settings.database_url, schema_version=migrations.latest())
    client = testing.TestClient(create_app(settings, db), headers=bearer(token))
    body = assert_problem(client.simulate_get("/users", headers={"Accept": "text/html"}), 500)
    assert "logged" in body["detail"]
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records), "not logged"
    assert client.simulate_get("/users").status_code == 200
    db.close()


def test_an_unknown_unique_index_is_a_logged_error_not_a_guess(client, db, caplog):
    db.execute_sql("CREATE UNIQUE INDEX users_full_name_probe ON users (full_name)")
    try:
        assert client.simulate_post("/users", json={"username": "amy", "full_name": "Same"}).status_code == 201
        assert_problem(client.simulate_post("/users", json={"username": "bob", "full_name": "Same"}), 500)
    finally:
        db.execute_sql("DROP INDEX users_full_name_probe")
    assert any("users_full_name_probe" in str(record.exc_info[1]) for record in caplog.records if record.exc_info)
