"""The connection to PostgreSQL: the only module that knows the driver.

`Database` owns the connections of one app (or script): one per thread, opened on the
thread's first query after gunicorn's fork, checked against the schema version the code
needs, given the hot statements prepared once, and discarded after an error so the next
query starts on a fresh one.

It also sorts the driver's errors into what callers act on: `Misconfigured` (waiting
will not help), `StatementFailed` (this statement failed, the connection is fine), and
`OperationalError` / `InterfaceError` (the database is unreachable: an outage).
"""

from __future__ import annotations

import queue
import re
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import peewee
import psycopg2
import psycopg2.extensions
from peewee import InterfaceError, OperationalError, PostgresqlDatabase

__all__ = [
    "Database",
    "InterfaceError",
    "Misconfigured",
    "OperationalError",
    "PoolExhausted",
    "SchemaNotReady",
    "StatementFailed",
    "check_url",
    "first_line",
    "parse_url",
]

MIGRATE_COMMAND = "python -m scripts.migrate"


class SchemaNotReady(Exception):
    """The database's schema is older than the code (or missing): migrations must run first."""

    def __init__(self, found: int, needed: int) -> None:
        self.found = found
        self.needed = needed
        state = "has no tables yet" if found == 0 else f"is at schema version {found}"
        super().__init__(f"the database {state}; this code needs version {needed}: run `{MIGRATE_COMMAND}`")


class Misconfigured(OperationalError):
    """The database refuses this configuration (role, password, database name, URL option):
    retrying cannot help until someone fixes DATABASE_URL or the database."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class PoolExhausted(OperationalError):
    """Every pooled connection stayed busy for as long as a request may wait for one."""


class StatementFailed(Exception):
    """The server gave up on one statement (timeout, deadlock, serialization failure); the
    connection is healthy and kept."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# SQLSTATEs that end one statement and leave the session usable.
STATEMENT_FAILURES = {"57014": "timeout", "40P01": "deadlock", "40001": "serialization"}
# SQLSTATE classes of a refused login: 28 invalid authorization, 3D invalid catalog (no such database).
PERMANENT_CLASSES = ("28", "3D")
# A failed connection reaches the client as libpq's text only (no SQLSTATE exists before a
# session does), so the refusals that waiting cannot heal are recognised by their messages:
# libpq's own option checks, and the server's login refusals (classes 28 and 3D above).
PERMANENT_MESSAGES = re.compile(
    r"^invalid |could not match \d+ port numbers|password authentication failed|role \".*\" does not exist"
    r"|database \".*\" does not exist|no pg_hba\.conf entry|is not permitted to log in|no password supplied"
    r"|SSL was required|does not support SSL"
)
# (psycopg2's asynchronous connect, under gevent, reports the server's message without the first part.)
_CONNECTION_PREFIX = re.compile(r"^(connection to server .*? failed: )?(FATAL:\s+)?")
# The operating system's poll, kept before gevent's worker patches `select` (gunicorn's master
# imports this module first): a zero-timeout poll never blocks, and gevent's would cost a trip
# through its event loop.
_native_poll = select.poll
# A Unix socket directory that cannot exist: connecting there fails without any network traffic.
_NOWHERE = "/nonexistent/orgapi-url-check"


def parse_url(url: str) -> dict[str, str]:
    """libpq's reading of a postgresql:// URL or key=value string; ValueError when it has none."""
    try:
        return psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        raise ValueError(str(exc).strip()) from None


def check_url(url: str) -> None:
    """ValueError when libpq would refuse the URL's values (port, sslmode, timeouts, ...).

    libpq checks option values only when connecting, before any network traffic; pointed at
    a socket directory that does not exist, the attempt either fails on a value or on the
    missing socket, which means every value passed.
    """
    params = parse_url(url)
    params.pop("hostaddr", None)  # an address would be dialled instead of the socket
    hosts = params.get("host", "").count(",") + 1
    try:
        psycopg2.connect(**{**params, "host": ",".join([_NOWHERE] * hosts)}).close()
    except psycopg2.OperationalError as exc:
        if "No such file or directory" not in str(exc):
            raise ValueError(first_line(exc)) from None


