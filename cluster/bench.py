"""Measurements on the topology, one run (`python -m cluster.bench`, make cluster-bench).

1. Pooling: GET /users/{id} with wrk straight at one app host, its database path being
   PostgreSQL directly with SQL-level PREPARE, directly without, or PgBouncer in transaction
   mode (where PREPARE cannot work). Requests/s, latency, CPU per request of the app host,
   the pooler host and the primary's host.
2. The front: the same requests through HAProxy and through nginx (both in the front's
   namespace, same app hosts): requests/s, latency, front CPU per request; and fresh GETs
   while slow clients hold connections to each.

Prints Markdown tables. Figures from one shared 2-core machine: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from cluster.topology import APP_PORT, PROJECT_ROOT, Topology, http_status, render, wait_until
from database import admin_connection
from load.lab import markdown_table, wrk_run


def namespace_cpu(topology: Topology, host: str) -> float:
    """CPU seconds so far of every process in the host's namespace (children reaped included)."""
    total = 0.0
    for pid in topology._pids(topology.namespace(host)):
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def wrk(url: str, seconds: int, connections: int, ids_file: Path) -> dict:
    command, env = wrk_run(url, "get_user.lua", connections, seconds, TOKEN[0], {"USER_IDS_FILE": str(ids_file)})
    output = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


TOKEN = [""]  # the topology's API token, once it is up


def measure(topology: Topology, label: str, url: str, hosts: list[str], seconds: int, connections: int, ids_file: Path) -> dict:
    before = {host: namespace_cpu(topology, host) for host in hosts}
    figures = wrk(url, seconds, connections, ids_file)
    requests = max(figures["requests"], 1)
    row = {
        "label": label,
        "rps": round(figures["requests"] / (figures["duration_us"] / 1e6)),
        "p50_ms": round(figures["p50_us"] / 1000, 2),
        "p99_ms": round(figures["p99_us"] / 1000, 2),
        "errors": sum(figures[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")),
    }
    for host in hosts:
        row[f"{host}_cpu_ms_per_req"] = round((namespace_cpu(topology, host) - before[host]) * 1000 / requests, 3)
    # The whole path's CPU per request: what carries to real hosts, unlike requests/s here.
    row["total_cpu_ms_per_req"] = round(sum(row[f"{host}_cpu_ms_per_req"] for host in hosts), 3)
    return row


def restart_app(topology: Topology, app: str, **env: str) -> None:
    topology.stop_app(app)
    topology.app_env = env
    topology.start_app(app)


def start_nginx(topology: Topology) -> None:
    folder = topology.dir("front")
    (folder / "nginx-temp").mkdir(exist_ok=True)
    servers = "\n".join(f"        server {topology.address(app)}:{APP_PORT} max_fails=2 fail_timeout=5s;" for app in topology.apps)
    config = folder / "nginx.conf"
    config.write_text(
        render(
            "nginx-front.conf",
            pid_file=folder / "nginx.pid",
            error_log=folder / "nginx.log",
            temp_dir=folder / "nginx-temp",
            rate_per_second=f"{topology.rate_limit}r/s",
            servers=servers,
            address=topology.address("front"),
        )
    )
    topology._spawn("front", "nginx", ["nginx", "-c", str(config), "-e", str(folder / "nginx.log")])
    wait_until(lambda: http_status(topology.address("front"), 8080, "/readyz") == 200, 20, "nginx answers", folder / "nginx.log")


def fresh_gets_under_slow_clients(host: str, port: int, per_kind: int) -> str:
    from tests.topology.test_slow import _attack, _fresh_gets, _p95  # the slow tests' own clients

    quiet, _ = _fresh_gets(host, port, 20)
    counts = {"connections": 0, "refused": 0}
    attack = _attack(host, port, per_kind, 25, counts)
    time.sleep(6)
    loaded, failures = _fresh_gets(host, port, 20)
    attack.join(60)
    return (
        f"quiet p50 {statistics.median(quiet) * 1000:.1f} ms; under {per_kind}+{per_kind}+{per_kind} slow clients: "
        f"{len(loaded)}/20 answered, p50 {statistics.median(loaded) * 1000 if loaded else float('nan'):.1f} ms, "
        f"p95 {_p95(loaded) * 1000:.1f} ms, failures {failures}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args(argv)
    with Topology(app_hosts=2, rate_limit=1_000_000) as topology:
        primary = topology.primary()
        subprocess.run(
            [sys.executable, "-m", "scripts.seed_users", str(args.users)],
            cwd=PROJECT_ROOT,
            check=True,
            env={**os.environ, "DATABASE_URL": topology.database_url(primary)},
            capture_output=True,
            timeout=300,
        )
        TOKEN[0] = topology.issue_token("bench")
        ids_file = topology.dir("front") / "ids.txt"
        with admin_connection(topology.database_url(primary)) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT id FROM users ORDER BY random() LIMIT 10000")
            ids_file.write_text("".join(f"{row[0]}\n" for row in cursor.fetchall()))

        app1 = f"http://{topology.address('app1')}:{APP_PORT}"
        pooling = []
        for label, env in (
            ("PostgreSQL direct, PREPARE", {"DATABASE_URL": topology.database_url(primary), "DB_PREPARED_STATEMENTS": "true"}),
            ("PostgreSQL direct, no PREPARE", {"DATABASE_URL": topology.database_url(primary), "DB_PREPARED_STATEMENTS": "false"}),
            ("PgBouncer transaction, no PREPARE", {"DB_PREPARED_STATEMENTS": "false"}),
        ):
            restart_app(topology, "app1", **env)
            measure(topology, "warm-up", app1, [], 2, args.connections, ids_file)
            pooling.append(measure(topology, label, app1, ["app1", "pooler", primary], args.seconds, args.connections, ids_file))
        restart_app(topology, "app1")
        wait_until(lambda: topology.servers_up() == set(topology.apps), 30, "app1 back at the front")
        print("## Pooling (one app host, 2 workers x 4 threads; wrk -c", args.connections, ")\n")
        print(markdown_table(pooling, list(pooling[0])))

        start_nginx(topology)
        front = []
        nginx = f"http://{topology.address('front')}:8080"
        # Two rounds in alternation, so whatever warms up during the run favours neither.
        for label, url in (("HAProxy", topology.url), ("nginx", nginx), ("HAProxy", topology.url), ("nginx", nginx)):
            measure(topology, "warm-up", url, [], 2, args.connections, ids_file)
            front.append(
                measure(topology, label, url, ["front", "app1", "app2", "pooler", primary], args.seconds, args.connections, ids_file)
            )
        print("\n## The front (2 app hosts behind it)\n")
        print(markdown_table(front, list(front[0])))
        print("\n## Fresh GETs while slow clients hold the front\n")
        print("- HAProxy:", fresh_gets_under_slow_clients(topology.address("front"), 80, 200))
        print("- nginx:", fresh_gets_under_slow_clients(topology.address("front"), 8080, 200))
    return 0


if __name__ == "__main__":
    sys.exit(main())
