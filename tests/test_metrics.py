"""/metrics: what it counts, in-process and across real gunicorn workers and their restarts."""

from __future__ import annotations

import time

import pytest
from peewee import DataError
from prometheus_client.parser import text_string_to_metric_families

from database import StatementFailed, admin_connection
from harness.checks import assert_problem
from harness.processes import Gunicorn, issue_token, request
from metrics import LATENCY_BUCKETS
from tokens import METRICS, TokenStore

ITEM = "/users/{user_id:user_id}"


def samples(text: str) -> dict[tuple, float]:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(page: dict, name: str, **labels) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> dict:
    result = client.simulate_get("/metrics")
    assert result.status_code == 200, result.text
    assert result.headers["content-type"].startswith("text/plain; version=")
    return samples(result.text)


def test_metrics_need_a_token_with_their_scope(anonymous_client, db):
    assert_problem(anonymous_client.simulate_get("/metrics"), 401)
    token = TokenStore(db).create("prometheus", [METRICS])[1]
    assert anonymous_client.simulate_get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_requests_are_counted_by_route_template_method_and_status(client, make_user):
    before = scrape(client)
    user = make_user("amy")
    for _ in range(3):
        assert client.simulate_get(f"/users/{user['id']}").status_code == 200
    assert client.simulate_get("/users/999").status_code == 404
    assert client.simulate_get("/no/such/path").status_code == 404
    assert client.simulate_request("TRACE", "/users").status_code == 405
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("orgapi_http_requests_total", route=ITEM, method="GET", status="200") == 3
    assert delta("orgapi_http_requests_total", route=ITEM, method="GET", status="404") == 1
    assert delta("orgapi_http_requests_total", route="/users", method="POST", status="201") == 1
    assert delta("orgapi_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert (
        sum(delta(name, **dict(labels)) for name, labels in after if name == "orgapi_http_requests_total" and ("method", "BREW") in labels)
        == 0
    )
    assert delta("orgapi_http_request_duration_seconds_count", route=ITEM) == 4
    assert delta("orgapi_http_request_database_seconds_count", route=ITEM) == 4
    assert delta("orgapi_http_request_database_seconds_sum", route=ITEM) > 0
    buckets = {dict(labels)["le"] for name, labels in after if name == "orgapi_http_request_duration_seconds_bucket"}
    assert {"0.001", "3.0", "+Inf"} <= buckets and len(LATENCY_BUCKETS) + 1 == len(buckets)
    assert value(after, "orgapi_http_requests_in_flight") == 1  # the scrape itself


def test_database_errors_are_counted_by_kind_and_reconnects_too(client, make_user, database_url, db):
    make_user("amy")
    before = scrape(client)
    with pytest.raises(DataError):
        db.execute_sql("SELECT 1/0")
    db.execute_sql("SET statement_timeout = 50")
    with pytest.raises(StatementFailed):
        db.execute_sql("SELECT pg_sleep(2)")
    pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with admin_connection(database_url) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    assert client.simulate_get("/users").status_code == 200  # on a new connection
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("orgapi_database_errors_total", kind="DataError") == 1
    assert delta("orgapi_database_errors_total", kind="timeout") == 1
    assert delta("orgapi_database_reconnects_total") == 1


# ------------------------------------------------------------------ real gunicorn, several workers


def gauge_pids(directory) -> set[int]:
    return {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("gauge_livesum_*.db")}


@pytest.mark.e2e
def test_counts_add_up_across_workers_and_worker_restarts(database_url, tmp_path):
    token = issue_token(database_url)
    metrics_dir = tmp_path / "metrics"
    # Workers recycle every 15-16 requests: 120 requests restart each of them several times.
    env = {"DATABASE_URL": database_url, "MAX_REQUESTS": "15", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    for run in (1, 2):
        with Gunicorn(env, "--workers", "2", log_path=tmp_path / f"gunicorn-{run}.log", token=token) as server:
            first_workers = server.worker_pids()
            before = samples(request(server.port, "GET", "/metrics")[2].decode())
            # At least 120 requests; and until both first workers have gone (a gevent worker
            # notices its limit within a second, while it keeps answering).
            sent = 0
            deadline = time.monotonic() + 30
            while sent < 120 or (not server.worker_pids().isdisjoint(first_workers) and time.monotonic() < deadline):
                assert request(server.port, "GET", "/healthz")[0] == 200
                sent += 1
            status, _, body = request(server.port, "GET", "/metrics")
            assert status == 200, body
            after = samples(body.decode())
            assert server.worker_pids().isdisjoint(first_workers), "no worker was restarted"
            # Each exited worker was marked dead: its live gauges are gone, the live workers' remain.
            # (The scrape may itself have recycled a worker: give the master a moment to reap it.)
            deadline = time.monotonic() + 5
            while (live_gauges := gauge_pids(metrics_dir)) != server.worker_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert live_gauges == server.worker_pids(), (live_gauges, server.worker_pids())
        healthz = {"route": "/healthz", "method": "GET", "status": "200"}
        # Only the start-up's readiness polls came before: the second run starts from an emptied
        # directory, not from the first run's figures.
        assert value(before, "orgapi_http_requests_total", **healthz) < 20, run
        # Every request is there, whichever worker answered it and though that worker has exited.
        assert value(after, "orgapi_http_requests_total", **healthz) - value(before, "orgapi_http_requests_total", **healthz) == sent
        # Both first workers were replaced; a replacement counts itself once ready (the last one
        # may still be starting when the scrape comes).
        assert value(after, "orgapi_worker_restarts_total") >= 1, run
        assert value(after, "orgapi_http_requests_in_flight") == 1  # exited workers' gauges are gone