def describe(url: str) -> str:
    """A URL libpq accepts for the same database, without the password, for logs."""
    parts = parse_url(url)
    host, port = parts.get("host", ""), parts.get("port", "")
    query = {key: parts[key] for key in ("sslmode",) if key in parts}
    if host and not host.startswith("/") and "," not in host + port:
        address = f"[{host}]" if ":" in host else host
        netloc = f"{address}:{port}" if port else address
    else:  # a Unix socket directory, or a list of hosts, goes in the query string
        netloc = ""
        query = {**({"host": host} if host else {}), **({"port": port} if port else {}), **query}
    text = "&".join(f"{key}={quote(value, safe='/,')}" for key, value in query.items())
    return f"postgresql://{quote(parts.get('user', ''), safe='')}@{netloc}/{quote(parts.get('dbname', ''), safe='')}" + (
        f"?{text}" if text else ""
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors span several), for one-line logs and errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _driver_error(exc: BaseException) -> Any:
    """The driver's exception behind peewee's wrapper (it keeps it in `.orig`)."""
    return getattr(exc, "orig", exc)


def misconfiguration(exc: BaseException) -> str | None:
    """The cause, when `exc` is a refusal that retrying cannot heal; else None."""
    code = getattr(_driver_error(exc), "pgcode", None) or ""
    message = first_line(exc)
    if code.startswith(PERMANENT_CLASSES) or PERMANENT_MESSAGES.search(_CONNECTION_PREFIX.sub("", message)):
        return _CONNECTION_PREFIX.sub("", message)
    return None


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

    `pool_size`: None keeps one connection per thread for good (gthread workers: as many
    connections as threads). A number bounds the connections the process opens, whatever
    its concurrency (the gevent worker runs a greenlet per client): each statement takes a
    connection from the pool, waiting at most `pool_timeout` seconds, and gives it back
    right after. Every statement the service runs is a transaction of its own, so nothing
    spans two.
    """

    def __init__(
        self,
        url: str,
        *,
        statement_timeout_ms: int = 0,
        connect_timeout: int = 5,
        schema_version: int | None = None,
        prepared_statements: bool = True,
        pool_size: int | None = None,
        pool_timeout: float = 3.0,
    ) -> None:
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
        # False behind a transaction pooler (PgBouncer): PREPARE is session state it would lose.
        self.prepared_statements = prepared_statements
        self._statements: dict[str, tuple[str, str, str]] = {}
        # peewee made its per-thread state from threading.local as it was when peewee was
        # imported (in gunicorn's master); made again now, it is per greenlet under gevent's
        # worker, which patched threading before the app was built.
        self._state = type("ConnectionState", (peewee._ConnectionState, threading.local), {})()
        self.pool_timeout = pool_timeout
        self._pool: queue.LifoQueue[tuple[Any, set[str], bool]] | None = None
        if pool_size is not None:
            # Slots: (connection or None until first used, statements prepared on it, whether it replaces a discarded one).
            self._pool = queue.LifoQueue()
            for _ in range(pool_size):
                self._pool.put((None, set(), False))

    def prepare(self, name: str, sql: str) -> str:
        """Register `sql` (with %s placeholders) to be prepared on each connection's first use of it; the name to run it by.

        PostgreSQL then skips parsing and planning it on each request.
        """
        count = sql.count("%s")
        numbered = sql.replace("%s", "${}").format(*range(1, count + 1))
        self._statements[name] = (
            f"PREPARE {name} AS {numbered}",
            f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}",
            sql,
        )
        return name

    def run_prepared(self, name: str, params: tuple, *, read: bool = False) -> Any:
        """Execute a statement registered with `prepare`; its cursor. `read`: see `execute_sql`."""
        prepare, execute, plain = self._statements[name]
        if not self.prepared_statements:
            return self.execute_sql(plain, params, read=read)

        def attempt() -> Any:
            state = self._thread_state
            if state.closed:
                self.connect()
            if name not in state.prepared:
                self.send(prepare)
                state.prepared.add(name)
            return self.send(execute, params)

        return self._run(attempt, read)

    def execute_sql(self, sql: str, params: Any = None, *, read: bool = False) -> Any:
        """Run one statement; its cursor.

        `read`: the statement only reads (a SELECT). When its connection turns out to be
        dead, it runs once more on a new one. A write never does: a connection that dies
        after the write was sent may have died after the COMMIT, so running it again could
        apply it twice; the client gets the 503 and decides (a retried create meets the
        unique index and answers 409).
        """
        return self._run(lambda: self.send(sql, params), read)

    def send(self, sql: str, params: Any = None) -> Any:
        """One statement on this thread's connection, as it is: no check, no second try."""
        return super().execute_sql(sql, params)

    def execute(self, query: Any, *, read: bool = False, **context_options: Any) -> Any:
        """Run a peewee query; `read`: see `execute_sql`."""
        sql, params = self.get_sql_context(**context_options).sql(query).query()
        return self.execute_sql(sql, params, read=read)

    def _run(self, attempt: Callable[[], Any], read: bool) -> Any:
        if self._pool is None or not self._thread_state.closed:
            return self._run_on_connection(attempt, read)
        try:
            conn, prepared, discarded = self._pool.get(timeout=self.pool_timeout)
        except queue.Empty:
            raise PoolExhausted(f"no database connection came free within {self.pool_timeout:g} s") from None
        state = self._thread_state
        if conn is not None:
            state.set_connection(conn)
        state.prepared, state.discarded = prepared, discarded
        broken = True  # until the statement ends, or fails in a way that leaves the session usable
        try:
            result = self._run_on_connection(attempt, read)
            broken = False
            return result
        except (OperationalError, InterfaceError):
            raise
        except Exception:  # a constraint, a statement timeout: the session is fine
            broken = False
            raise
        finally:
            self._give_back(broken)

    def _give_back(self, broken: bool) -> None:
        """Return this greenlet's connection to the pool; one that failed, or was interrupted mid-statement, is closed instead."""
        state = self._thread_state
        conn = state.conn
        if conn is not None and (broken or conn.closed or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE):
            self.discard()
            conn = None
        assert self._pool is not None
        self._pool.put((conn, state.prepared if conn is not None else set(), state.discarded))
        state.reset()

    def _run_on_connection(self, attempt: Callable[[], Any], read: bool) -> Any:
        self._drop_if_server_left()
        was_open = not self._connection_lost()
        if not was_open:
            self.connect()  # here, not inside peewee's error wrapper, which would rewrap Misconfigured
        try:
            return attempt()
        except (OperationalError, InterfaceError) as exc:
            failed = STATEMENT_FAILURES.get(getattr(_driver_error(exc), "pgcode", None) or "")
            if failed and not self._connection_lost():
                raise StatementFailed(failed, first_line(exc)) from exc
            # Only a connection that was open and died is worth one more try; a failed connect is an outage.
            if not (read and was_open and self._connection_lost()):
                raise
        self.discard()
        return attempt()

    def _connection_lost(self) -> bool:
        conn = self._thread_state.conn
        return self._thread_state.closed or conn is None or conn.closed != 0

    def _drop_if_server_left(self) -> None:
        """Replace this thread's idle connection if the server has already closed it.

        After a database restart each idle connection holds the server's goodbye (or just
        end-of-file) unread. An idle connection is otherwise sent nothing (this service
        LISTENs to nothing), so anything to read means the server left: the statement about
        to run, read or write, goes to a new connection instead of failing, and nothing was sent.
        """
        conn = self._thread_state.conn
        if conn is None or conn.closed or conn.status != psycopg2.extensions.STATUS_READY:
            return
        if _has_input(conn.fileno()):
            self.discard()

    def _initialize_connection(self, conn: Any) -> None:
        # Runs under peewee's connect lock, which every thread of the process shares: no
        # statement here may wait on a table lock (PREPARE would), so statements are
        # prepared on their first use instead.
        state = self._thread_state
        state.prepared = set()
        if getattr(state, "discarded", False):
            state.discarded = False
            self.reconnected()
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
        except BaseException as exc:
            self._thread_state.reset()  # the half-set-up connection is closed; the next query starts over
            cause = misconfiguration(exc)
            if cause is not None:
                raise Misconfigured(cause) from exc
            raise

    def discard(self) -> None:
        """Drop this thread's connection after an error; the next query reconnects."""
        state = self._thread_state
        try:
            self.close()
        except Exception:  # a broken socket may fail to close; it is gone either way
            state.reset()
        state.discarded = True

    def close_pool(self) -> None:
        """Close the pool's idle connections (end of tests; a worker's close when it exits); the next statement opens anew."""
        if self._pool is None:
            return
        slots = []
        while not self._pool.empty():
            slots.append(self._pool.get_nowait())
        for conn, _, _ in slots:
            if conn is not None:
                conn.close()
            self._pool.put((None, set(), False))

    def reconnected(self) -> None:
        """Called when a connection opens to replace a discarded one (a hook for metrics)."""

    @property
    def _thread_state(self) -> Any:
        """This thread's (under gevent, this greenlet's) peewee connection state."""
        return self._state

    def ping(self) -> None:
        self.execute_sql("SELECT 1", read=True)

    def current_schema_version(self) -> int:
        with self.connection().cursor() as cursor:
            return _schema_version(cursor)


def _has_input(fd: int) -> bool:
    """Whether `fd` has something to read right now: one poll(2) that does not wait."""
    readable = _native_poll()
    readable.register(fd, select.POLLIN)
    return bool(readable.poll(0))


def _schema_version(cursor: Any) -> int:
    """The highest migration applied to this database; 0 when none ever was."""
    cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return cursor.fetchone()[0]
