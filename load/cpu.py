"""CPU time per request of the app itself, in process: a before/after check that a busy machine barely disturbs.

Each round runs, in a fresh Python process per checkout, the checkout's own `app.api`
(built from DATABASE_URL, or the embedded database) and sends it --requests requests
straight to its WSGI callable, after a warm-up; it reports the process's CPU time per
request (user + system, so the database round trip's client side is included, PostgreSQL's
side is not). Rounds alternate between the checkouts; the medians are compared. CPU time,
unlike requests/s, is barely changed by other work on the machine.

    python -m load.cpu --baseline reports/before --requests 20000 --rounds 5

--env and --against compare two settings of this checkout instead, e.g. the cost of token reads:

    python -m load.cpu --env READ_ACCESS=token --against READ_ACCESS=public

Both apps then live in one process and take turns, round by round, on the same requests,
which moves less than a process per round. Each probe process gets a fresh
PROMETHEUS_MULTIPROC_DIR, as under gunicorn, so the metrics cost what they cost in production.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.processes import PROJECT_ROOT, issue_token
from load.lab import max_user_id, prepare_database

# Runs inside a checkout (its own modules first on sys.path): builds its app once per side
# (a side is a set of settings) and lets the sides take turns on the same requests, calling
# the WSGI app directly (falcon's TestClient would add a WSGI validator's cost). The
# checkout's own token check runs too; a checkout without one ignores the header.
PROBE = """
import json, os, random, sys, time
from falcon.testing import create_environ
from app import create_app
from settings import load_settings
path, count, top, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sides = json.loads(sys.argv[5])
apps = {name: create_app(load_settings({**os.environ, **settings})) for name, settings in sides.items()}
rng = random.Random(1)
headers = {"Authorization": "Bearer " + os.environ["AUTH_TOKEN"]}
environs = []
for _ in range(count):
    target, _, query = path.replace("{id}", str(rng.randint(1, top))).partition("?")
    environs.append(create_environ(target, query_string=query, headers=headers))
statuses = []
def start_response(status, headers, exc_info=None):
    statuses.append(status)
def turn(api, batch):
    started = time.process_time()
    for environ in batch:
        for chunk in api(dict(environ), start_response):
            pass
    return (time.process_time() - started) * 1e6 / len(batch)
for api in apps.values():
    turn(api, environs[: count // 10])
assert all(status.startswith("200") for status in statuses), set(statuses)
samples = {name: [] for name in apps}
for _ in range(rounds):
    for name, api in apps.items():
        samples[name].append(turn(api, environs))
print(json.dumps(samples))
"""

PATHS = {"get": "/users/{id}", "list": "/users?limit=100"}


def assignments(text: str) -> dict[str, str]:
    """`NAME=value NAME=value` as a dict."""
    return dict(item.split("=", 1) for item in text.split())


def probe(tree: Path, sides: dict[str, dict[str, str]], path: str, count: int, rounds: int, top_id: int, url: str, token: str) -> dict:
    """CPU µs per request of each side's app in `tree`, one sample a round."""
    metrics_dir = tempfile.mkdtemp(prefix="orgapi-cpu-metrics-")
    env = {**os.environ, "DATABASE_URL": url, "AUTH_TOKEN": token, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    try:
        result = subprocess.run(
            [sys.executable, "-c", PROBE, path, str(count), str(top_id), str(rounds), json.dumps(sides)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if result.returncode:
        raise SystemExit(f"error: the probe failed in {tree}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.cpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with (e.g. a git worktree of the previous commit)")
    parser.add_argument("--env", default="", help="settings for this checkout, e.g. 'READ_ACCESS=token METRICS=true' (default: none)")
    parser.add_argument(
        "--against", help="compare with this checkout under these settings instead of a baseline, e.g. 'READ_ACCESS=public'"
    )
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round and checkout (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--cases", default="get,list", help="get (GET /users/{id}), list (a 100-row page) (default: %(default)s)")
    parser.add_argument("--users", type=int, default=10_000, help="seed the table up to this many users first (default: %(default)s)")
    args = parser.parse_args(argv)

    _, db = prepare_database(args.users)
    top_id = max_user_id(db)
    db.close()
    token = issue_token(db.url, "load.cpu")
    settings = assignments(args.env)
    other = None
    if args.baseline:
        other = "baseline"
    elif args.against is not None:
        other = f"against {args.against}"
    for case in args.cases.split(","):
        measure = (PATHS[case], args.requests)
        if args.baseline:
            # A process per checkout and round, the checkouts alternating.
            samples: dict[str, list[float]] = {"this checkout": [], "baseline": []}
            for _ in range(args.rounds):
                for name, tree in (("this checkout", PROJECT_ROOT), ("baseline", args.baseline.resolve())):
                    samples[name] += probe(tree, {"side": settings}, *measure, 1, top_id, db.url, token)["side"]
        else:
            sides = {"this checkout": settings} | ({other: assignments(args.against)} if other else {})
            samples = probe(PROJECT_ROOT, sides, *measure, args.rounds, top_id, db.url, token)
        medians = {name: statistics.median(values) for name, values in samples.items()}
        line = ", ".join(f"{name} {medians[name]:.1f} µs (samples {', '.join(f'{v:.1f}' for v in samples[name])})" for name in samples)
        ratio = f"; this / {other} {medians['this checkout'] / medians[other]:.3f}" if other else ""
        print(f"{case} ({PATHS[case]}): CPU per request: {line}{ratio}", flush=True)


if __name__ == "__main__":
    main()
