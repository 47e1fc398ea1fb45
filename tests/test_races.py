"""Concurrent writers through the real WSGI app: the database decides, exactly one wins.

Each of 16 threads has its own TestClient on the same app and its own database connection
(peewee keeps one per thread), opened before the start line so that the requests, not the
connects, race; a Barrier releases them together. Every thread closes its connection.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from falcon import testing

from harness.checks import bearer
from tokens import WRITE, TokenStore

THREADS = 16
JSON = {"Content-Type": "application/json"}


def race(app, db, send, threads: int = THREADS) -> list:
    """Run `send(client, index)` in `threads` threads released together; the results by index."""
    headers = bearer(TokenStore(db).create("race", [WRITE])[1])
    barrier = threading.Barrier(threads)
    results: list = [None] * threads
    failures: list[BaseException] = []

    def run(index: int) -> None:
        client = testing.TestClient(app, headers=headers)
        try:
            db.ping()  # connect now: the requests race, not the connection set-up
            barrier.wait(timeout=30)
            results[index] = send(client, index)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            barrier.abort()
        finally:
            db.close()

    workers = [threading.Thread(target=run, args=(index,), name=f"racer-{index}") for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers), "a racer hangs"
    assert not failures, failures
    return results


def statuses(results) -> Counter:
    return Counter(result.status_code for result in results)


def assert_conflicts(results, status: int, field: str | None = None) -> None:
    for result in results:
        if result.status_code == status:
            assert result.headers["content-type"] == "application/problem+json"
            assert result.json["status"] == status
            if field is not None:
                assert [error["field"] for error in result.json["errors"]] == [field]


def rows(db) -> list[tuple]:
    return db.execute_sql("SELECT id, username, email, full_name, version FROM users ORDER BY id").fetchall()


def test_racing_creates_of_one_username(app, db):
    results = race(app, db, lambda client, index: client.simulate_post("/users", json={"username": "same", "full_name": f"racer {index}"}))
    assert statuses(results) == {201: 1, 409: THREADS - 1}
    assert_conflicts(results, 409, "username")
    (winner,) = [result for result in results if result.status_code == 201]
    assert rows(db) == [(winner.json["id"], "same", None, winner.json["full_name"], 1)]


def test_racing_creates_of_one_email(app, db):
    def create(client, index):
        email = "SAME@example.org" if index % 2 else "same@example.org"
        return client.simulate_post("/users", json={"username": f"racer{index}", "email": email})

    results = race(app, db, create)
    assert statuses(results) == {201: 1, 409: THREADS - 1}
    assert_conflicts(results, 409, "email")
    assert len(rows(db)) == 1


def test_racing_creates_of_different_users_all_succeed(app, db):
    results = race(app, db, lambda client, index: client.simulate_post("/users", json={"username": f"racer{index}"}))
    assert statuses(results) == {201: THREADS}
    assert sorted(result.json["id"] for result in results) == [row[0] for row in rows(db)]
    assert len({result.json["id"] for result in results}) == THREADS


def test_racing_patches_with_one_if_match(app, make_user, db):
    user = make_user("target")
    path = f"/users/{user['id']}"

    def patch(client, index):
        return client.simulate_patch(path, json={"full_name": f"racer {index}"}, headers={"If-Match": '"1"'})

    results = race(app, db, patch)
    assert statuses(results) == {200: 1, 412: THREADS - 1}
    assert_conflicts(results, 412)
    (winner,) = [result for result in results if result.status_code == 200]
    assert winner.headers["etag"] == '"2"'
    assert rows(db) == [(user["id"], "target", None, winner.json["full_name"], 2)]


def test_racing_patches_without_if_match_lose_no_update(app, make_user, db):
    user = make_user("target")
    path = f"/users/{user['id']}"
    results = race(app, db, lambda client, index: client.simulate_patch(path, json={"full_name": f"racer {index}"}))
    assert statuses(results) == {200: THREADS}
    # Each update saw the one before it: the versions handed out are 2..17, each once.
    assert sorted(result.headers["etag"] for result in results) == sorted(f'"{version}"' for version in range(2, THREADS + 2))
    assert rows(db)[0][4] == THREADS + 1


def test_racing_renames_to_one_username(app, make_user, db):
    ids = [make_user(f"user{index}")["id"] for index in range(THREADS)]
    results = race(app, db, lambda client, index: client.simulate_patch(f"/users/{ids[index]}", json={"username": "wanted"}))
    assert statuses(results) == {200: 1, 409: THREADS - 1}
    assert_conflicts(results, 409, "username")
    assert [row[1] for row in rows(db)].count("wanted") == 1


@pytest.mark.parametrize("if_match", [None, '"1"'])
def test_racing_deletes(app, make_user, if_match, db):
    user = make_user("target")
    headers = {} if if_match is None else {"If-Match": if_match}
    results = race(app, db, lambda client, index: client.simulate_delete(f"/users/{user['id']}", headers=headers))
    assert statuses(results) == {204: 1, 404: THREADS - 1}
    assert_conflicts(results, 404)
    assert rows(db) == []
