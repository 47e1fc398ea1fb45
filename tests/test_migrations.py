"""Schema migrations: no data lost, idempotent, one at a time, whole or not at all, and a
service that says so clearly when its schema is behind."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from falcon import testing

import migrations
from app import create_app
from database import Database
from harness.checks import UNKNOWN_TOKEN, assert_problem, bearer
from models import User
from tokens import READ, WRITE, TokenStore

LEGACY_SCHEMA = Path(__file__).parent / "data" / "legacy_schema.sql"
QUIET = {"report": lambda line: None}


def catalog(db: Database) -> dict:
    """The users table as PostgreSQL describes it: columns and index definitions."""
    columns = db.execute_sql(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default, collation_name "
        "FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position"
    ).fetchall()
    indexes = db.execute_sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users' ORDER BY indexname").fetchall()
    return {"columns": columns, "indexes": indexes}


@pytest.fixture
def empty_db(scratch_database):
    db = Database(scratch_database("orgapi_migrate"))
    yield db
    db.close()


def test_a_database_made_before_migrations_keeps_every_row_and_value(empty_db):
    db = empty_db
    db.cursor().execute(LEGACY_SCHEMA.read_text())
    db.execute_sql(
        "INSERT INTO users (username, email, full_name, version, created_at, updated_at) "
        "SELECT 'user' || g, CASE WHEN g %% 2 = 0 THEN 'U' || g || '@Example.org' END, "
        "CASE WHEN g %% 3 = 0 THEN 'Ünïcødé ' || g END, g, now() - g * interval '1 hour', now() "
        "FROM generate_series(1, 500) g"
    )
    # The columns the legacy schema has; later migrations may add others, never change these.
    legacy_rows = "SELECT id, username, email, full_name, version, created_at, updated_at FROM users ORDER BY id"
    before = db.execute_sql(legacy_rows).fetchall()
    next_id_before = db.execute_sql("SELECT last_value FROM users_id_seq").fetchone()

    applied = migrations.apply(db, **QUIET)

    assert applied == list(range(1, migrations.latest() + 1))
    assert db.execute_sql(legacy_rows).fetchall() == before
    assert db.execute_sql("SELECT last_value FROM users_id_seq").fetchone() == next_id_before
    assert db.current_schema_version() == migrations.latest()


def test_migrating_a_made_before_database_gives_the_same_schema_as_a_new_one(empty_db, scratch_database):
    legacy = empty_db
    legacy.cursor().execute(LEGACY_SCHEMA.read_text())
    migrations.apply(legacy, **QUIET)
    fresh = Database(scratch_database("orgapi_migrate"))
    migrations.apply(fresh, **QUIET)
    assert catalog(legacy) == catalog(fresh)
    fresh.close()


def test_applying_twice_changes_nothing(empty_db):
    assert migrations.apply(empty_db, **QUIET) != []
    schema = catalog(empty_db)
    history = empty_db.execute_sql("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    assert migrations.apply(empty_db, **QUIET) == []
    assert catalog(empty_db) == schema
    assert empty_db.execute_sql("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall() == history


def test_the_model_matches_the_migrated_table(empty_db):
    """A field added to the model without a migration (or the reverse) fails here."""
    migrations.apply(empty_db, **QUIET)
    columns = {name: (kind, length, nullable) for name, kind, length, nullable, _, _ in catalog(empty_db)["columns"]}
    types = {"BIGAUTO": "bigint", "BIGINT": "bigint", "VARCHAR": "character varying", "TIMESTAMPTZ": "timestamp with time zone"}
    expected = {
        field.column_name: (types[field.field_type], getattr(field, "max_length", None), "YES" if field.null else "NO")
        for field in User._meta.sorted_fields
    }
    assert columns == expected


def test_hosts_migrating_at_once_apply_each_migration_once(empty_db, scratch_database):
    url = empty_db.url
    results: list = []
    barrier = threading.Barrier(6)

    def host() -> None:
        db = Database(url)
        barrier.wait(10)
        try:
            results.append(migrations.apply(db, **QUIET))
        except Exception as exc:  # reported below
            results.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=host) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(isinstance(result, Exception) for result in results), results
    assert sorted(results, key=len) == [[]] * 5 + [list(range(1, migrations.latest() + 1))]
    assert empty_db.execute_sql("SELECT count(*) FROM schema_migrations").fetchone()[0] == migrations.latest()


def test_a_failing_migration_leaves_no_trace(empty_db, tmp_path):
    (tmp_path / "0001_table.sql").write_text("CREATE TABLE t (a int);")
    (tmp_path / "0002_half_done.sql").write_text("ALTER TABLE t ADD COLUMN b int; SELECT 1/0;")
    with pytest.raises(Exception, match="division by zero"):
        migrations.apply(empty_db, tmp_path, **QUIET)
    columns = empty_db.execute_sql("SELECT column_name FROM information_schema.columns WHERE table_name = 't'").fetchall()
    assert columns == [("a",)]  # 0001 kept, nothing of 0002
    assert empty_db.execute_sql("SELECT version FROM schema_migrations").fetchall() == [(1,)]
    assert empty_db.execute_sql("SELECT pg_try_advisory_lock(%s)", (migrations.LOCK_KEY,)).fetchone() == (True,)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["0001_a.sql", "2_b.sql"], "not named"),
        (["0001_a.sql", "0001_b.sql"], "two migrations have version 1"),
        (["0001_a.sql", "0003_c.sql"], "without gaps"),
    ],
)
def test_misnumbered_migrations_are_refused(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(ValueError, match=message):
        migrations.available(tmp_path)


def test_a_service_on_an_unmigrated_database_says_which_command_to_run(empty_db, settings):
    client = testing.TestClient(create_app(replace(settings, database_url=empty_db.url)), headers=bearer(UNKNOWN_TOKEN))
    for path in ("/readyz", "/users", "/users/1"):
        result = client.simulate_get(path)
        body = assert_problem(result, 503)
        assert "has no tables yet" in body["detail"] and "python -m scripts.migrate" in body["detail"], body
        assert result.headers["retry-after"]
    assert client.simulate_get("/healthz").status_code == 200

    migrations.apply(empty_db, **QUIET)
    assert client.simulate_get("/readyz").status_code == 200  # no restart needed
    token = TokenStore(empty_db).create("test", [READ])[1]
    assert client.simulate_get("/users", headers=bearer(token)).json == []


def test_a_schema_behind_the_code_names_both_versions(empty_db, settings, tmp_path):
    first = sorted(migrations.FOLDER.glob("0001_*.sql"))[0]
    (tmp_path / first.name).write_text(first.read_text())
    migrations.apply(empty_db, tmp_path, **QUIET)
    body = assert_problem(
        testing.TestClient(create_app(replace(settings, database_url=empty_db.url)), headers=bearer(UNKNOWN_TOKEN)).simulate_get("/users"),
        503,
    )
    assert f"is at schema version 1; this code needs version {migrations.latest()}" in body["detail"]


def _migrate_to(db: Database, version: int, tmp_path: Path) -> None:
    for migration in migrations.available()[:version]:
        (tmp_path / migration.path.name).write_text(migration.sql)
    migrations.apply(db, tmp_path, **QUIET)


SPELLINGS = [
    "plain@example.org",
    "Mixed.Case@Example.org",
    "zoe\u0308@example.org",  # NFD, as an older version stored it
    "\u212aelvin@example.org",  # KELVIN SIGN
    "ü@bü.de",
    None,
]


def test_the_email_rule_migration_keeps_every_row_and_value(empty_db, settings, tmp_path):
    _migrate_to(empty_db, 3, tmp_path)
    for index, email in enumerate(SPELLINGS * 50):
        address = None if email is None else f"{index}.{email}"
        empty_db.execute_sql("INSERT INTO users (username, email, version) VALUES (%s, %s, %s)", (f"user{index}", address, index + 1))
    before = empty_db.execute_sql("SELECT * FROM users ORDER BY id").fetchall()

    assert migrations.apply(empty_db, **QUIET) == list(range(4, migrations.latest() + 1))

    assert empty_db.execute_sql("SELECT * FROM users ORDER BY id").fetchall() == before
    # The index now compares as the rule says: the NFC spelling of a stored NFD address, or "K"
    # for a stored KELVIN SIGN, is the same address.
    token = TokenStore(empty_db).create("test", [WRITE])[1]
    client = testing.TestClient(create_app(replace(settings, database_url=empty_db.url)), headers=bearer(token))
    for address in ("2.zo\u00eb@example.org", "3.KELVIN@example.org", "1.MIXED.case@example.org"):
        result = client.simulate_post("/users", json={"username": "newcomer", "email": address})
        assert result.status_code == 409, (address, result.text)


def test_the_email_rule_migration_stops_on_addresses_it_would_merge_and_names_them(empty_db, tmp_path):
    _migrate_to(empty_db, 3, tmp_path)
    for username, email in (("nfc", "zo\u00eb@example.org"), ("other", "x@example.org"), ("nfd", "ZOE\u0308@example.org")):
        empty_db.execute_sql("INSERT INTO users (username, email) VALUES (%s, %s)", (username, email))
    before = catalog(empty_db)
    with pytest.raises(Exception, match=r"share an email address under the new rule .*ids 1, 3"):
        migrations.apply(empty_db, **QUIET)
    assert catalog(empty_db) == before and empty_db.current_schema_version() == 3
    assert empty_db.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 3
