"""Fixtures for fault tests: a PostgreSQL cluster they own, a fresh database, real gunicorn.

The cluster (tests/pgcluster.py) runs in a temporary folder on a free loopback port, so
tests stop, restart and kill it freely; each test gets its own database in it, made by
the app's own code. Measurements a test records with `measure(...)` are printed at the
end of the run with `-v` (or FAULT_REPORT=1).
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

import migrations
from database import Database
from harness.pgcluster import PostgresCluster
from harness.processes import Gunicorn, issue_token

_MEASUREMENTS: list[tuple[str, dict]] = []


@pytest.fixture(scope="session")
def cluster():
    with PostgresCluster(prefix="orgapi-fault-pg-") as running:
        yield running


@dataclass
class FaultDatabase:
    cluster: PostgresCluster
    name: str
    url: str

    @contextmanager
    def cursor(self):
        """An autocommit cursor on this database (the cluster must be up)."""
        conn = self.cluster.connect(self.name)
        try:
            with conn.cursor() as cursor:
                yield cursor
        finally:
            conn.close()

    def scalar(self, sql: str, params: tuple = ()):
        with self.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

    def backends(self) -> list[dict]:
        """The app's connections to this database."""
        return [row for row in self.cluster.backends("orgapi") if row["datname"] == self.name]


@pytest.fixture
def fault_db(cluster):
    """A fresh database in the owned cluster, with the schema the migrations make."""
    if not cluster.is_running():
        cluster.start()
    name = f"orgapi_fault_{uuid.uuid4().hex[:10]}"
    url = cluster.create_database(name)
    db = Database(url)
    migrations.apply(db, report=lambda line: None)
    db.close()
    yield FaultDatabase(cluster, name, url)
    if not cluster.is_running():  # a test that failed half-way may leave it down
        cluster.start()
    cluster.drop_database(name)


BASE_ENV = {
    "WEB_THREADS": "4",
    "DB_CONNECT_TIMEOUT": "2",
    "STATEMENT_TIMEOUT_MS": "3000",
    "LOG_LEVEL": "info",
    "ACCESS_LOG": "false",
}


@pytest.fixture
def serve(fault_db, tmp_path):
    """Start real gunicorn (2 workers unless told) on the test's database; stopped afterwards."""
    servers: list[Gunicorn] = []
    token = issue_token(fault_db.url)  # now, while the database is surely up: some tests stop it first

    def start(env: dict[str, str] | None = None, *args: str, workers: int = 2) -> Gunicorn:
        full_env = {**BASE_ENV, "DATABASE_URL": fault_db.url, **(env or {})}
        log_path = tmp_path / f"gunicorn-{len(servers)}.log"
        server = Gunicorn(full_env, "--workers", str(workers), *args, log_path=log_path, token=token)
        servers.append(server)
        return server.start("/healthz")  # waits for every worker, not just the first

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        assert "unhandled error" not in server.log(), f"the app logged a 500:\n{server.log()[-4000:]}"


@pytest.fixture
def measure(request):
    """Record what a test drove and measured (shown at the end of the run with -v)."""

    def record(**values) -> None:
        _MEASUREMENTS.append((request.node.nodeid, values))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _MEASUREMENTS or not (config.getoption("verbose") > 0 or os.environ.get("FAULT_REPORT")):
        return
    terminalreporter.section("fault measurements")
    for nodeid, values in _MEASUREMENTS:
        terminalreporter.write_line(f"{nodeid}: {json.dumps(values, default=str)}")
