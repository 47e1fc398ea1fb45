"""Bulk seeding of users with random names, for `scripts.seed_users` and the load lab."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from database import Database

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


def seed_random_users(db: Database, count: int, part: int = 0, parts: int = 1) -> int:
    """Insert up to `count` users named by 8 random hex digits from slice `part` of `parts`
    of the name space; names already taken are skipped."""
    cursor = db.execute_sql(_SEED_SQL + " ON CONFLICT (username) DO NOTHING", _seed_params(count, part, parts))
    return cursor.rowcount


@contextmanager
def bulk_loading(db: Database) -> Iterator[Callable[[int, int, int], int]]:
    """Load an empty users table the way `pgbench -i` does: rows first, indexes after.

    Yields a function like `seed_random_users` (whose slices must not overlap, as the
    unique index is only rebuilt at the end). Everything runs in one transaction holding an
    exclusive lock, so readers wait for the load instead of seeing it half done.
    """
    with db.atomic():
        db.execute_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        if db.execute_sql("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]:
            raise ValueError("bulk loading needs an empty users table")
        # The indexes are rebuilt from their own definitions, whatever the migrations made them.
        indexes = db.execute_sql(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = 'users' AND indexname <> 'users_pkey'"
        ).fetchall()
        for name, _ in indexes:
            db.execute_sql(f'DROP INDEX "{name}"')

        def load(count: int, part: int, parts: int) -> int:
            return db.execute_sql(_SEED_SQL, _seed_params(count, part, parts)).rowcount

        yield load
        db.execute_sql("SET LOCAL maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            db.execute_sql(definition)
