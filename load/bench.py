"""Benchmark GET /users/{id} and list pages against two ceilings, side by side in one run.

Ceilings: a minimal Falcon app returning a fixed small JSON under the same gunicorn
configuration (framework and server), and `pgbench -S` on the same database server.
Prints a Markdown table and the ratios; writes them to --out as well.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import time
from pathlib import Path

import database
import embedded
from harness.processes import PROJECT_ROOT, Gunicorn
from load.lab import (
    Measurement,
    markdown_table,
    max_user_id,
    postgres_cpu,
    postmaster,
    prepare_database,
    run_wrk,
    serve,
    write_user_ids,
)

COLUMNS = [
    "label",
    "connections",
    "rps",
    "p50_ms",
    "p99_ms",
    "errors",
    "server_cpu_ms_per_request",
    "db_cpu_ms_per_request",
    "generator_cpu_percent",
]


# Issue 10's features, each measured on GET /users/{id} on a server of its own that differs from
# its reference by one setting: name -> (label, environment, reference name).
VARIANTS = {
    "public": ("public reads, metrics on", {"READ_ACCESS": "public"}, "no-metrics"),
    "token": ("token reads", {"READ_ACCESS": "token"}, "public"),
    "no-metrics": ("public reads, metrics off", {"READ_ACCESS": "public", "METRICS": "false"}, None),
    "access-log": ("access log, text", {"READ_ACCESS": "public", "ACCESS_LOG": "true"}, "public"),
    "access-log-json": ("access log, json", {"READ_ACCESS": "public", "ACCESS_LOG": "true", "LOG_FORMAT": "json"}, "public"),
    # Issue 13's levers, each to compare with the default (gevent, lookups batched): GET /users/{id}.
    "unbatched": ("gevent, lookups not batched", {"LOOKUP_LANES": "0"}, None),
    "gthread": ("gthread (4 threads), not batched", {"WORKER_CLASS": "gthread"}, None),
}


def worker_class_of(name: str) -> str | None:
    """The worker class a variant sets, if any: its ceiling is then the minimal app under that class."""
    return VARIANTS[name][1].get("WORKER_CLASS")


def variant_label(name: str) -> str:
    return f"GET /users/{{id}} [{VARIANTS[name][0]}]"


def pgbench_select_only(url: str, seconds: float, scale: int = 10, clients: int = 8) -> dict:
    """`pgbench -S` on a database of its own on the same server: transactions/s and PostgreSQL CPU per transaction."""
    params = database.parse_url(url)
    fresh = database.ensure_database(url, "orgapi_pgbench")
    connection = ["-h", params.get("host", "127.0.0.1"), "-p", params.get("port", "5432"), "-U", params.get("user", "postgres")]
    env = {**os.environ, **({"PGPASSWORD": params["password"]} if "password" in params else {})}
    pgbench = str(embedded.binaries() / "pgbench")
    if fresh:
        subprocess.run([pgbench, "-i", "-q", "-s", str(scale), *connection, "orgapi_pgbench"], env=env, check=True, capture_output=True)
    # pgbench's backends live only as long as the run: sample their CPU while they are there.
    duration = max(4, int(seconds))
    run = subprocess.Popen(
        [pgbench, "-S", "-n", "-c", str(clients), "-j", "2", "-T", str(duration), *connection, "orgapi_pgbench"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    cpu_before, at_before = postgres_cpu(), time.monotonic()
    time.sleep(duration - 2)
    db_cpu, interval = postgres_cpu() - cpu_before, time.monotonic() - at_before
    output, errors = run.communicate(timeout=60)
    if run.returncode:
        raise SystemExit(f"error: pgbench failed: {errors.strip()}")
    tps = float(re.search(r"tps = ([0-9.]+)", output).group(1))
    return {
        "tps": round(tps, 1),
        "db_cpu_ms_per_transaction": round(db_cpu * 1000 / (tps * interval), 3),
        "clients": clients,
        "scale": scale,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="length of each measured run (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured run before each measurement (default: %(default)s)")
    parser.add_argument("--connections", default="100,500", help="comma-separated wrk connection counts (default: %(default)s)")
    parser.add_argument("--users", type=int, default=100_000, help="seed the table up to this many users first (default: %(default)s)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: WEB_CONCURRENCY, else 2 per core)")
    parser.add_argument(
        "--gunicorn-args",
        default="",
        help='extra gunicorn flags for both servers, to compare configurations, e.g. "--worker-class sync" (default: none)',
    )
    parser.add_argument(
        "--cases",
        default="get,list",
        help="what to measure: get (GET /users/{id}), list (first and deep pages), mix (70%% GET, 20%% PATCH, 10%% POST) "
        "(default: %(default)s)",
    )
    parser.add_argument("--page-limit", type=int, default=100, help="limit of the list pages measured (default: %(default)s)")
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench -S ceiling")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the project (e.g. `git worktree add reports/before HEAD~1`) whose app is measured "
        "in the same run, case by case next to this one, for before/after ratios",
    )
    parser.add_argument("--rounds", type=int, default=1, help="measure every case this many times, interleaved (default: %(default)s)")
    parser.add_argument(
        "--variants",
        default="",
        help="also GET /users/{id} on servers differing by one setting, each against its reference, in the same rounds: "
        f"{','.join(VARIANTS)}, or all (default: none)",
    )
    parser.add_argument(
        "--peer",
        type=Path,
        help="the folder of another WSGI app (`app:api`, e.g. the seed tutorial's), served by gunicorn with its own defaults "
        "and the same worker count, and measured on GET /users/{id} for ids 1..--peer-users, next to this one",
    )
    parser.add_argument("--peer-users", type=int, default=10_000, help="the peer's table holds ids 1..N (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "reports" / "bench", help="folder for bench.md and bench.json (default: reports/bench)"
    )
    args = parser.parse_args(argv)
    connections = [int(value) for value in args.connections.split(",")]
    variants = list(VARIANTS) if args.variants == "all" else [name for name in args.variants.split(",") if name]
    variants += [VARIANTS[name][2] for name in variants if VARIANTS[name][2] and VARIANTS[name][2] not in variants]
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(set(variants) - set(VARIANTS)))}; choose from {', '.join(VARIANTS)}")

    settings, db = prepare_database(args.users)
    url = db.url
    workers = args.workers or settings.workers
    top_id = max_user_id(db)
    ids_file = write_user_ids(db, args.out / "user-ids.txt")
    db.close()
    logs = args.out / "logs"
    postgres = postmaster(url)
    extra = tuple(shlex.split(args.gunicorn_args))
    peer = None
    if args.peer:
        logs.mkdir(parents=True, exist_ok=True)
        peer = Gunicorn({}, "--workers", str(workers), log_path=logs / "peer.log", app="app:api", tree=args.peer.resolve())
        peer.expected_workers = 0  # its gunicorn configuration is gunicorn's own: no readiness lines to wait for
        peer.start("/users/1")
        (args.out / "peer-ids.txt").write_text("".join(f"{number}\n" for number in range(1, args.peer_users + 1)))
    hello = serve("load.hello_app:api", url, workers, logs, ready_path="/users/1", extra_args=extra)
    minimal_apps = [("minimal Falcon app", hello)]
    for name in variants:
        if worker_class_of(name):
            server = serve(
                "load.hello_app:api",
                url,
                workers,
                logs,
                "/users/1",
                extra_env={"WORKER_CLASS": worker_class_of(name)},
                label=f"-{name}",
            )
            minimal_apps.append((f"minimal Falcon app [{VARIANTS[name][0]}]", server))
    orgapi = serve("app:api", url, workers, logs, ready_path="/readyz", extra_args=extra)
    apps = [("", orgapi)]
    if args.baseline:
        apps.append(
            (" (baseline)", serve("app:api", url, workers, logs, ready_path="/readyz", extra_args=extra, tree=args.baseline.resolve()))
        )
    variant_servers = [
        serve("app:api", url, workers, logs, "/readyz", extra_env=VARIANTS[name][1], extra_args=extra, label=f"-{name}")
        for name in variants
    ]
    rows: list[Measurement] = []
    try:
        cases = [(label, server, "get_user.lua", {"USER_IDS_FILE": str(ids_file)}) for label, server in minimal_apps]
        if peer:
            cases.append(("GET /users/{id} (peer)", peer, "get_user.lua", {"USER_IDS_FILE": str(args.out / "peer-ids.txt")}))
        for name, server in zip(variants, variant_servers):
            cases.append((variant_label(name), server, "get_user.lua", {"USER_IDS_FILE": str(ids_file)}))
        for suffix, server in apps:
            cases.append((f"GET /users/{{id}}{suffix}", server, "get_user.lua", {"USER_IDS_FILE": str(ids_file)}))
        # The list pages and the write mix on this app and on each variant's server.
        every_app = apps + [(f" [{VARIANTS[name][0]}]", server) for name, server in zip(variants, variant_servers)]
        if "mix" in args.cases:
            for suffix, server in every_app:
                cases.append((f"write mix{suffix}", server, "write_mix.lua", {"USER_IDS_FILE": str(ids_file)}))
        if "list" in args.cases:
            for suffix, server in every_app:
                cases += [
                    (f"GET /users first page{suffix}", server, "list_page.lua", {"PAGE_LIMIT": str(args.page_limit), "AFTER_ID": "0"}),
                    (
                        f"GET /users deep page{suffix}",
                        server,
                        "list_page.lua",
                        {"PAGE_LIMIT": str(args.page_limit), "AFTER_ID": str(max(top_id - 1000, 0))},
                    ),
                ]
        for count in connections:
            for round_number in range(args.rounds):
                # Each round starts one case later, so no case always follows the same one.
                shift = round_number % len(cases)
                for label, server, script, env in cases[shift:] + cases[:shift]:
                    if args.warmup:
                        run_wrk(server, script, count, args.warmup, label, workers, env, postgres)
                    rows.append(run_wrk(server, script, count, args.seconds, label, workers, env, postgres))
                    print(f"  {label} @ {count}: {rows[-1].rps} req/s, p99 {rows[-1].p99_ms} ms, {rows[-1].errors} errors", flush=True)
    finally:
        for server in [server for _, server in minimal_apps + apps] + variant_servers + ([peer] if peer else []):
            server.stop()
    pgbench = None if args.no_pgbench else pgbench_select_only(url, args.seconds)

    # With several rounds, each ratio is of medians over the rounds.
    grouped: dict[tuple[str, int], list[Measurement]] = {}
    for row in rows:
        grouped.setdefault((row.label, row.connections), []).append(row)

    def median_of(label: str, count: int, field: str) -> float | None:
        found = grouped.get((label, count))
        return statistics.median(getattr(row, field) for row in found) if found else None

    ratios = []
    for count in connections:
        ceiling = median_of("minimal Falcon app", count, "rps")
        for label in ("GET /users/{id}", "GET /users first page", "GET /users deep page"):
            rps = median_of(label, count, "rps")
            if rps is None:
                continue
            p99_p50 = median_of(label, count, "p99_ms") / max(median_of(label, count, "p50_ms"), 0.001)
            ratios.append({"what": f"{label} / minimal app @ {count}", "ratio": round(rps / ceiling, 3), "p99/p50": round(p99_p50, 2)})
            peer_rps = median_of(f"{label} (peer)", count, "rps")
            if peer_rps:
                ratios.append({"what": f"{label} / peer @ {count}", "ratio": round(rps / peer_rps, 3), "p99/p50": "-"})
            before = median_of(f"{label} (baseline)", count, "rps")
            if before:
                cpu = median_of(label, count, "server_cpu_ms_per_request") / median_of(
                    f"{label} (baseline)", count, "server_cpu_ms_per_request"
                )
                ratios.append({"what": f"{label} / baseline @ {count}", "ratio": round(rps / before, 3), "p99/p50": f"CPU/req {cpu:.3f}"})
        if pgbench:
            ratios.append(
                {
                    "what": f"GET /users/{{id}} / pgbench -S tps @ {count}",
                    "ratio": round(median_of("GET /users/{id}", count, "rps") / pgbench["tps"], 3),
                    "p99/p50": "-",
                }
            )
    for count in connections:
        for name in variants:
            ceiling_label = f"minimal Falcon app [{VARIANTS[name][0]}]" if worker_class_of(name) else "minimal Falcon app"
            rps, ceiling = median_of(variant_label(name), count, "rps"), median_of(ceiling_label, count, "rps")
            if rps and ceiling:
                p99_p50 = median_of(variant_label(name), count, "p99_ms") / max(median_of(variant_label(name), count, "p50_ms"), 0.001)
                ratios.append(
                    {
                        "what": f"{variant_label(name)} / {ceiling_label} @ {count}",
                        "ratio": round(rps / ceiling, 3),
                        "p99/p50": round(p99_p50, 2),
                    }
                )
    costs = []
    for count in connections:
        for name in variants:
            reference = VARIANTS[name][2]
            if reference is None:
                continue
            label, against = variant_label(name), variant_label(reference)
            costs.append(
                {
                    "what": f"{VARIANTS[name][0]} vs {VARIANTS[reference][0]} @ {count}",
                    "req/s": round(median_of(label, count, "rps"), 1),
                    "reference req/s": round(median_of(against, count, "rps"), 1),
                    "req/s ratio": round(median_of(label, count, "rps") / median_of(against, count, "rps"), 3),
                    "server CPU ms/req": round(median_of(label, count, "server_cpu_ms_per_request"), 3),
                    "reference CPU ms/req": round(median_of(against, count, "server_cpu_ms_per_request"), 3),
                    "CPU ratio": round(
                        median_of(label, count, "server_cpu_ms_per_request") / median_of(against, count, "server_cpu_ms_per_request"), 3
                    ),
                }
            )
    table = markdown_table([row.row() for row in rows], COLUMNS)
    ceiling = (
        f"pgbench -S ({pgbench['clients']} clients, scale {pgbench['scale']}): {pgbench['tps']} tps, "
        f"{pgbench['db_cpu_ms_per_transaction']} ms PostgreSQL CPU per transaction"
        if pgbench
        else "pgbench -S: not run (--no-pgbench)"
    )
    report = (
        f"workers: {workers}, gunicorn flags: {args.gunicorn_args or '(gunicorn.conf.py only)'}, users in table: {top_id}, "
        f"{args.seconds:g} s per point, generator: wrk (2 threads, 3 s timeout)\n\n"
        f"{table}\n\n{ceiling}\n\n"
        + markdown_table(ratios, ["what", "ratio", "p99/p50"])
        + (
            f"\n\nEach setting's cost, medians of {args.rounds} interleaved rounds:\n\n" + markdown_table(costs, list(costs[0]))
            if costs
            else ""
        )
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(report + "\n")
    (args.out / "bench.json").write_text(
        json.dumps(
            {
                "rows": [row.row() for row in rows],
                "pgbench": pgbench,
                "ratios": ratios,
                "costs": costs,
                "workers": workers,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
    )
    print(report)


if __name__ == "__main__":
    main()
