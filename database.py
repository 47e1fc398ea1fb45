"""The connection to PostgreSQL: the only module that knows the driver.

`Database` owns the connections of one app (or script): one per thread, opened on the
thread's first query after gunicorn's fork, checked against the schema version the code
needs, given the hot statements prepared once, and discarded after an error so the next
query starts on a fresh one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
from peewee import InterfaceError, OperationalError, PostgresqlDatabase

__all__ = ["Database", "InterfaceError", "OperationalError", "SchemaNotReady", "parse_url"]

MIGRATE_COMMAND = "python -m scripts.migrate"


class SchemaNotReady(Exception):
    """The database's schema is older than the code (or missing): migrations must run first."""

    def __init__(self, found: int, needed: int) -> None:
        self.found = found
        self.needed = needed
        state = "has no tables yet" if found == 0 else f"is at schema version {found}"
        super().__init__(f"the database {state}; this code needs version {needed}: run `{MIGRATE_COMMAND}`")


def parse_url(url: str) -> dict[str, str]:
    """libpq's reading of a postgresql:// URL or key=value string; ValueError when it has none."""
    try:
        return psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        raise ValueError(str(exc).strip()) from None


def describe(url: str) -> str:
    """The URL without its password, for logs."""
    parts = parse_url(url)
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    return f"postgresql://{parts.get('user', '')}@{host}:{port}/{parts.get('dbname', '')}"


@contextmanager
def admin_connection(url: str, timeout: int = 10) -> Iterator[Any]:
    """A plain autocommit DB-API connection, for maintenance outside the request path."""
    try:
        conn = psycopg2.connect(url, connect_timeout=timeout)
    except psycopg2.Error as exc:
        raise OperationalError(str(exc)) from exc
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def ensure_database(server_url: str, name: str) -> bool:
    """Create database `name` on the server at `server_url` unless it exists; True when created."""
    with admin_connection(server_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is not None:
            return False
        cursor.execute(f'CREATE DATABASE "{name}"')
        return True


class Database(PostgresqlDatabase):
    """peewee's PostgreSQL database with this service's connection lifecycle (see the module doc).

    `schema_version`: the version the code needs; a connection to an older schema is
    closed and `SchemaNotReady` raised, so requests get a clear 503 until migrations ran.
    None (scripts, migrations) skips the check.
    """

    def __init__(self, url: str, *, statement_timeout_ms: int = 0, connect_timeout: int = 5, schema_version: int | None = None) -> None:
        params: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "application_name": "orgapi",
            # Notice a server that vanished without closing the socket (network loss, VM freeze).
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            **parse_url(url),
        }
        ours = f"-c statement_timeout={statement_timeout_ms} -c idle_in_transaction_session_timeout={statement_timeout_ms} -c TimeZone=UTC"
        params["options"] = f"{ours} {params.get('options', '')}".strip()
        super().__init__(params.pop("dbname", params.get("user", "postgres")), **params)
        self.url = url
        self.schema_version = schema_version
        self._statements: dict[str, tuple[str, str]] = {}
        self._registering = threading.Lock()

    def prepare(self, name: str, sql: str) -> str:
        """Register `sql` (with %s placeholders) to be prepared on each connection's first use of it; the name to run it by.

        PostgreSQL then skips parsing and planning it on each request.
        """
        count = sql.count("%s")
        numbered = sql.replace("%s", "${}").format(*range(1, count + 1))
        with self._registering:
            self._statements[name] = (
                f"PREPARE {name} AS {numbered}",
                f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}",
            )
        return name

    def run_prepared(self, name: str, params: tuple) -> Any:
        """Execute a statement registered with `prepare`; its cursor."""
        prepare, execute = self._statements[name]
        state = self._thread_state
        if state.closed:
            self.connect()
        if name not in state.prepared:
            self.execute_sql(prepare)
            state.prepared.add(name)
        return self.execute_sql(execute, params)

    def _initialize_connection(self, conn: Any) -> None:
        # Runs under peewee's connect lock, which every thread of the process shares: no
        # statement here may wait on a table lock (PREPARE would), so statements are
        # prepared on their first use instead.
        self._thread_state.prepared = set()
        if self.schema_version is None:
            return
        try:
            with conn.cursor() as cursor:
                found = _schema_version(cursor)
        except BaseException:
            conn.close()
            raise
        if found < self.schema_version:
            conn.close()
            raise SchemaNotReady(found, self.schema_version)

    def connect(self, reuse_if_open: bool = False) -> bool:
        try:
            return super().connect(reuse_if_open)
        except BaseException:
            self._thread_state.reset()  # the half-set-up connection is closed; the next query starts over
            raise

    def discard(self) -> None:
        """Drop this thread's connection after an error; the next query reconnects."""
        try:
            self.close()
        except Exception:  # a broken socket may fail to close; it is gone either way
            self._thread_state.reset()

    @property
    def _thread_state(self) -> Any:
        """peewee's per-thread connection state (its type stubs do not declare it)."""
        return self._state  # type: ignore[attr-defined]

    def ping(self) -> None:
        self.execute_sql("SELECT 1")

    def current_schema_version(self) -> int:
        with self.connection().cursor() as cursor:
            return _schema_version(cursor)


def _schema_version(cursor: Any) -> int:
    """The highest migration applied to this database; 0 when none ever was."""
    cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return cursor.fetchone()[0]
