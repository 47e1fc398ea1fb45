"""Longer topology tests (make test-cluster-slow): slow clients in numbers, rolling restart."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest

from harness.load import Load, assert_only, by_kind, send

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

SLOW_CLIENTS = 300  # of each kind: idle, byte-a-second headers, trickled bodies


async def _hold(host: str, port: int, kind: str, deadline: float, counts: dict) -> None:
    """One slow client until `deadline`; reconnects whenever the server closes on it."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["refused"] += 1
            await asyncio.sleep(0.5)
            continue
        counts["connections"] += 1
        try:
            if kind == "headers":
                writer.write(b"GET /users?limit=5 HTTP/1.1\r\nHost: x\r\n")
            elif kind == "body":
                writer.write(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{")
            while time.monotonic() < deadline and not reader.at_eof():
                if kind == "headers":
                    writer.write(b"X")
                elif kind == "body":
                    writer.write(b" ")
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            writer.close()


def _attack(host: str, port: int, per_kind: int, seconds: float, counts: dict) -> threading.Thread:
    async def main():
        deadline = time.monotonic() + seconds
        tasks = []
        for _ in range(per_kind):
            for kind in ("idle", "headers", "body"):
                tasks.append(asyncio.create_task(_hold(host, port, kind, deadline, counts)))
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    return thread


def _fresh_gets(host: str, port: int, count: int = 40) -> tuple[list[float], list[str]]:
    latencies, failures = [], []
    for _ in range(count):
        outcome = send(port, "GET", "/users?limit=5", host=host)
        if outcome.status == 200:
            latencies.append(outcome.ended - outcome.started)
        else:
            failures.append(outcome.kind)
        time.sleep(0.05)
    return latencies, failures


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else float("inf")


def test_slow_clients_in_numbers_do_not_slow_fresh_gets(topology, front):
    host, port = front
    quiet, _ = _fresh_gets(host, port)
    counts = {"connections": 0, "refused": 0}
    attack = _attack(host, port, SLOW_CLIENTS, 40, counts)
    time.sleep(8)  # every slow client connected and sending
    loaded, failures = _fresh_gets(host, port)
    attack.join(60)
    print(
        f"front, {SLOW_CLIENTS} idle + {SLOW_CLIENTS} slow-header + {SLOW_CLIENTS} slow-body clients "
        f"({counts['connections']} connections): fresh GET p50 {statistics.median(loaded) * 1000:.1f} ms, "
        f"p95 {_p95(loaded) * 1000:.1f} ms (quiet: p50 {statistics.median(quiet) * 1000:.1f} ms, "
        f"p95 {_p95(quiet) * 1000:.1f} ms); failures {failures}"
    )
    assert not failures
    assert _p95(loaded) <= max(5 * _p95(quiet), 0.25)

    # The same clients, ten of each kind, straight at one app host's gunicorn: what the front prevents.
    direct = topology.address("app2")
    quiet_direct, _ = _fresh_gets(direct, 8000, 10)
    counts = {"connections": 0, "refused": 0}
    attack = _attack(direct, 8000, 10, 25, counts)
    time.sleep(5)
    loaded_direct, failures_direct = _fresh_gets(direct, 8000, 10)
    attack.join(60)
    print(
        f"gunicorn direct, 10 of each kind: {len(loaded_direct)}/10 GETs answered, failures {failures_direct}, "
        f"p50 {statistics.median(loaded_direct) * 1000 if loaded_direct else float('nan'):.1f} ms "
        f"(quiet p50 {statistics.median(quiet_direct) * 1000:.1f} ms)"
    )


def test_rolling_restart_of_every_app_host_fails_no_request(topology, front):
    host, port = front
    with Load(port, host=host, clients=6, max_seconds=300) as load:
        time.sleep(2)
        started = time.monotonic()
        topology.rolling_restart()
        took = time.monotonic() - started
        time.sleep(2)
    print(
        f"rolling restart of {len(topology.apps)} app hosts in {took:.1f} s under load: "
        f"{len(load.outcomes)} requests, {by_kind(load.outcomes)}"
    )
    assert_only(load.outcomes, {"200", "201", "204"})
