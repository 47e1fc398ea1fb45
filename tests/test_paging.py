"""Keyset paging: walks stay exact while another writer changes the table, and a page is
read from an index (no Seq Scan, no Sort over the table)."""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from falcon import testing

import migrations
from app import create_app
from database import Database, admin_connection
from harness.checks import bearer, next_link, walk

SEED = 250


def seed(db, count: int = SEED) -> list[int]:
    """`count` users named in three groups ('a_N', 'abN', 'bN'); their ids in order."""
    cursor = db.execute_sql(
        "INSERT INTO users (username) "
        "SELECT CASE g %% 3 WHEN 0 THEN 'a_' WHEN 1 THEN 'ab' ELSE 'b' END || g "
        "FROM generate_series(1, %s) g RETURNING id",
        (count,),
    )
    return sorted(row[0] for row in cursor.fetchall())


def table(db, prefix: str = "") -> dict[int, str]:
    cursor = db.execute_sql("SELECT id, username FROM users WHERE starts_with(username, %s) ORDER BY id", (prefix,))
    return dict(cursor.fetchall())


def fetch(client, url: str):
    path, _, query = url.partition("?")
    result = client.simulate_get(path, query_string=query)
    assert result.status_code == 200, result.text
    return result.json, next_link(result)


def walk_rows(client, url: str, between_pages=lambda page: None) -> list[dict]:
    return [row for page in walk(client, url, between_pages) for row in page]


@pytest.fixture
def writer(database_url):
    """Another session on the same database, autocommit: the concurrent writer."""
    with admin_connection(database_url) as conn:
        yield conn


def test_walk_is_exact_while_another_writer_inserts_updates_and_deletes(client, writer, db):
    original = seed(db)
    seen: list[int] = []
    inserted: list[int] = []
    deleted: list[int] = []
    renamed: list[int] = []

    def change_table(page):
        seen.extend(user["id"] for user in page)
        with writer.cursor() as cursor:
            # New rows: they take ids past every existing one, so the walk meets them later.
            cursor.execute(
                "INSERT INTO users (username) SELECT 'new' || substr(md5(random()::text), 1, 20) FROM generate_series(1, 3) RETURNING id"
            )
            inserted.extend(row[0] for row in cursor.fetchall())
            # Rows already read vanish (an OFFSET walk would then skip rows) ...
            cursor.execute("DELETE FROM users WHERE id = %s", (seen[len(deleted) * 7],))
            deleted.append(seen[len(deleted) * 7])
            # ... and a row not read yet changes (an ORDER BY on a mutable column would move it).
            unseen = [user_id for user_id in original if user_id > seen[-1]]
            if unseen:
                cursor.execute(
                    "UPDATE users SET username = 'zz' || id, full_name = 'renamed', version = version + 1, updated_at = now() "
                    "WHERE id = %s",
                    (unseen[-1],),
                )
                renamed.append(unseen[-1])

    rows = walk_rows(client, "/users?limit=40", change_table)
    ids = [user["id"] for user in rows]
    assert len(deleted) >= 6 and len(inserted) >= 18 and renamed
    assert ids == sorted(set(ids)), "a row came twice or out of order"
    assert not set(original) - set(ids), "a row that existed before the walk was skipped"
    assert set(ids) == set(original) | set(inserted), "the walk did not reach the rows inserted during it"
    by_id = {user["id"]: user for user in rows}
    assert all(by_id[user_id]["full_name"] == "renamed" for user_id in renamed)


def test_walk_is_exact_while_a_writer_thread_inserts_concurrently(client, database_url, db):
    original = seed(db)
    inserted: list[int] = []
    started = threading.Event()
    stop = threading.Event()

    def write():
        try:
            with admin_connection(database_url) as conn, conn.cursor() as cursor:
                for index in range(300):
                    if stop.is_set():
                        break
                    cursor.execute("INSERT INTO users (username) VALUES (%s) RETURNING id", (f"thread{index}",))
                    inserted.append(cursor.fetchone()[0])
                    started.set()
        finally:
            started.set()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert started.wait(10)
        rows = walk_rows(client, "/users?limit=40")
    finally:
        stop.set()
        thread.join(10)
    ids = [user["id"] for user in rows]
    assert ids == sorted(set(ids))
    assert set(original) <= set(ids)
    assert set(ids) <= set(original) | set(inserted)


