"""The peewee models and every query the service runs.

Resources call these functions only; a reviewer finds every SQL shape here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable

import psycopg2
import psycopg2.extensions
from peewee import (
    SQL,
    BigAutoField,
    CharField,
    IntegerField,
    IntegrityError,
    Model,
    PostgresqlDatabase,
    fn,
)
from playhouse.postgres_ext import DateTimeTZField

USERNAME_MAX = 32
EMAIL_MAX = 254
FULL_NAME_MAX = 200
MAX_ID = 2**63 - 1  # ids are bigint keys
PUBLIC_FIELDS = ("id", "username", "email", "full_name", "created_at", "updated_at")


class Database(PostgresqlDatabase):
    def _initialize_connection(self, conn) -> None:
        # The hot statements are prepared on a connection's first use of them, not here:
        # when a connection opens, the tables may not exist yet (scripts, first start).
        self._state.prepared = False


# Bound at run time (after gunicorn forks) by `bind_database`; nothing connects at import.
db = Database(None)


class User(Model):
    id = BigAutoField()
    # "C" collation: byte order, so the unique index also serves username-prefix ranges.
    username = CharField(max_length=USERNAME_MAX, unique=True, collation='"C"')
    email = CharField(max_length=EMAIL_MAX, null=True)
    full_name = CharField(max_length=FULL_NAME_MAX, null=True)
    # Bumped by every update; the ETag, so If-Match is checked inside the UPDATE itself.
    version = IntegerField(constraints=[SQL("DEFAULT 1")])
    created_at = DateTimeTZField(constraints=[SQL("DEFAULT now()")])
    updated_at = DateTimeTZField(constraints=[SQL("DEFAULT now()")])

    class Meta:
        database = db
        table_name = "users"


EMAIL_INDEX = "users_email_lower"
# peewee names the username index after the model ("user_username"), not the table.
CONSTRAINT_FIELDS = {"user_username": "username", EMAIL_INDEX: "email"}


class Conflict(Exception):
    """A write collided with a unique constraint on `field`."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def bind_database(url: str, *, statement_timeout_ms: int, connect_timeout: int) -> None:
    """Point the models at a server (a postgresql:// URL or a libpq key=value string).

    Opens nothing: each thread connects on its first query and keeps that connection.
    """
    params = {
        "connect_timeout": connect_timeout,
        "application_name": "orgapi",
        # Notice a server that vanished without closing the socket (network loss, VM freeze).
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        **psycopg2.extensions.parse_dsn(url),
    }
    ours = f"-c statement_timeout={statement_timeout_ms} -c idle_in_transaction_session_timeout={statement_timeout_ms} -c TimeZone=UTC"
    params["options"] = f"{ours} {params.get('options', '')}".strip()
    # peewee's init() merges into the previous binding's parameters; start from none.
    db.connect_params = {}
    db.init(params.pop("dbname", params.get("user", "postgres")), **params)


def describe_database(url: str) -> str:
    """The URL without its password, for logs."""
    parts = psycopg2.extensions.parse_dsn(url)
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    return f"postgresql://{parts.get('user', '')}@{host}:{port}/{parts.get('dbname', '')}"


