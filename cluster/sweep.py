"""The scaling sweep through the front: app hosts x workers x connections, on the topology.

For each (app hosts, workers) a topology is started (`cluster/`), seeded, and driven through
its front with wrk (GET /users/{id} by random existing id) at each connection count. Every
point gives requests/s, p50/p99, errors and the CPU per request of each host and of the
whole path. On one machine the hosts share its cores, so requests/s cannot grow with app
hosts here; the CPU per request is the figure that carries to real hosts.

    python -m cluster.sweep --app-hosts 1,2,3 --workers 2 --connections 32,128   (make cluster-sweep)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cluster.bench import TOKEN, measure
from cluster.topology import PROJECT_ROOT, Topology
from database import admin_connection
from load.lab import markdown_table
from load.sweep import int_list

COLUMNS = ["app_hosts", "workers", "connections", "rps", "p50_ms", "p99_ms", "errors", "apps_cpu_ms_per_req", "total_cpu_ms_per_req"]


def sweep_point(topology: Topology, connections: int, seconds: int, warmup: int, ids_file: Path) -> dict:
    if warmup:
        measure(topology, "warm-up", topology.url, [], warmup, connections, ids_file)
    row = measure(topology, "point", topology.url, topology.hosts, seconds, connections, ids_file)
    row.pop("label")
    apps_cpu = sum(row[f"{app}_cpu_ms_per_req"] for app in topology.apps)
    return {
        "app_hosts": topology.app_hosts,
        "workers": topology.workers,
        "connections": connections,
        **row,
        "apps_cpu_ms_per_req": round(apps_cpu, 3),
    }


def write_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (throughput, cpu) = pyplot.subplots(1, 2, figsize=(11, 4))
    for workers in sorted({row["workers"] for row in rows}):
        for connections in sorted({row["connections"] for row in rows}):
            points = sorted((row["app_hosts"], row) for row in rows if row["workers"] == workers and row["connections"] == connections)
            hosts = [host for host, _ in points]
            label = f"{workers} workers/host, {connections} connections"
            throughput.plot(hosts, [row["rps"] for _, row in points], marker="o", label=label)
            cpu.plot(hosts, [row["total_cpu_ms_per_req"] for _, row in points], marker="o", label=label)
    throughput.set(title="Requests/s through the front", xlabel="app hosts", ylabel="requests/s")
    cpu.set(title="CPU per request, whole path", xlabel="app hosts", ylabel="ms CPU per request")
    for axis in (throughput, cpu):
        axis.set_xticks(sorted({row["app_hosts"] for row in rows}))
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    throughput.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app-hosts", type=int_list, default=int_list("1,2,3"), metavar="N,N,...", help="app host counts (default: 1,2,3)")
    parser.add_argument(
        "--workers", type=int_list, default=int_list("2"), metavar="N,N,...", help="gunicorn workers per app host (default: 2)"
    )
    parser.add_argument(
        "--connections", type=int_list, default=int_list("32,128"), metavar="N,N,...", help="wrk connections (default: 32,128)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per point (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before each point (default: %(default)s)")
    parser.add_argument("--users", type=int, default=10_000, help="users seeded into each topology (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "reports" / "cluster-sweep", help="folder for sweep.md, sweep.json, sweep.png"
    )
    args = parser.parse_args(argv)
    rows: list[dict] = []
    for app_hosts in args.app_hosts:
        for workers in args.workers:
            # Every wrk connection comes from this machine's one address: no per-client rate limit.
            with Topology(app_hosts=app_hosts, workers=workers, rate_limit=1_000_000_000) as topology:
                topology.seed(args.users)
                TOKEN[0] = topology.issue_token("sweep")
                ids_file = topology.dir("front") / "ids.txt"
                with admin_connection(topology.database_url(topology.primary() or "db1")) as conn, conn.cursor() as cursor:
                    cursor.execute("SELECT id FROM users ORDER BY random() LIMIT 10000")
                    ids_file.write_text("".join(f"{row[0]}\n" for row in cursor.fetchall()))
                for connections in args.connections:
                    rows.append(sweep_point(topology, connections, args.seconds, args.warmup, ids_file))
                    row = rows[-1]
                    print(
                        f"  {app_hosts} app hosts x {workers} workers, {connections} connections: {row['rps']} req/s, "
                        f"p99 {row['p99_ms']} ms, {row['errors']} errors, {row['total_cpu_ms_per_req']} ms CPU/request",
                        flush=True,
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, COLUMNS)
    (args.out / "sweep.md").write_text(f"# Sweep through the front ({time.strftime('%Y-%m-%d %H:%M')})\n\n{table}\n")
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2))
    write_chart(rows, args.out / "sweep.png")
    print(table)
    print(f"report: {args.out.relative_to(PROJECT_ROOT) if args.out.is_relative_to(PROJECT_ROOT) else args.out}")


if __name__ == "__main__":
    main()
