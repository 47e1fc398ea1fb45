"""A bounded HTTP load driver for fault tests, and the checks every fault test shares.

Each client thread runs requests one after another on fresh connections (timeout 5 s) to
127.0.0.1, or to `host`: an address of a network namespace the test made (cluster/),
until it is told to stop or its own deadline passes. Every outcome is recorded (start,
end, status or transport error), and every write the server acknowledged is remembered,
so a test can count afterwards what the database kept.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from harness.processes import with_token

CLIENT_TIMEOUT = 5.0
JSON = {"Content-Type": "application/json"}
# A connection the server dropped, before or during its answer.
RESETS = (ConnectionResetError, http.client.RemoteDisconnected, http.client.BadStatusLine, BrokenPipeError, http.client.IncompleteRead)


@dataclass
class Outcome:
    op: str
    method: str
    path: str
    started: float
    ended: float
    status: int | None = None
    error: str | None = None  # "reset", "timeout", "refused" or an exception name
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    # A 404 for a user whose DELETE went unanswered (that DELETE did commit): a right answer.
    explained: bool = False

    @property
    def kind(self) -> str:
        """The status as a string, or the transport error: what tests count by."""
        if self.explained:
            return "404 after an unanswered DELETE"
        return str(self.status) if self.status is not None else self.error or "?"

    @property
    def ok(self) -> bool:
        return self.explained or (self.status is not None and 200 <= self.status < 300)

    def json(self):
        return json.loads(self.body)


def send(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = CLIENT_TIMEOUT,
    op: str = "",
    host: str = "127.0.0.1",
) -> Outcome:
    """One request on a fresh connection, never raising: the outcome, transport errors included."""
    outcome = Outcome(op or method, method, path, time.monotonic(), 0.0)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=with_token(port, headers))
        response = conn.getresponse()
        outcome.body = response.read()
        outcome.status = response.status
        outcome.headers = {name.lower(): value for name, value in response.getheaders()}
    except ConnectionRefusedError:
        outcome.error = "refused"
    except RESETS:
        outcome.error = "reset"
    except TimeoutError:
        outcome.error = "timeout"
    except (OSError, http.client.HTTPException) as exc:
        outcome.error = type(exc).__name__
    finally:
        conn.close()
        outcome.ended = time.monotonic()
    return outcome


def post_json(port: int, path: str, document, **kwargs) -> Outcome:
    return send(port, "POST", path, json.dumps(document).encode(), JSON, **kwargs)


class Ledger:
    """What the server acknowledged, per user, so lost writes can be counted afterwards.

    `created`: id -> username of every 201. `patches`: id -> list of (full_name, acked)
    in the order one client thread sent them (each user is only touched by the thread
    that created it). `deleted`: ids whose DELETE answered 204 (or 404 after an unanswered
    DELETE). `vanished`: ids that answered 404 with no DELETE sent: lost.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: dict[int, str] = {}
        self.patches: dict[int, list[tuple[str, bool]]] = {}
        self.deleted: set[int] = set()
        self.unknown_deletes: set[int] = set()
        self.vanished: set[int] = set()

    def check(self, cursor) -> dict:
        """Compare with the users table (a cursor on the app's database): counts of what was lost."""
        with self.lock:
            created = dict(self.created)
            patches = {key: list(value) for key, value in self.patches.items()}
            deleted = set(self.deleted)
            vanished = set(self.vanished)
        cursor.execute("SELECT id, username, full_name FROM users WHERE id = ANY(%s)", (list(created),))
        rows = {row[0]: row for row in cursor.fetchall()}
        missing = [uid for uid in created if uid not in deleted and (uid not in rows or uid in vanished)]
        resurrected = [uid for uid in deleted if uid in rows]
        wrong_name = [uid for uid, name in created.items() if uid in rows and rows[uid][1] != name]
        lost_updates = []
        for uid, attempts in patches.items():
            if uid not in rows or uid in deleted:
                continue
            acked = [index for index, (_, ok) in enumerate(attempts) if ok]
            if not acked:
                continue
            # The last acknowledged value, or a later attempt whose answer was lost.
            allowed = {value for value, _ in attempts[acked[-1] :]}
            if rows[uid][2] not in allowed:
                lost_updates.append(uid)
        return {
            "acked_creates": len(created),
            "acked_updates": sum(ok for attempts in patches.values() for _, ok in attempts),
            "acked_deletes": len(deleted),
            "rows_lost": len(missing) + len(lost_updates) + len(resurrected) + len(wrong_name),
            "missing": missing,
            "lost_updates": lost_updates,
            "resurrected": resurrected,
            "wrong_name": wrong_name,
        }


