"""Run a whole Taurus load test locally, end to end.

Starts the service (gunicorn with --workers N) on the embedded PostgreSQL (or DATABASE_URL),
seeds users, runs `bzt bzt-config.yml [OVERRIDES...]` against it, stops everything it
started and prints the summary. The exit code is bzt's: 0 when the pass/fail criteria held.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys

from harness.processes import PROJECT_ROOT
from load.lab import max_user_id, prepare_database, serve

BZT = PROJECT_ROOT / ".venv-load" / "bin" / "bzt"
RESULTS = PROJECT_ROOT / "load" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="extra bzt files merged over bzt-config.yml, e.g. bzt-500.yml or load/bzt-smoke.yml")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: WEB_CONCURRENCY, else 2 per core)")
    parser.add_argument(
        "--seed-users", type=int, default=10_000, help="make sure the table has at least this many users (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not BZT.exists():
        raise SystemExit("error: Taurus is not installed; run `make install-load` first")

    settings, db = prepare_database(args.seed_users)
    url = db.url
    top_id = max_user_id(db)
    db.close()
    workers = args.workers or settings.workers
    server = serve("app:api", url, workers, RESULTS / "logs", ready_path="/readyz")
    print(f"service: gunicorn --workers {workers} app:api on 127.0.0.1:{server.port}, {top_id} users", flush=True)
    env = {**os.environ, "BASE_URL": f"http://127.0.0.1:{server.port}", "LOAD_MAX_USER_ID": str(top_id)}
    try:
        code = subprocess.run([str(BZT), "bzt-config.yml", *args.overrides], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL).returncode
    finally:
        server.stop()
    print_summary()
    print(f"bzt exit code: {code} ({'the service held' if code == 0 else 'a pass/fail criterion failed or the run broke'})")
    return code


def print_summary() -> None:
    stats = RESULTS / "final-stats.csv"
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