@pytest.mark.parametrize(("prefix", "limit"), [("a_", 15), ("ab", 40), ("a", 25), ("b1", 7)])
def test_prefix_walk_is_exact_while_another_writer_inserts(client, writer, prefix, limit, db):
    seed(db)
    before = table(db, prefix)
    assert before and len(before) > limit
    names = iter(range(10**6))

    def insert_some(page):
        with writer.cursor() as cursor:
            for name in ("a_", "ab", "a", "b1", "b", "c"):
                cursor.execute("INSERT INTO users (username) VALUES (%s)", (f"{name}x{next(names)}",))

    rows = walk_rows(client, f"/users?limit={limit}&username_prefix={prefix}", insert_some)
    ids = [user["id"] for user in rows]
    assert ids == sorted(set(ids))
    assert all(user["username"].startswith(prefix) for user in rows)
    assert set(before) <= set(ids)
    assert {user["id"]: user["username"] for user in rows} == table(db, prefix)


def test_every_link_keeps_the_limit_and_prefix(client, db):
    seed(db)
    url = "/users?limit=9&username_prefix=a_"
    last_after = 0
    while url is not None:
        page, url = fetch(client, url)
        if url is not None:
            query = parse_qs(urlsplit(url).query)
            assert query == {"limit": ["9"], "after": [str(page[-1]["id"])], "username_prefix": ["a_"]}
            assert int(query["after"][0]) > last_after
            last_after = int(query["after"][0])
            assert len(page) == 9


# ---------------------------------------------------------------- query plans


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


@pytest.fixture
def big_table(app, db):
    """5000 users with random names, analysed, so the planner chooses as in production."""
    db.execute_sql(
        "INSERT INTO users (username, email) SELECT substr(md5(g::text), 1, 12), 'u' || g || '@example.org' FROM generate_series(1, 5000) g"
    )
    db.execute_sql("ANALYZE users")


REPEATS = 12  # past the 5 custom plans after which PostgreSQL may settle on a generic plan


class RecordingDatabase(Database):
    """The service's database, noting every statement it runs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.statements: list[tuple[str, tuple]] = []

    def send(self, sql, params=None):
        self.statements.append((sql, tuple(params or ())))
        return super().send(sql, params)


def list_query_plans(settings, token: str, query_string: str) -> list[dict]:
    """The plans of the statements GET /users?<query_string> runs, from EXPLAIN of the exact
    statements (plain SQL, or EXECUTE of a prepared one) on the same connection, once the
    request has run often enough for the plan cache to have made its choice."""
    db = RecordingDatabase(settings.database_url, schema_version=migrations.latest())
    client = testing.TestClient(create_app(settings, db), headers=bearer(token))
    for _ in range(REPEATS):
        result = client.simulate_get("/users", query_string=query_string)
        assert result.status_code == 200, result.text
    assert result.json, "the page is empty: nothing was planned for real"
    selects = {
        (sql, params)
        for sql, params in db.statements
        if sql.lstrip().upper().startswith(("SELECT", "EXECUTE")) and "token" not in sql  # the bearer token's check is not the page
    }
    assert len(selects) == 1, db.statements  # one query per page, the same each time
    plans = []
    for sql, params in selects:
        (document,) = db.execute_sql("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
        plans.append((document if isinstance(document, list) else json.loads(document))[0]["Plan"])
    db.close()
    return plans


def username_index(db) -> str:
    cursor = db.execute_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'users' AND indexdef LIKE '%%UNIQUE%%(username)%%'")
    (name,) = cursor.fetchone()
    return name


@pytest.mark.parametrize("query_string", ["", "limit=40", "limit=1000", "limit=40&after=2500", "after=4990"])
def test_a_page_is_read_in_order_from_the_primary_key(settings, token, big_table, db, query_string):
    for plan in list_query_plans(settings, token, query_string):
        nodes = list(plan_nodes(plan))
        types = [node["Node Type"] for node in nodes]
        assert "Seq Scan" not in types and "Sort" not in types and "Incremental Sort" not in types, types
        scans = [node for node in nodes if node["Node Type"] in ("Index Scan", "Index Only Scan")]
        assert [node["Index Name"] for node in scans] == ["users_pkey"], nodes
        assert types[0] == "Limit"


@pytest.mark.parametrize("query_string", ["username_prefix=ab&limit=40", "username_prefix=a1&limit=5&after=100", "username_prefix=f00"])
def test_a_prefix_page_is_read_from_the_username_index(settings, token, big_table, db, query_string):
    index = username_index(db)
    for plan in list_query_plans(settings, token, query_string):
        nodes = list(plan_nodes(plan))
        types = [node["Node Type"] for node in nodes]
        assert "Seq Scan" not in types, types
        ranges = [node for node in nodes if node.get("Index Name") == index and "Index Cond" in node]
        assert ranges, nodes
        assert ">=" in ranges[0]["Index Cond"] and "<" in ranges[0]["Index Cond"]