class Load:
    """`clients` threads driving a mix of reads and writes until stopped (bounded by `max_seconds`
    and `max_requests`), each pausing `pause` seconds between requests."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        clients: int = 8,
        max_seconds: float = 60.0,
        max_requests: int = 50_000,
        pause: float = 0.003,
        mix: tuple[str, ...] = ("create", "get", "list", "patch", "get", "ready", "delete", "create"),
    ) -> None:
        self.port = port
        self.host = host
        self.clients = clients
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.pause = pause
        self.mix = mix
        self.ledger = Ledger()
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.tag = uuid.uuid4().hex[:6]

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT * 3)
        assert not any(thread.is_alive() for thread in self._threads), "a load client did not stop"
        return self.outcomes

    def wait_until_clean(self, since: float, clean_seconds: float = 1.5, timeout: float = 15.0) -> bool:
        """Keep the load going until every request of the last `clean_seconds` (after `since`)
        succeeded; False if that does not happen within `timeout` (no recovery)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            time.sleep(0.1)
            now = time.monotonic()
            if now - since < clean_seconds:
                continue
            with self._lock:
                recent = [o for o in self.outcomes if o.started >= max(since, now - clean_seconds)]
            if len(recent) >= self.clients and all(o.ok for o in recent):
                return True
        return False

    def _gone(self, outcome: Outcome, uid: int, mine: list[int]) -> None:
        """After a 404 on one of this thread's users: explained by an unanswered DELETE, or lost."""
        if outcome.status != 404:
            return
        mine.remove(uid)
        with self.ledger.lock:
            if uid in self.ledger.unknown_deletes:
                self.ledger.deleted.add(uid)
                outcome.explained = True
            else:
                self.ledger.vanished.add(uid)  # gone without an acknowledged or attempted DELETE

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _client(self, number: int, deadline: float) -> None:
        mine: list[int] = []  # ids this thread created and has not deleted
        counter = itertools.count()
        ops = itertools.cycle(self.mix[number % len(self.mix) :] + self.mix[: number % len(self.mix)])
        ledger = self.ledger
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.outcomes) < self.max_requests:
            op = next(ops)
            n = next(counter)
            if op in ("get", "patch", "delete") and not mine:
                op = "create"
            if op == "create":
                name = f"l{self.tag}-{number}-{n}"
                outcome = post_json(self.port, "/users", {"username": name}, op=op, host=self.host)
                if outcome.status == 201:
                    uid = outcome.json()["id"]
                    mine.append(uid)
                    with ledger.lock:
                        ledger.created[uid] = name
            elif op == "get":
                uid = mine[n % len(mine)]
                outcome = send(self.port, "GET", f"/users/{uid}", op=op, host=self.host)
                self._gone(outcome, uid, mine)
            elif op == "list":
                outcome = send(self.port, "GET", "/users?limit=5", op=op, host=self.host)
            elif op == "ready":
                outcome = send(self.port, "GET", "/readyz", op=op, host=self.host)
            elif op == "patch":
                uid = mine[n % len(mine)]
                value = f"v{number}-{n}"
                outcome = send(self.port, "PATCH", f"/users/{uid}", json.dumps({"full_name": value}).encode(), JSON, op=op, host=self.host)
                with ledger.lock:
                    ledger.patches.setdefault(uid, []).append((value, outcome.status == 200))
                self._gone(outcome, uid, mine)
            elif op == "delete":
                uid = mine.pop(0)
                outcome = send(self.port, "DELETE", f"/users/{uid}", op=op, host=self.host)
                if outcome.status == 404:
                    mine.append(uid)
                    self._gone(outcome, uid, mine)
                else:
                    with ledger.lock:
                        if outcome.status == 204:
                            ledger.deleted.add(uid)
                        else:
                            ledger.unknown_deletes.add(uid)
                            mine.append(uid)  # unknown outcome: it may still exist; try again later
            else:
                raise ValueError(op)
            if outcome.ok:  # keep what failures need; a long run must not hoard bodies
                outcome.body, outcome.headers = b"", {}
            self._record(outcome)
            if self.pause:
                self._stop.wait(self.pause)


# -- shared checks ------------------------------------------------------------------


def by_kind(outcomes) -> dict[str, int]:
    """Responses by status (and transport errors by name), sorted: what reports show."""
    return dict(sorted(Counter(outcome.kind for outcome in outcomes).items()))


def assert_problem_503(outcome: Outcome) -> None:
    """A 503 as docs/RELIABILITY.md wants it: problem+json with status 503 and a Retry-After."""
    assert outcome.status == 503, outcome
    assert outcome.headers.get("retry-after", "").isdigit(), outcome.headers
    assert outcome.headers.get("content-type") == "application/problem+json", outcome.headers
    document = outcome.json()
    assert document["status"] == 503 and document["title"] and document["detail"], document


def assert_only(outcomes, allowed: set[str]) -> None:
    """Every outcome is one of `allowed` (statuses as strings, or transport errors)."""
    unexpected = [outcome for outcome in outcomes if outcome.kind not in allowed and not outcome.explained]
    assert not unexpected, f"unexpected outcomes {by_kind(unexpected)}; first: {unexpected[0]}"
    for outcome in outcomes:
        if outcome.status == 503:
            assert_problem_503(outcome)


def seconds_to_recovery(outcomes, since: float) -> float:
    """From `since` until the end of the last failed request that started after it (0: none failed)."""
    failed = [outcome.ended for outcome in outcomes if outcome.started >= since and not outcome.ok]
    return max(0.0, max(failed) - since) if failed else 0.0


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; that value. AssertionError after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{message} not reached within {timeout} s")
        time.sleep(interval)
