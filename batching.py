"""Concurrent point lookups in one worker share a database round trip.

A lookup goes out at once while fewer than `lanes` are in flight. When all lanes are
busy, lookups that arrive join one pending batch; the first lane to come free passes to
that batch, which goes out as one statement for all its keys. So a lone request never
waits, and every batch is sent after each of its members arrived: each answer is what
the database held at some moment after its request came in (no cache, no stale read).

Every fetch is bounded (statement and pool timeouts), so every wait here is too. Locks and
events are made when a `Lookups` is, after gevent's worker patched `threading`: they are
then cooperative.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class _Batch:
    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.granted = threading.Event()  # the lane passed to this batch
        self.done = threading.Event()
        self.found: dict[Any, Any] = {}
        self.error: BaseException | None = None


class Lookups(Generic[Key]):
    """`get(key)`: `fetch_one(key)` when a lane is free, else a share of one `fetch_many(keys)`."""

    def __init__(self, fetch_one: Callable[[Key], Any], fetch_many: Callable[[list[Key]], Iterable[tuple[Key, Any]]], lanes: int) -> None:
        self.fetch_one = fetch_one
        self.fetch_many = fetch_many
        self._free_lanes = lanes
        self._pending: _Batch | None = None
        self._lock = threading.Lock()

    def get(self, key: Key) -> Any:
        """The value `fetch_one(key)` gives (None for a key the database does not hold)."""
        with self._lock:
            if self._free_lanes:
                self._free_lanes -= 1
                batch = None
            else:
                batch = self._pending
                leader = batch is None
                if batch is None:
                    batch = self._pending = _Batch()
                batch.keys.append(key)
        if batch is None:
            try:
                return self.fetch_one(key)
            finally:
                self._release()
        if leader:
            self._lead(batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.found.get(key)

    def _lead(self, batch: _Batch) -> None:
        try:
            batch.granted.wait()
        except BaseException as exc:  # interrupted (the worker is stopping): give the lane on if it came
            with self._lock:
                granted = self._pending is not batch
                if not granted:
                    self._pending = None
            if granted:
                self._release()
            batch.error = exc
            batch.done.set()
            raise
        try:
            keys = list(dict.fromkeys(batch.keys))
            batch.found = dict(self.fetch_many(keys)) if len(keys) > 1 else {keys[0]: self.fetch_one(keys[0])}
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            batch.done.set()
            self._release()

    def _release(self) -> None:
        with self._lock:
            batch = self._pending
            if batch is None:
                self._free_lanes += 1
                return
            self._pending = None
        batch.granted.set()