def ensure_database(server_url: str, name: str) -> bool:
    """Create database `name` on the server at `server_url` unless it exists; True when created."""
    conn = psycopg2.connect(server_url, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is not None:
                return False
            cursor.execute(f'CREATE DATABASE "{name}"')
            return True
    finally:
        conn.close()


def discard_connection() -> None:
    """Drop this thread's connection after a database error; the next query reconnects."""
    try:
        db.close()
    except Exception:  # a broken socket may fail to close; it is gone either way
        db._state.reset()


def create_schema() -> None:
    with db.atomic():
        db.create_tables([User], safe=True)
        _create_secondary_indexes()


def _create_secondary_indexes() -> None:
    User._schema.create_indexes(safe=True)
    db.execute_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {EMAIL_INDEX} ON users (lower(email))")


def ping() -> None:
    db.execute_sql("SELECT 1")


_PUBLIC_COLUMNS = [getattr(User, name) for name in PUBLIC_FIELDS]


def _compiled(query) -> str:
    """The SQL of a peewee query, built once.

    peewee assembles SQL in Python on every execution (about 0.3 ms, most of a request's
    CPU); the hot queries are built here at import and run with fresh parameters.
    """
    sql, _ = query.sql()
    return sql


_PAGE = User.select(*_PUBLIC_COLUMNS).where(User.id > 0).order_by(User.id).limit(1)
LIST_SQL = _compiled(_PAGE)
# A range, not LIKE: with the "C" collation it reads the username index for any prefix.
LIST_BY_PREFIX_SQL = _compiled(_PAGE.where((User.username >= "a") & (User.username < "b")))
GET_SQL = _compiled(User.select(*_PUBLIC_COLUMNS, User.version).where(User.id == 0))
EXISTS_SQL = _compiled(User.select(SQL("1")).where(User.id == 0))
INSERT_SQL = _compiled(
    User.insert(username="", email=None, full_name=None).returning(*_PUBLIC_COLUMNS, User.version)
)


# Prepared once per connection, PostgreSQL skips parsing and planning them on every request.
# Not the prefix page: its best plan depends on how common the prefix is, and a prepared
# statement soon switches to one generic plan for all prefixes.
_PREPARED = {"get_user": GET_SQL, "list_users": LIST_SQL}
_PREPARE = [
    f"PREPARE {name} AS {sql.replace('%s', '${}').format(*range(1, sql.count('%s') + 1))}"
    for name, sql in _PREPARED.items()
]
_EXECUTE = {name: f"EXECUTE {name}({', '.join(['%s'] * sql.count('%s'))})" for name, sql in _PREPARED.items()}


def _execute_prepared(name: str, params: tuple):
    if db.is_closed() or not getattr(db._state, "prepared", False):
        db.connect(reuse_if_open=True)
        for statement in _PREPARE:
            db.execute_sql(statement)
        db._state.prepared = True
    return db.execute_sql(_EXECUTE[name], params)


def _user(row: tuple) -> tuple[dict[str, Any], int]:
    """(public fields as a dict, version) from a row of PUBLIC_FIELDS then version."""
    return dict(zip(PUBLIC_FIELDS, row)), row[-1]


def list_users(*, limit: int, after: int | None, username_prefix: str | None) -> list[dict[str, Any]]:
    """One keyset page: `limit` rows with id > `after`, in id order, read from an index."""
    if username_prefix:
        # Byte order ("C" collation): names starting with the prefix are those from the prefix
        # up to (not including) the prefix with its last character's successor.
        upper = username_prefix[:-1] + chr(ord(username_prefix[-1]) + 1)
        cursor = db.execute_sql(LIST_BY_PREFIX_SQL, (after or 0, username_prefix, upper, limit))
    else:
        cursor = _execute_prepared("list_users", (after or 0, limit))
    return [dict(zip(PUBLIC_FIELDS, row)) for row in cursor.fetchall()]


def get_user(user_id: int) -> tuple[dict[str, Any], int] | None:
    row = _execute_prepared("get_user", (user_id,)).fetchone()
    return None if row is None else _user(row)


def create_user(fields: dict[str, Any]) -> tuple[dict[str, Any], int]:
    # One statement in autocommit mode is its own transaction: no BEGIN/COMMIT round trips.
    try:
        cursor = db.execute_sql(INSERT_SQL, (fields["username"], fields.get("email"), fields.get("full_name")))
    except IntegrityError as exc:
        raise Conflict(_conflicting_field(exc)) from exc
    return _user(cursor.fetchone())


def update_user(user_id: int, fields: dict[str, Any], if_match: Iterable[int] | None) -> tuple[dict[str, Any], int] | None:
    """Apply `fields`; `if_match` (versions) is checked in the same statement. None: no row matched."""
    query = User.update(
        **fields, version=User.version + 1, updated_at=fn.now()
    ).where(User.id == user_id)
    if if_match is not None:
        query = query.where(User.version.in_(list(if_match)))
    try:
        # An UPDATE query has no .first(): run it and take its one row, if any.
        rows = list(query.returning(*_PUBLIC_COLUMNS, User.version).tuples().execute())
    except IntegrityError as exc:
        raise Conflict(_conflicting_field(exc)) from exc
    return _user(rows[0]) if rows else None


def delete_user(user_id: int, if_match: Iterable[int] | None) -> bool:
    query = User.delete().where(User.id == user_id)
    if if_match is not None:
        query = query.where(User.version.in_(list(if_match)))
    return query.execute() > 0


def user_exists(user_id: int) -> bool:
    return db.execute_sql(EXISTS_SQL, (user_id,)).fetchone() is not None


NAME_SPACE = 16**8
# One name drawn at random from each of `count` equal steps of the slice: distinct and in
# name order by construction, so no de-duplication or sort, and index pages fill in sequence.
_SEED_SQL = (
    "INSERT INTO users (username) "
    "SELECT lpad(to_hex(%(low)s + (i - 1)::bigint * %(step)s + floor(random() * %(step)s)::bigint), 8, '0') "
    "FROM generate_series(1, %(count)s) AS i"
)


def _seed_params(count: int, part: int, parts: int) -> dict[str, int]:
    span = NAME_SPACE // parts
    return {"low": part * span, "step": max(1, span // count), "count": min(count, span)}


def seed_random_users(count: int, part: int = 0, parts: int = 1) -> int:
    """Insert up to `count` users named by 8 random hex digits from slice `part` of `parts`
    of the name space; names already taken are skipped."""
    cursor = db.execute_sql(_SEED_SQL + " ON CONFLICT (username) DO NOTHING", _seed_params(count, part, parts))
    return cursor.rowcount


@contextmanager
def bulk_loading():
    """Load an empty users table the way `pgbench -i` does: rows first, indexes after.

    Yields a function like `seed_random_users` (whose slices must not overlap, as the
    unique index is only rebuilt at the end). Everything runs in one transaction holding an
    exclusive lock, so readers wait for the load instead of seeing it half done.
    """
    with db.atomic():
        db.execute_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        if db.execute_sql("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]:
            raise ValueError("bulk loading needs an empty users table")
        for index in _secondary_index_names():
            db.execute_sql(f'DROP INDEX "{index}"')

        def load(count: int, part: int, parts: int) -> int:
            return db.execute_sql(_SEED_SQL, _seed_params(count, part, parts)).rowcount

        yield load
        db.execute_sql("SET LOCAL maintenance_work_mem = '256MB'")
        _create_secondary_indexes()


def _secondary_index_names() -> list[str]:
    rows = db.execute_sql(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'users' AND indexname <> 'users_pkey'"
    ).fetchall()
    return [row[0] for row in rows]


def count_users() -> int:
    return User.select().count()


def _conflicting_field(exc: IntegrityError) -> str:
    # peewee keeps the driver's exception in `.orig` (its args hold only the message).
    original = getattr(exc, "orig", None)
    constraint = getattr(getattr(original, "diag", None), "constraint_name", None)
    return CONSTRAINT_FIELDS.get(constraint or "", "username")
