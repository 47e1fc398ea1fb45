"""Point lookups sharing a round trip (batching.py) and the bounded connection pool, on a real database.

The lane is held open by a lookup whose fetch waits on an event, so the test decides when
the others arrive; every fetch itself runs the store's real statements.
"""

from __future__ import annotations

import threading
import time

import pytest

from batching import Lookups
from database import Database, OperationalError, PoolExhausted
from harness.load import wait_for
from preconditions import Versions
from queries import UserStore

ANY_VERSION = Versions(allowed=None, excluded=[], refuse_existing=False)


class HeldLane:
    """Lookups on the real store whose first lookup of `hold_id` keeps its lane until `release()`."""

    def __init__(self, users: UserStore, hold_id: int) -> None:
        self.users = users
        self.hold_id = hold_id
        self.holding = threading.Event()
        self.gate = threading.Event()
        self.single_ids: list[int] = []
        self.batches: list[list[int]] = []
        self.lookups = Lookups(self.fetch_one, self.fetch_many, lanes=1)
        self.results: dict[int, object] = {}
        self.threads: list[threading.Thread] = []

    def fetch_one(self, user_id: int):
        self.single_ids.append(user_id)
        if user_id == self.hold_id and not self.holding.is_set():
            self.holding.set()
            assert self.gate.wait(10)
        return self.users._get_one(user_id)

    def fetch_many(self, user_ids: list[int]):
        self.batches.append(sorted(user_ids))
        return self.users._get_several(user_ids)

    def lookup(self, user_id: int) -> None:
        def run() -> None:
            try:
                self.results[user_id] = self.lookups.get(user_id)
            except Exception as exc:
                self.results[user_id] = exc

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def waiting(self) -> int:
        pending = self.lookups._pending
        return 0 if pending is None else len(pending.keys)

    def hold(self) -> None:
        self.lookup(self.hold_id)
        assert self.holding.wait(10)

    def release_and_join(self) -> None:
        self.gate.set()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


@pytest.fixture
def three_users(users):
    return [users.create({"username": name})[0]["id"] for name in ("ada", "grace", "linus")]


def test_a_lone_lookup_goes_out_at_once_on_its_own_statement(users, three_users):
    held = HeldLane(users, hold_id=-1)
    found = held.lookups.get(three_users[1])
    assert found is not None and found[0]["username"] == "grace"
    assert held.single_ids == [three_users[1]] and held.batches == []
    # The lane came back: the next one goes out at once too.
    assert held.lookups.get(three_users[2])[0]["username"] == "linus"
    assert held.batches == []


def test_lookups_arriving_while_the_lane_is_busy_share_one_statement(users, three_users):
    ada, grace, linus = three_users
    missing = linus + 1000
    held = HeldLane(users, hold_id=ada)
    held.hold()
    for user_id in (grace, linus, missing, grace):
        held.lookup(user_id)
    wait_for(lambda: held.waiting() == 4, 10, 0.005, "the lookups waiting")
    held.release_and_join()
    assert held.batches == [sorted({grace, linus, missing})], "one statement for the batch, each id once"
    assert held.results[ada][0]["username"] == "ada"
    assert held.results[grace][0]["username"] == "grace"
    assert held.results[linus] == users.get(linus)
    assert held.results[missing] is None, "an id the database does not hold is a 404, not an error"


def test_a_lookup_sees_a_write_committed_before_it_arrived(users, three_users):
    """The batch goes out after its members arrived: no answer older than its request."""
    ada, grace, _ = three_users
    held = HeldLane(users, hold_id=ada)
    held.hold()
    held.lookup(grace)
    wait_for(lambda: held.waiting() == 1, 10, 0.005, "the lookups waiting")
    users.update(grace, {"full_name": "Grace Hopper"}, ANY_VERSION)
    held.lookup(ada + 100_000)  # a second waiter, so the batch is a real ANY(...)
    wait_for(lambda: held.waiting() == 2, 10, 0.005, "the lookups waiting")
    held.release_and_join()
    assert held.results[grace][0]["full_name"] == "Grace Hopper"
    assert held.results[grace][1] == 2


def test_a_failed_batch_fails_each_waiter_and_frees_the_lane(users, three_users):
    ada, grace, linus = three_users
    held = HeldLane(users, hold_id=ada)

    def failing(user_ids):
        held.batches.append(sorted(user_ids))
        raise OperationalError("the database went away")

    held.lookups.fetch_many = failing
    held.hold()
    held.lookup(grace)
    held.lookup(linus)
    wait_for(lambda: held.waiting() == 2, 10, 0.005, "the lookups waiting")
    held.release_and_join()
    assert isinstance(held.results[grace], OperationalError) and isinstance(held.results[linus], OperationalError)
    assert held.results[ada][0]["username"] == "ada"
    assert held.lookups.get(linus)[0]["username"] == "linus", "the lane was given back"
    assert held.lookups._free_lanes == 1


def test_the_store_batches_through_its_prepared_any_statement(db, three_users):
    store = UserStore(db, lookup_lanes=1)
    found = dict(store._get_several([*three_users, 999_999]))
    assert sorted(found) == sorted(three_users)
    assert {user["username"] for user, _ in found.values()} == {"ada", "grace", "linus"}


def test_the_pool_bounds_connections_and_a_wait_for_one(database_url):
    pooled = Database(database_url, pool_size=1, pool_timeout=0.3)
    sleeper = threading.Thread(target=lambda: pooled.execute_sql("SELECT pg_sleep(1.5)"))
    sleeper.start()
    try:
        time.sleep(0.3)  # the sleeper holds the only connection
        started = time.monotonic()
        with pytest.raises(PoolExhausted, match="no database connection came free within 0.3 s"):
            pooled.execute_sql("SELECT 1", read=True)
        assert 0.25 < time.monotonic() - started < 1.2
    finally:
        sleeper.join(5)
    # The same connection serves the next statement, from any thread.
    first = pooled.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(pooled.execute_sql("SELECT pg_backend_pid()").fetchone()[0]))
    thread.start()
    thread.join(5)
    assert other == [first]
    pooled.close_pool()


def test_a_pooled_connection_that_failed_is_replaced(database_url):
    pooled = Database(database_url, pool_size=1)
    first = pooled.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with pytest.raises(OperationalError):
        pooled.execute_sql("SELECT pg_terminate_backend(pg_backend_pid())")
    # The next statement runs on a new connection, not on the dead one.
    assert pooled.execute_sql("SELECT pg_backend_pid()", read=True).fetchone()[0] != first
    pooled.close_pool()
