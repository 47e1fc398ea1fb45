"""Slow queries, more requests than threads, slow clients, racing writers.

docs/RELIABILITY.md: a statement timeout below the worker timeout turns a stuck query into a
clear error and no worker is killed for it; excess requests wait a bounded time, with no
hang and no 500; a few slow clients do not slow fast requests; racing creates of one
username: exactly one wins, the rest get 409, one row exists.

Queries are made slow without a test-only route: a separate connection holds a lock the
app's statements need, for as long as the test wants.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time

import pytest

from harness.load import (
    JSON,
    Load,
    assert_only,
    assert_problem_503,
    by_kind,
    post_json,
    send,
    wait_for,
)
from harness.processes import with_token

pytestmark = pytest.mark.e2e

WORKERS, THREADS = 2, 4


def test_statement_timeout_is_a_clear_error_and_kills_no_worker(cluster, fault_db, serve, measure):
    server = serve({"STATEMENT_TIMEOUT_MS": "700", "WORKER_TIMEOUT": "3"})
    master, workers = server.master_pid, server.worker_pids()
    held = post_json(server.port, "/users", {"username": "held", "full_name": "before"}).json()
    other = post_json(server.port, "/users", {"username": "other"}).json()

    wait_for(lambda: _all_threads_connected(server.port, fault_db), 20, 0.1, "a connection per thread")
    connections_before = {backend["pid"] for backend in fault_db.backends()}
    locker = cluster.connect(fault_db.name, autocommit=False)
    locker.cursor().execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (held["id"],))
    timed_out, unaffected = [], []
    began = time.monotonic()
    # Hold the row lock past the worker timeout (3 s): every blocked write times out at 0.7 s.
    while time.monotonic() - began < 4.0:
        patch = send(server.port, "PATCH", f"/users/{held['id']}", json.dumps({"full_name": "after"}).encode(), JSON)
        delete = send(server.port, "DELETE", f"/users/{held['id']}")
        timed_out += [patch, delete]
        unaffected.append(send(server.port, "GET", f"/users/{other['id']}"))
    locker.rollback()

    # A table lock blocks reads too: the list times out; the liveness/readiness do not touch the table.
    locker.cursor().execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    listed = send(server.port, "GET", "/users")
    created = post_json(server.port, "/users", {"username": "blocked"})
    ready = send(server.port, "GET", "/readyz")
    locker.rollback()
    locker.close()
    connections_after = {backend["pid"] for backend in fault_db.backends()}

    after = send(server.port, "PATCH", f"/users/{held['id']}", json.dumps({"full_name": "after"}).encode(), JSON)
    row = None
    with fault_db.cursor() as cursor:
        cursor.execute("SELECT full_name, version FROM users WHERE id = %s", (held["id"],))
        row = cursor.fetchone()
    measure(
        blocked_by_status=by_kind(timed_out + [listed, created]),
        blocked_seconds=[round(min(o.ended - o.started for o in timed_out), 2), round(max(o.ended - o.started for o in timed_out), 2)],
        unblocked_reads=by_kind(unaffected),
        after_release=after.status,
        worker_restarts=len(workers - server.worker_pids()),
        version_after=row[1] if row else None,
    )

    for outcome in timed_out + [listed, created]:
        assert_problem_503(outcome)
        assert "time limit" in outcome.json()["detail"], outcome.json()  # a slow query, not a database outage
        assert 0.5 <= outcome.ended - outcome.started < 5.0, outcome  # waited for the timeout, then answered
    # A timed-out statement leaves a healthy connection: none was closed and reopened.
    assert connections_after == connections_before, (connections_before, connections_after)
    assert all(outcome.status == 200 for outcome in unaffected), by_kind(unaffected)
    assert ready.status == 200
    assert after.status == 200
    assert row == ("after", 2), "a timed-out write left a trace"  # only the last PATCH applied
    assert fault_db.scalar("SELECT count(*) FROM users WHERE username = 'blocked'") == 0
    assert server.master_pid == master and server.worker_pids() == workers, "a worker was killed"


def _all_threads_connected(port: int, fault_db) -> bool:
    threads = [threading.Thread(target=send, args=(port, "GET", "/users?limit=1")) for _ in range(3 * WORKERS * THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return len(fault_db.backends()) == WORKERS * THREADS


def test_more_concurrent_requests_than_threads_all_get_answers(cluster, fault_db, serve, measure):
    server = serve({"STATEMENT_TIMEOUT_MS": "8000"})
    user = post_json(server.port, "/users", {"username": "popular"}).json()
    capacity = WORKERS * THREADS
    total = 5 * capacity
    results: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(total)

    def one(index: int) -> None:
        barrier.wait(5)
        kind = index % 3
        if kind == 0:
            outcome = send(server.port, "GET", f"/users/{user['id']}")
        elif kind == 1:
            outcome = send(server.port, "GET", "/users?limit=5")
        else:
            outcome = post_json(server.port, "/users", {"username": f"crowd-{index}"})
        with lock:
            results.append(outcome)

    # The threads that take requests block on a table lock; the rest of the requests queue in
    # gunicorn. (A gthread worker accepts every connection it can and queues it for its own
    # threads, so a burst may land on one worker: then 4 threads are busy, not 8.)
    locker = cluster.connect(fault_db.name, autocommit=False)
    locker.cursor().execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    threads = [threading.Thread(target=one, args=(index,)) for index in range(total)]
    for thread in threads:
        thread.start()
    blocked = lambda: sum(1 for b in fault_db.backends() if b["wait_event_type"] == "Lock")  # noqa: E731
    try:
        wait_for(lambda: blocked() >= THREADS, 3, 0.02, "a worker's threads all busy")
    except AssertionError:
        pass  # asserted below, after the answers: they say more
    time.sleep(1.0)
    busy = blocked()
    connections_at_peak = len(fault_db.backends())
    locker.rollback()
    locker.close()
    for thread in threads:
        thread.join(10)
    latencies = [outcome.ended - outcome.started for outcome in results]
    measure(
        concurrent_requests=total,
        threads=capacity,
        blocked_in_database=busy,
        database_connections=connections_at_peak,
        by_status=by_kind(results),
        max_seconds=round(max(latencies), 2),
    )

    assert len(results) == total
    assert_only(results, {"200", "201"})  # all answered within the client timeout: no hang, no 5xx
    # Requests did queue (more than the busy threads), and no thread opened a second connection.
    assert THREADS <= busy <= capacity and connections_at_peak <= capacity, (busy, connections_at_peak)
    assert fault_db.scalar("SELECT count(*) FROM users WHERE username LIKE 'crowd-%%'") == sum(outcome.status == 201 for outcome in results)


def _trickle_post(port: int, body: bytes, seconds: float, chunked: bool) -> tuple[int | None, float]:
    """POST `body` a byte at a time over `seconds`; (status, seconds taken)."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        authorization = with_token(port, {})["Authorization"]
        sock.sendall(
            f"POST /users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n"
            f"Authorization: {authorization}\r\nConnection: close\r\n\r\n".encode()
        )
        for index in range(len(body)):
            piece = body[index : index + 1]
            sock.sendall(b"1\r\n" + piece + b"\r\n" if chunked else piece)
            time.sleep(seconds / len(body))
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].split()
    return (int(status_line[1]) if len(status_line) > 1 else None), time.monotonic() - began


