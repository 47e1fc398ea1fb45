"""Versioned schema migrations: numbered SQL files in this folder, applied in order.

`NNNN_what_it_does.sql` is version NNNN. `apply` takes a PostgreSQL advisory lock (so
hosts that start together migrate one at a time, the others then finding nothing to do),
runs each pending file in its own transaction, and records it in `schema_migrations` in
that same transaction: a migration is applied whole or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from database import Database

FOLDER = Path(__file__).resolve().parent
FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# pg_advisory_lock key: any bigint that no other code on the database uses for a lock.
LOCK_KEY = 0x6F7267617069  # "orgapi" in ASCII

HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()


def available(folder: Path = FOLDER) -> list[Migration]:
    """Every migration file, in version order; a misnamed or duplicate file is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNNN_lowercase_words.sql")
        version = int(match[1])
        if version in found:
            raise ValueError(f"two migrations have version {version}: {found[version].path.name}, {path.name}")
        found[version] = Migration(version, match[2], path)
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3, ... without gaps; found {versions}")
    return [found[version] for version in versions]


def latest(folder: Path = FOLDER) -> int:
    """The schema version this code needs."""
    migrations = available(folder)
    return migrations[-1].version if migrations else 0


def apply(db: Database, folder: Path = FOLDER, report: Callable[[str], None] = print) -> list[int]:
    """Apply the pending migrations; the versions applied (none when up to date)."""
    migrations = available(folder)
    with db.connection_context():
        cursor = db.cursor()
        cursor.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            cursor.execute(HISTORY_TABLE)
            cursor.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cursor.fetchall()}
            applied = []
            for migration in migrations:
                if migration.version in done:
                    continue
                with db.atomic():
                    # No parameters: the file's text goes to the server as it is ("%" included).
                    db.cursor().execute(migration.sql)
                    db.execute_sql(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                report(f"applied migration {migration.version:04d} {migration.name}")
                applied.append(migration.version)
            return applied
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
