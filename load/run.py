"""Run a whole Taurus load test locally, end to end.

Starts the service (gunicorn with --workers N) on the embedded PostgreSQL (or DATABASE_URL),
seeds users, runs `bzt bzt-config.yml [OVERRIDES...]` against it, stops everything it
started and prints the summary and where the run's report is (load/results/latest/report.html,
with the CPU the server and PostgreSQL spent). The exit code is bzt's: 0 when the pass/fail
criteria held; with --check-report, also non-zero when the report did not render in Chromium.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

from database import describe as describe_database
from harness.processes import PROJECT_ROOT, Gunicorn
from load import report_check
from load.lab import max_user_id, postmaster, prepare_database, serve
from load.process_cpu import tree_cpu
from load.report import CONTEXT_ENV, RESULTS
from settings import Settings

BZT = PROJECT_ROOT / ".venv-load" / "bin" / "bzt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="extra bzt files merged over bzt-config.yml, e.g. bzt-500.yml or load/bzt-smoke.yml")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: WEB_CONCURRENCY, else 2 per core)")
    parser.add_argument(
        "--seed-users", type=int, default=10_000, help="make sure the table has at least this many users (default: %(default)s)"
    )
    parser.add_argument("--check-report", action="store_true", help="open the report in headless Chromium and fail when it did not render")
    parser.add_argument("--cluster", action="store_true", help="through the front of the topology (cluster/, root) this command starts")
    parser.add_argument("--app-hosts", type=int, default=2, help="with --cluster: app hosts behind the front (default: %(default)s)")
    args = parser.parse_args(argv)
    if not BZT.exists():
        raise SystemExit("error: Taurus is not installed; run `make install-load` first")
    if args.cluster:
        return run_on_cluster(args)

    settings, db = prepare_database(args.seed_users)
    url = db.url
    top_id = max_user_id(db)
    db.close()
    workers = args.workers or settings.workers
    server = serve("app:api", url, workers, RESULTS / "logs", ready_path="/readyz")
    print(f"service: gunicorn --workers {workers} app:api on 127.0.0.1:{server.port}, {top_id} users", flush=True)
    try:
        code = run_bzt(server, database_name(settings, url), url, workers, top_id, args.overrides)
    finally:
        server.stop()
    print_summary()
    print(f"bzt exit code: {code} ({'the service held' if code == 0 else 'a pass/fail criterion failed or the run broke'})")
    report = newest_run() / "report.html"
    print(f"report: {report.relative_to(PROJECT_ROOT)}" if report.exists() else "no report was written")
    if args.check_report:
        code = code or report_check.main([str(report)])
    return code


def run_on_cluster(args: argparse.Namespace) -> int:
    """The same Taurus run through the front of a topology started (and torn down) here.

    Its report has no CPU figures (they are spread over every host): `make cluster-bench` gives those.
    """
    from cluster.topology import Topology
    from database import admin_connection

    # Every virtual user comes from this machine's one address: no per-client rate limit.
    with Topology(app_hosts=args.app_hosts, workers=args.workers or 2, rate_limit=100_000_000) as topology:
        topology.seed(args.seed_users)
        with admin_connection(topology.database_url(topology.primary() or "db1")) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(id), 0) FROM users")
            top_id = cursor.fetchone()[0]
        server = f"the front {topology.url}: {args.app_hosts} app hosts x {topology.workers} workers, {top_id} users"
        print(f"service: {server}", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        context_file = RESULTS / "run-context.json"
        context = {"workers": topology.workers, "database": "Patroni primary through PgBouncer", "server": server}
        context_file.write_text(json.dumps(context, indent=2))
        env = {
            **os.environ,
            "BASE_URL": topology.url,
            "LOAD_MAX_USER_ID": str(top_id),
            "AUTH_TOKEN": topology.issue_token("load"),
            CONTEXT_ENV: str(context_file),
        }
        code = subprocess.run([str(BZT), "bzt-config.yml", *args.overrides], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL).returncode
    print_summary()
    print(f"bzt exit code: {code} ({'the service held' if code == 0 else 'a pass/fail criterion failed or the run broke'})")
    report = newest_run() / "report.html"
    print(f"report: {report.relative_to(PROJECT_ROOT)}" if report.exists() else "no report was written")
    return code


def database_name(settings: Settings, url: str) -> str:
    if settings.uses_embedded_database:
        return f"embedded PostgreSQL ({os.path.relpath(settings.embedded_pg_dir, PROJECT_ROOT)})"
    return describe_database(url)


def run_bzt(server: Gunicorn, database_name: str, url: str, workers: int, top_id: int, bzt_args: list[str]) -> int:
    """`bzt bzt-config.yml BZT_ARGS` against `server`, with the context its report reads (see load.report)."""
    database = postmaster(url)
    context = {
        "workers": workers,
        "database": database_name,
        "server": f"gunicorn --workers {workers} app:api, {top_id} users in the table",
        "server_pid": server.master_pid,
        "server_cpu_start": tree_cpu(psutil.Process(server.master_pid)),
        "database_pid": database.pid if database else None,
        "database_cpu_start": tree_cpu(database) if database else None,
        # bzt and locust start after this: all of their CPU counts
        "generator_cpu_start": 0.0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    context_file = RESULTS / "run-context.json"
    context_file.write_text(json.dumps(context, indent=2))
    env = {
        **os.environ,
        "BASE_URL": f"http://127.0.0.1:{server.port}",
        "LOAD_MAX_USER_ID": str(top_id),
        "AUTH_TOKEN": server.token or "",
        CONTEXT_ENV: str(context_file),
    }
    return subprocess.run([str(BZT), "bzt-config.yml", *bzt_args], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL).returncode


def newest_run() -> Path:
    """The folder of the newest Taurus run (their names are timestamps)."""
    return max((RESULTS / "artifacts").glob("*/"), default=RESULTS / "no-run")


def print_summary() -> None:
    stats = newest_run() / "final-stats.csv"
    if not stats.exists():
        print("no final stats were written")
        return
    with stats.open() as handle:
        rows = list(csv.DictReader(handle))
    print(f"{'label':<14} {'requests':>9} {'failed %':>9} {'avg ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for row in rows:
        samples = int(row["throughput"])
        print(
            f"{row['label'] or 'ALL':<14} {samples:>9} {100 * int(row['fail']) / max(samples, 1):>9.2f} "
            f"{float(row['avg_rt']) * 1000:>8.1f} {float(row['perc_95.0']) * 1000:>8.1f} {float(row['perc_99.0']) * 1000:>8.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
