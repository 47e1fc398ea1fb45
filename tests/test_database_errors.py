"""How database errors are told apart: a misconfiguration that waiting cannot heal, one
statement the server gave up on (its connection kept), and a connection that died (a read
runs again on a new one, a write does not).

Real PostgreSQL throughout; the errors are the server's own (a missing database, a role
that does not exist, a lock held past the statement timeout, a backend terminated).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from urllib.parse import urlencode

import pytest
from falcon import testing

import migrations
from app import create_app
from database import Database, Misconfigured, StatementFailed, admin_connection, parse_url
from harness.checks import UNKNOWN_TOKEN, assert_problem, bearer


def _url_with(database_url: str, **changes: str) -> str:
    params = {**parse_url(database_url), **changes}
    return f"postgresql://{params.pop('user')}@/{params.pop('dbname')}?{urlencode(params)}"


@pytest.mark.parametrize("wrong", ["dbname", "user"])
def test_a_misconfiguration_is_named_logged_once_and_not_called_an_outage(settings, database_url, caplog, wrong):
    missing = f"orgapi_missing_{uuid.uuid4().hex[:8]}"
    url = _url_with(database_url, **{wrong: missing})
    # A well-formed token: checking it meets the misconfiguration first, as the query would.
    client = testing.TestClient(create_app(replace(settings, database_url=url)), headers=bearer(UNKNOWN_TOKEN))
    with caplog.at_level(logging.INFO, logger="orgapi"):
        for path in ("/readyz", "/users", "/users/1", "/readyz"):
            result = client.simulate_get(path)
            body = assert_problem(result, 503)
            assert f'"{missing}" does not exist' in body["detail"], body
            assert "unavailable" not in body["detail"] and "retry" not in body["detail"].lower()
            assert "retry-after" not in result.headers  # waiting will not help
    said = [record for record in caplog.records if missing in record.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR, [record.getMessage() for record in said]


def test_a_statement_timeout_is_its_own_503_and_keeps_the_connection(settings, db, make_user, database_url, token):
    make_user("amy")
    client = testing.TestClient(create_app(replace(settings, statement_timeout_ms=300)), headers=bearer(token))
    assert client.simulate_get("/users").status_code == 200
    with admin_connection(database_url) as locker, locker.cursor() as cursor:
        cursor.execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        backends_before = _app_backends(cursor)
        result = client.simulate_get("/users")
        backends_after = _app_backends(cursor)
        cursor.execute("ROLLBACK")
    body = assert_problem(result, 503)
    assert "time limit" in body["detail"] and result.headers["retry-after"] == "1", body
    assert backends_after == backends_before, "the connection was thrown away"
    assert client.simulate_get("/users").status_code == 200


def _app_backends(cursor) -> set[int]:
    cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'orgapi' AND datname = current_database()")
    return {pid for (pid,) in cursor.fetchall()}


@pytest.mark.parametrize(("sqlstate", "reason"), [("57014", "timeout"), ("40P01", "deadlock"), ("40001", "serialization")])
def test_statement_failures_keep_the_connection(database_url, sqlstate, reason):
    db = Database(database_url)
    pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with pytest.raises(StatementFailed) as failed:
        db.execute_sql(f"DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{sqlstate}'; END $$")
    assert failed.value.reason == reason
    assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == pid
    db.close()


def test_a_read_whose_connection_dies_is_run_again_a_write_is_not(client, make_user, database_url):
    make_user("amy")  # this thread's connection is open: the requests below are sent on it
    results = {}
    for name, method, document in (("read", "GET", None), ("write", "PATCH", {"full_name": "x"})):
        with admin_connection(database_url) as locker, locker.cursor() as cursor:
            cursor.execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")

            def kill_the_waiting_request() -> None:
                # The statement was sent and waits on the lock: its connection dies mid-way.
                cursor.execute("SELECT pg_terminate_backend(%s)", (_wait_for_waiting_backend(cursor),))
                cursor.execute("ROLLBACK")

            killer = threading.Thread(target=kill_the_waiting_request)
            killer.start()
            results[name] = client.simulate_request(method, "/users/1", json=document)
            killer.join(10)
    assert results["read"].status_code == 200, results["read"].text
    assert_problem(results["write"], 503)
    assert client.simulate_get("/users/1").json["full_name"] is None


def _wait_for_waiting_backend(cursor) -> int:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE application_name = 'orgapi' AND datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = cursor.fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError("no request waited on the lock")


def test_misconfigured_is_what_a_script_sees_at_once(database_url):
    db = Database(_url_with(database_url, dbname=f"orgapi_missing_{uuid.uuid4().hex[:8]}"), schema_version=migrations.latest())
    with pytest.raises(Misconfigured, match="does not exist"):
        db.ping()
