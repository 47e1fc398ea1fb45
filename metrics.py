"""Prometheus metrics, right across gunicorn's worker processes.

prometheus_client's multiprocess mode: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR
before any worker starts (and before anything imports prometheus_client), empties it at
start and marks each exited worker dead. Every worker then writes its figures to its own
files there, and /metrics sums the files of all workers, live and exited. Without the
variable (in-process tests, scripts) the figures live in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from database import Database

# 1 ms to 3 s: a cached read takes about 1 ms, the longest statement timeout worth serving is seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0)
DATABASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)

REQUESTS = Counter("orgapi_http_requests", "Requests answered, by route template, method and status.", ["route", "method", "status"])
LATENCY = Histogram(
    "orgapi_http_request_duration_seconds", "Time from request to response, by route template.", ["route"], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("orgapi_http_requests_in_flight", "Requests being handled now.", multiprocess_mode="livesum")
DATABASE_TIME = Histogram(
    "orgapi_http_request_database_seconds",
    "Time spent in database calls per request, by route template.",
    ["route"],
    buckets=DATABASE_BUCKETS,
)
DATABASE_ERRORS = Counter(
    "orgapi_database_errors", "Failed statements, by kind: timeout, deadlock, serialization, or the error class.", ["kind"]
)
RECONNECTS = Counter("orgapi_database_reconnects", "Connections opened to replace one discarded after an error.")
WORKER_RESTARTS = Counter("orgapi_worker_restarts", "Workers started to replace one that exited (recycled, crashed or timed out).")

# Per request, also under the gevent worker (many requests to a thread): a context variable.
_database_seconds: ContextVar[float] = ContextVar("database_seconds", default=0.0)
# The labelled children, looked up once per label set (route templates x methods x statuses: a
# few hundred at most): `labels()` costs more than the increment itself.
_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count a finished request: its route, method and status, its latency and its database time."""
    children = _children.get((route, method, status))
    if children is None:
        children = _children[(route, method, status)] = (
            REQUESTS.labels(route, method, str(status)),
            LATENCY.labels(route),
            DATABASE_TIME.labels(route),
        )
    requests, latency, database_time = children
    requests.inc()
    latency.observe(seconds)
    database_time.observe(_database_seconds.get())


def start_request() -> None:
    _database_seconds.set(0.0)


class InstrumentedDatabase(Database):
    """The service's database, counting its time per request, its errors and its reconnects."""

    def _run(self, attempt: Callable[[], Any], read: bool) -> Any:
        # Every statement passes here (plain, prepared, or a peewee query), with its one retry.
        started = time.perf_counter()
        try:
            return super()._run(attempt, read)
        except Exception as exc:
            DATABASE_ERRORS.labels(getattr(exc, "reason", None) or type(exc).__name__).inc()
            raise
        finally:
            _database_seconds.set(_database_seconds.get() + time.perf_counter() - started)

    def reconnected(self) -> None:
        RECONNECTS.inc()


class MetricsResource:
    """GET /metrics: the Prometheus text format, summed over every worker when there are several."""

    def __init__(self, multiprocess_mode: bool) -> None:
        self.multiprocess_mode = multiprocess_mode

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.multiprocess_mode:
            # A fresh registry per scrape, as the multiprocess docs require: it reads every worker's files.
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            resp.data = generate_latest(registry)
        else:
            resp.data = generate_latest(REGISTRY)
        resp.content_type = CONTENT_TYPE_LATEST

    on_head = on_get
