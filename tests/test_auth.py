"""Who may call what: API tokens, scopes, READ_ACCESS, revocation, and the answers to each refusal."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import pytest
from falcon import testing

from app import create_app
from harness.checks import UNKNOWN_TOKEN, assert_problem, bearer
from tokens import METRICS, READ, TOKEN, WRITE, TokenStore

BODY = {"username": "amy"}


def app_with(settings, db, **operations):
    return create_app(replace(settings, operations=replace(settings.operations, **operations)), db)


def refusal(result) -> tuple:
    """What a client can observe of a 401: everything but the request id."""
    return result.status_code, result.headers["www-authenticate"], result.headers["content-type"], result.text


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/users"), ("PATCH", "/users/1"), ("DELETE", "/users/1"), ("GET", "/users"), ("GET", "/users/1")]
)
def test_without_a_token_data_routes_are_401_with_a_bearer_challenge(anonymous_client, method, path, users):
    result = anonymous_client.simulate_request(method, path, json=BODY if method != "GET" else None)
    body = assert_problem(result, 401)
    assert result.headers["www-authenticate"] == 'Bearer realm="orgapi"'  # RFC 6750 3.1: no error code without credentials
    assert "Authorization: Bearer" in body["detail"]
    assert users.count() == 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_health_and_the_document_need_no_token(anonymous_client, path):
    assert anonymous_client.simulate_get(path).status_code == 200


def test_unknown_malformed_and_wrong_secret_tokens_get_the_same_answer(anonymous_client, db):
    real = TokenStore(db).create("real", [WRITE])[1]
    wrong_secret = real[: -len("AAAA")] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    answers = set()
    for token in (UNKNOWN_TOKEN, wrong_secret, "garbage", "orgapi_1_short", "orgapi_x_" + "A" * 43, "a.b.c", "eyJ0.eyJ0.sig", "A" * 4000):
        result = anonymous_client.simulate_post("/users", json=BODY, headers=bearer(token))
        assert_problem(result, 401)
        answers.add(refusal(result))
    assert len(answers) == 1, answers
    (status, challenge, _, _) = answers.pop()
    assert challenge == 'Bearer realm="orgapi", error="invalid_token"'


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc", "bearer  x y"])
def test_an_authorization_header_without_a_bearer_token_is_a_plain_challenge(anonymous_client, header):
    result = anonymous_client.simulate_post("/users", json=BODY, headers={"Authorization": header})
    assert_problem(result, 401)
    assert result.headers["www-authenticate"] == 'Bearer realm="orgapi"'


def test_the_bearer_scheme_is_case_insensitive(anonymous_client, token):
    assert anonymous_client.simulate_post("/users", json=BODY, headers={"Authorization": f"bearer {token}"}).status_code == 201


@pytest.mark.parametrize(
    ("scopes", "method", "path", "needed"),
    [
        ([READ], "POST", "/users", WRITE),
        ([READ], "DELETE", "/users/1", WRITE),
        ([METRICS], "GET", "/users", READ),
        ([READ, WRITE], "GET", "/metrics", METRICS),
    ],
)
def test_a_token_without_the_scope_is_403_insufficient_scope(anonymous_client, db, scopes, method, path, needed):
    token = TokenStore(db).create("narrow", scopes)[1]
    result = anonymous_client.simulate_request(method, path, json=BODY if method == "POST" else None, headers=bearer(token))
    body = assert_problem(result, 403)
    assert result.headers["www-authenticate"] == f'Bearer realm="orgapi", error="insufficient_scope", scope="{needed}"'
    assert needed in body["detail"]


def test_users_write_includes_reading(anonymous_client, db):
    token = TokenStore(db).create("writer", [WRITE])[1]
    created = anonymous_client.simulate_post("/users", json=BODY, headers=bearer(token))
    assert created.status_code == 201
    assert anonymous_client.simulate_get(created.headers["location"], headers=bearer(token)).status_code == 200


def test_public_reads_still_guard_writes(settings, db, token):
    public = testing.TestClient(app_with(settings, db, read_access="public"))
    assert public.simulate_get("/users").status_code == 200
    assert public.simulate_get("/users/1").status_code == 404
    assert_problem(public.simulate_post("/users", json=BODY), 401)
    assert public.simulate_post("/users", json=BODY, headers=bearer(token)).status_code == 201
    assert_problem(public.simulate_get("/metrics"), 401)  # metrics are never public


def test_only_a_hash_of_the_secret_is_stored(db):
    token_id, token = TokenStore(db).create("ci", [WRITE])
    secret = TOKEN.fullmatch(token)[2]
    assert len(secret) == 43  # 256 bits in URL-safe base64
    row = db.execute_sql("SELECT * FROM api_tokens WHERE id = %s", (token_id,)).fetchone()
    assert bytes(row[3]) == hashlib.sha256(secret.encode()).digest()
    assert not any(secret in str(value) or token in str(value) for value in row)


def test_a_token_records_its_last_use(client, db, token):
    assert TokenStore(db).list()[0].last_used_at is None
    assert client.simulate_get("/users").status_code == 200
    (record,) = TokenStore(db).list()
    assert record.last_used_at is not None and record.last_used_at >= record.created_at


@pytest.mark.parametrize("cache_seconds", [0, 1, 2])
def test_a_revoked_token_stops_working_within_the_cache_lifetime(settings, db, cache_seconds):
    store = TokenStore(db)
    token_id, token = store.create("soon revoked", [READ])
    client = testing.TestClient(app_with(settings, db, token_cache_seconds=cache_seconds), headers=bearer(token))
    assert client.simulate_get("/users").status_code == 200  # verified, and now cached
    assert store.revoke(token_id)
    revoked_at = time.monotonic()
    while client.simulate_get("/users").status_code == 200:
        assert time.monotonic() - revoked_at <= cache_seconds + 0.25, "still accepted past the bound"
        time.sleep(0.02)
    waited = time.monotonic() - revoked_at
    assert waited <= cache_seconds + 0.25
    assert_problem(client.simulate_get("/users"), 401)


def test_a_cached_token_is_not_checked_against_the_database_again(settings, db):
    token = TokenStore(db).create("hot", [READ])[1]
    client = testing.TestClient(app_with(settings, db, token_cache_seconds=60), headers=bearer(token))
    assert client.simulate_get("/users").status_code == 200
    db.execute_sql("DELETE FROM api_tokens")  # even gone, it is served from the cache for its lifetime
    assert client.simulate_get("/users").status_code == 200
