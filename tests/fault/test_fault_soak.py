"""Sustained load: memory, connections and latency stay flat (docs/RELIABILITY.md, last class).

Runs on request only: `python -m pytest -m slow tests/fault/test_fault_soak.py`.
SOAK_SECONDS sets the length (default 600); SOAK_CLIENTS the concurrency (default 6).
Worker recycling (MAX_REQUESTS) is off so a leak cannot hide behind restarts.
"""

from __future__ import annotations

import os
import statistics
import time

import psutil
import pytest

from harness.load import Load, assert_only, by_kind

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SOAK_CLIENTS = int(os.environ.get("SOAK_CLIENTS", "6"))
SAMPLES = 12

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values, default=0.0)


@pytest.mark.timeout(SOAK_SECONDS + 180)
def test_sustained_load_keeps_memory_connections_and_latency_flat(fault_db, serve, measure):
    server = serve({"MAX_REQUESTS": "0", "STATEMENT_TIMEOUT_MS": "3000"})
    master, workers = server.master_pid, server.worker_pids()
    interval = SOAK_SECONDS / SAMPLES
    samples = []
    with Load(server.port, clients=SOAK_CLIENTS, max_seconds=SOAK_SECONDS + 60, max_requests=10_000_000, pause=0.002) as load:
        seen = 0
        for _ in range(SAMPLES):
            time.sleep(interval)
            outcomes = load.outcomes[seen:]
            seen += len(outcomes)
            latencies = [outcome.ended - outcome.started for outcome in outcomes]
            samples.append(
                {
                    "requests": len(outcomes),
                    "rss_mb": round(sum(psutil.Process(pid).memory_info().rss for pid in server.worker_pids()) / 2**20, 1),
                    "connections": len(fault_db.backends()),
                    "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
                    "p95_ms": round(_p95(latencies) * 1000, 1),
                    "failed": sum(not outcome.ok for outcome in outcomes),
                }
            )
    with fault_db.cursor() as cursor:
        ledger = load.ledger.check(cursor)
    measure(seconds=SOAK_SECONDS, by_status=by_kind(load.outcomes), samples=samples, rows_lost=ledger["rows_lost"])

    assert_only(load.outcomes, {"200", "201", "204"})
    assert ledger["rows_lost"] == 0, ledger
    assert server.master_pid == master and server.worker_pids() == workers
    assert all(sample["connections"] <= 2 * 4 for sample in samples), samples
    # The first sample is warm-up; compare the second third with the last third.
    third = max(1, SAMPLES // 3)
    early, late = samples[1 : 1 + third], samples[-third:]
    # Memory: after warm-up, a flat process grows by a few MB at most; a leak keeps climbing.
    early_rss = statistics.mean(sample["rss_mb"] for sample in early)
    late_rss = statistics.mean(sample["rss_mb"] for sample in late)
    assert late_rss - early_rss <= max(8.0, 0.1 * early_rss), f"worker memory grew from {early_rss:.1f} MB to {late_rss:.1f} MB"
    early_p95 = statistics.mean(sample["p95_ms"] for sample in early)
    late_p95 = statistics.mean(sample["p95_ms"] for sample in late)
    assert late_p95 <= early_p95 * 3 + 50, f"p95 latency grew from {early_p95} ms to {late_p95} ms"
    assert max(sample["connections"] for sample in late) <= max(sample["connections"] for sample in early) + 1