def test_slow_clients_do_not_slow_fast_requests(fault_db, serve, measure):
    server = serve()
    trickle_seconds = 5.0
    slow: dict[int, tuple] = {}

    def slow_client(index: int) -> None:
        body = json.dumps({"username": f"slow-{index}", "full_name": "Trickled In Slowly"}).encode()
        slow[index] = _trickle_post(server.port, body, trickle_seconds, chunked=index == 0)

    slow_threads = [threading.Thread(target=slow_client, args=(index,)) for index in range(3)]
    for thread in slow_threads:
        thread.start()
    time.sleep(0.5)  # the slow clients hold their threads now
    with Load(server.port, clients=4, max_seconds=60, pause=0.01, mix=("create", "get", "list", "get", "patch", "delete")) as load:
        time.sleep(trickle_seconds - 1.5)
    for thread in slow_threads:
        thread.join(15)
    fast = load.outcomes
    latencies = sorted(outcome.ended - outcome.started for outcome in fast)
    measure(
        slow_clients=len(slow_threads),
        slow_statuses=sorted(status for status, _ in slow.values()),
        slow_seconds=round(max(seconds for _, seconds in slow.values()), 2),
        fast_requests=len(fast),
        fast_by_status=by_kind(fast),
        fast_median_ms=round(statistics.median(latencies) * 1000, 1),
        fast_max_ms=round(latencies[-1] * 1000, 1),
    )

    assert sorted(status for status, _ in slow.values()) == [201, 201, 201]
    assert_only(fast, {"200", "201", "204"})
    assert len(fast) >= 20, "fast requests made no progress while slow clients were sending"
    # A fast request stuck behind a slow body would take seconds (the trickle lasts 5 s).
    assert latencies[-1] < 2.5, f"a fast request took {latencies[-1]:.1f} s"


def test_racing_creates_of_one_username(fault_db, serve, measure):
    server = serve()
    racers = 16
    rounds = []
    for round_number, (field, make) in enumerate(
        [
            ("username", lambda i, n: {"username": f"race-{n}", "email": f"r{n}-{i}@example.org"}),
            ("username", lambda i, n: {"username": f"race-{n}"}),
            ("email", lambda i, n: {"username": f"mail-{n}-{i}", "email": f"Same-{n}@Example.org" if i % 2 else f"same-{n}@example.org"}),
        ]
    ):
        barrier = threading.Barrier(racers)
        results = []
        lock = threading.Lock()

        def race(index: int) -> None:
            barrier.wait(5)
            outcome = post_json(server.port, "/users", make(index, round_number))
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        rounds.append((field, round_number, results))

    summary = []
    for field, round_number, results in rounds:
        if field == "username":
            rows = fault_db.scalar("SELECT count(*) FROM users WHERE username = %s", (f"race-{round_number}",))
        else:
            rows = fault_db.scalar("SELECT count(*) FROM users WHERE lower(email) = %s", (f"same-{round_number}@example.org",))
        summary.append({"field": field, "by_status": by_kind(results), "rows": rows})
        assert len(results) == racers
        assert by_kind(results) == {"201": 1, "409": racers - 1}, by_kind(results)
        for outcome in results:
            if outcome.status == 409:
                document = outcome.json()
                assert outcome.headers["content-type"] == "application/problem+json"
                assert document["status"] == 409 and document["errors"] == [{"field": field, "message": "is already taken"}]
        assert rows == 1
    measure(rounds=summary)
