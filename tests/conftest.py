"""Fixtures: a throwaway PostgreSQL database per server version, the real app on it.

Every test session runs against the embedded PostgreSQL (a fresh cluster in a temporary
folder) and, when TEST_DATABASE_URL is set, against that server too. Each server gets a
database created for this session and dropped after it; no other database is touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg2
import pytest
from falcon import testing

import embedded
import models
from app import create_app
from settings import load_settings

SERVERS = ["embedded"] + (["external"] if os.environ.get("TEST_DATABASE_URL") else [])


def _replace_database(url: str, database: str) -> str:
    """The same server, another database, as a postgresql:// URL (what DATABASE_URL takes)."""
    params = psycopg2.extensions.parse_dsn(url)
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
        url = embedded.start(data_dir, database="postgres")
        yield data_dir, url
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", params=SERVERS)
def database_url(request):
    """URL of a throwaway database with the tables made by the scripts' own code."""
    if request.param == "embedded":
        _, admin_url = request.getfixturevalue("embedded_server")
    else:
        admin_url = os.environ["TEST_DATABASE_URL"]
    name = f"orgapi_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_url, connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        url = _replace_database(admin_url, name)
        models.bind_database(url, statement_timeout_ms=5000, connect_timeout=5)
        models.create_schema()
        models.db.close()
        yield url
    finally:
        models.db.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def settings(database_url):
    return replace(load_settings({}), database_url=database_url)


@pytest.fixture
def app(settings):
    models.db.close()
    application = create_app(settings)
    models.db.execute_sql("TRUNCATE users RESTART IDENTITY")
    yield application
    models.db.close()


@pytest.fixture
def client(app):
    return testing.TestClient(app)


@pytest.fixture
def make_user(client):
    def make(username: str, **fields):
        result = client.simulate_post("/users", json={"username": username, **fields})
        assert result.status_code == 201, result.text
        return result.json

    return make
