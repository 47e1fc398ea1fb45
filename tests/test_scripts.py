"""The command-line scripts, run as a user runs them, against the throwaway database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from urllib.parse import urlencode

import pytest

import migrations
from database import parse_url
from harness.processes import PROJECT_ROOT, free_port
from models import User, unique_index_fields
from tokens import TOKEN


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def db_env(database_url, app):
    """The scripts' environment, on the test database emptied by the `app` fixture."""
    return {"DATABASE_URL": database_url}


@pytest.mark.parametrize(
    "script", ["scripts.migrate", "scripts.seed_users", "scripts.embedded_db", "scripts.pgtune", "scripts.serve", "scripts.tokens"]
)
def test_every_script_explains_its_options(script):
    result = run(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m " + script in result.stdout


def test_migrating_a_current_schema_changes_nothing(db_env):
    result = run("scripts.migrate", env=db_env)
    assert result.returncode == 0, result.stderr
    assert f"schema at version {migrations.latest()} (0 applied now); users: 0 rows" in result.stdout


def test_migrate_status_names_the_version(db_env):
    result = run("scripts.migrate", "--status", env=db_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"schema version {migrations.latest()}; this code needs {migrations.latest()}"


def test_seeding_adds_the_users_asked_for_and_can_run_again(db_env, users, db):
    for expected_total in (500, 1000):
        result = run("scripts.seed_users", "500", "--batch", "200", env=db_env)
        assert result.returncode == 0, result.stderr
        assert f"the table now has {expected_total}" in result.stdout
    assert users.count() == 1000
    names = [row[0] for row in db.execute_sql("SELECT username FROM users").fetchall()]
    assert len(set(names)) == 1000
    assert all(len(name) == 8 and set(name) <= set("0123456789abcdef") for name in names)


def test_seeding_if_empty_leaves_a_filled_table_alone(db_env, make_user, users):
    make_user("already-here")
    result = run("scripts.seed_users", "20", "--if-empty", env=db_env)
    assert result.returncode == 0, result.stderr
    assert users.count() == 1


@pytest.mark.parametrize("script", ["scripts.migrate", "scripts.seed_users"])
def test_an_unreachable_database_is_one_line_and_a_failure_within_the_wait(script):
    env = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x", "DB_CONNECT_TIMEOUT": "1"}
    args = [script, "--wait", "2"] + (["10"] if script == "scripts.seed_users" else [])
    started = time.monotonic()
    result = run(*args, env=env, timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: database postgresql://postgres@127.0.0.1:") and "did not answer within 2 s" in lines[0]


def test_a_bad_setting_is_one_line_naming_the_variable(db_env):
    result = run("scripts.migrate", env={**db_env, "DB_CONNECT_TIMEOUT": "soon"})
    assert result.returncode != 0
    assert result.stderr.strip() == "error: configuration: DB_CONNECT_TIMEOUT='soon' is not an integer"


def test_seed_count_must_be_positive():
    result = run("scripts.seed_users", "0")
    assert result.returncode == 2
    assert "must be at least 1" in result.stderr


def test_embedded_db_status_of_a_stopped_server(tmp_path):
    result = run("scripts.embedded_db", "status", env={"EMBEDDED_PG_DIR": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "is not running" in result.stderr


def test_a_bulk_seed_into_an_empty_table_rebuilds_the_indexes(db_env, client, db):
    result = run("scripts.seed_users", "20000", "--batch", "5000", env=db_env)
    assert result.returncode == 0, result.stderr
    assert "the table now has 20000" in result.stdout
    indexes = {row[0] for row in db.execute_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'users'").fetchall()}
    assert indexes == {"users_pkey", *unique_index_fields(User)}
    taken = db.execute_sql("SELECT username FROM users LIMIT 1").fetchone()[0]
    assert client.simulate_post("/users", json={"username": taken}).status_code == 409


@pytest.mark.parametrize("script", ["scripts.migrate", "scripts.seed_users"])
@pytest.mark.parametrize("wrong", ["database", "role"])
def test_a_misconfigured_database_is_one_line_at_once_not_after_the_wait(script, wrong, database_url):
    params = parse_url(database_url)
    missing = f"orgapi_missing_{uuid.uuid4().hex[:8]}"
    user, dbname = (params["user"], missing) if wrong == "database" else (missing, params["dbname"])
    query = urlencode({key: value for key, value in params.items() if key not in ("user", "dbname")})
    args = [script, "--wait", "30"] + (["10"] if script == "scripts.seed_users" else [])
    started = time.monotonic()
    result = run(*args, env={"DATABASE_URL": f"postgresql://{user}@/{dbname}?{query}"}, timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - started < 10, "it waited for a database that refuses it"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f'"{missing}" does not exist' in lines[0] and "refuses" in lines[0], result.stderr


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_serve_refuses_a_bad_web_concurrency_in_one_line(value):
    # gunicorn itself reads WEB_CONCURRENCY on import: a traceback for "abc", its own message for "-1".
    result = run("scripts.serve", env={"WEB_CONCURRENCY": value}, timeout=30)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orgapi: configuration error: WEB_CONCURRENCY="), result.stderr


def test_tokens_are_created_listed_and_revoked_as_the_readme_shows(db_env, client, anonymous_client):
    created = run("scripts.tokens", "create", "--name", "ci", "--scope", "users:write", env=db_env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("orgapi_") and len(token.splitlines()) == 1
    assert "shown only now" in created.stderr
    headers = {"Authorization": f"Bearer {token}"}
    assert anonymous_client.simulate_post("/users", json={"username": "from-ci"}, headers=headers).status_code == 201

    listed = run("scripts.tokens", "list", env=db_env)
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if " ci " in line]
    token_id = token.split("_")[1]
    assert line.split()[:3] == [token_id, "ci", "users:write"]
    assert TOKEN.fullmatch(token)[2] not in listed.stdout  # the secret is never shown again

    revoked = run("scripts.tokens", "revoke", token_id, env=db_env)
    assert revoked.returncode == 0 and f"revoked token {token_id}" in revoked.stdout
    again = run("scripts.tokens", "revoke", token_id, env=db_env)
    assert again.returncode != 0 and "no unrevoked token" in again.stderr
    assert "UTC" in run("scripts.tokens", "list", env=db_env).stdout.splitlines()[-1].split("users:write")[1]


def test_tokens_refuse_an_unknown_scope(db_env):
    result = run("scripts.tokens", "create", "--name", "x", "--scope", "users:admin", env=db_env)
    assert result.returncode != 0 and "invalid choice" in result.stderr
