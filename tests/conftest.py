"""Fixtures: a throwaway PostgreSQL database per server version, the real app on it.

Every test session runs against the embedded PostgreSQL (a fresh cluster in a temporary
folder) and, when TEST_DATABASE_URL is set, against that server too. Each server gets a
database created for this session, migrated by the same code the scripts run, and dropped
after it; no other database is touched. Each test builds its own app on its own
`Database` object.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from falcon import testing

import embedded
import migrations
from app import create_app, service_database
from database import Database, admin_connection, parse_url
from harness.checks import UNKNOWN_TOKEN, bearer
from harness.processes import free_port
from queries import UserStore
from settings import load_settings
from tokens import SCOPES, TokenStore

SERVERS = ["embedded"] + (["external"] if os.environ.get("TEST_DATABASE_URL") else [])


def replace_database(url: str, database: str) -> str:
    """The same server, another database, as a postgresql:// URL (what DATABASE_URL takes)."""
    params = parse_url(url)
    user = quote(params.pop("user", "postgres"), safe="")
    password = params.pop("password", None)
    params.pop("dbname", None)
    auth = f"{user}:{quote(password, safe='')}" if password else user
    return f"postgresql://{auth}@/{database}?{urlencode(params)}"


@pytest.fixture(scope="session")
def embedded_server():
    """A fresh embedded cluster for this test session, stopped and deleted afterwards."""
    base = Path(tempfile.mkdtemp(prefix="orgapi-test-pg-"))
    base.chmod(0o755)  # the server may run as its own system user
    data_dir = base / "data"
    try:
        url, _ = embedded.start(data_dir, database="postgres")
        yield data_dir, url
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", params=SERVERS)
def server_url(request):
    """An administrative URL of each server the tests run on."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded_server")[1]
    return os.environ["TEST_DATABASE_URL"]


@pytest.fixture(scope="session")
def scratch_database(server_url):
    """A function that creates an empty throwaway database on the server; each is dropped at the end."""
    names: list[str] = []

    def create(prefix: str = "orgapi_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with admin_connection(server_url) as admin, admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return replace_database(server_url, name)

    yield create
    with admin_connection(server_url) as admin, admin.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(scratch_database):
    """URL of this session's test database, with the schema the migrations make."""
    url = scratch_database()
    db = Database(url)
    migrations.apply(db, report=lambda line: None)
    db.close()
    return url


@pytest.fixture
def settings(database_url):
    return replace(load_settings({}), database_url=database_url)


@pytest.fixture
def db(settings):
    """The database object the test's app runs on (the service's own lifecycle), emptied first."""
    database = service_database(settings)
    database.execute_sql("TRUNCATE users, api_tokens RESTART IDENTITY")
    yield database
    database.close()
    database.close_pool()


@pytest.fixture
def app(settings, db):
    return create_app(settings, db)


@pytest.fixture
def token(db):
    """An API token with every scope, made as `python -m scripts.tokens create` makes one."""
    return TokenStore(db).create("tests", list(SCOPES))[1]


@pytest.fixture
def client(app, token):
    """The app, called with a token that may do everything."""
    return testing.TestClient(app, headers=bearer(token))


@pytest.fixture
def anonymous_client(app):
    """The app, called without a token."""
    return testing.TestClient(app)


@pytest.fixture
def users(db):
    """The app's own queries, for checking what the database holds."""
    return UserStore(db)


@pytest.fixture
def make_user(client):
    def make(username: str, **fields):
        result = client.simulate_post("/users", json={"username": username, **fields})
        assert result.status_code == 201, result.text
        return result.json

    return make


@pytest.fixture
def small_client(db, settings, token):
    """The app with tiny limits: 300-byte bodies, pages of 3 (at most 5)."""
    return testing.TestClient(create_app(replace(settings, max_body_bytes=300, page_default=3, page_max=5), db), headers=bearer(token))


@pytest.fixture
def dead_client(settings):
    """The app on a port nobody listens on: every database call fails to connect."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=1"
    # A well-formed token: checking it needs the database too, so it meets the same failure.
    yield testing.TestClient(create_app(replace(settings, database_url=url, connect_timeout=1)), headers=bearer(UNKNOWN_TOKEN))
