"""CPU time per request of the app itself, in process: a before/after check that a busy machine barely disturbs.

Each round runs, in a fresh Python process per checkout, the checkout's own `app.api`
(built from DATABASE_URL, or the embedded database) and sends it --requests requests
straight to its WSGI callable, after a warm-up; it reports the process's CPU time per
request (user + system, so the database round trip's client side is included, PostgreSQL's
side is not). Rounds alternate between the checkouts; the medians are compared. CPU time,
unlike requests/s, is barely changed by other work on the machine.

    python -m load.cpu --baseline ../before --requests 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from harness.processes import PROJECT_ROOT
from load.lab import max_user_id, prepare_database

# Runs inside each checkout (its own modules first on sys.path).
# The WSGI app is called directly (falcon's TestClient would add a WSGI validator's cost).
PROBE = """
import json, random, sys, time
from falcon.testing import create_environ
from app import api
path, count, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1)
environs = []
for _ in range(count):
    target, _, query = path.replace("{id}", str(rng.randint(1, top))).partition("?")
    environs.append(create_environ(target, query_string=query))
statuses = []
def start_response(status, headers, exc_info=None):
    statuses.append(status)
def send(environ):
    for chunk in api(dict(environ), start_response):
        pass
for environ in environs[: count // 10]:
    send(environ)
assert all(status.startswith("200") for status in statuses), set(statuses)
started = time.process_time()
for environ in environs:
    send(environ)
print(json.dumps({"cpu_us_per_request": (time.process_time() - started) * 1e6 / count}))
"""

PATHS = {"get": "/users/{id}", "list": "/users?limit=100"}


def measure(tree: Path, path: str, count: int, top_id: int, url: str) -> float:
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, path, str(count), str(top_id)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode:
        raise SystemExit(f"error: the probe failed in {tree}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["cpu_us_per_request"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.cpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with (e.g. a git worktree of the previous commit)")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round and checkout (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--cases", default="get,list", help="get (GET /users/{id}), list (a 100-row page) (default: %(default)s)")
    parser.add_argument("--users", type=int, default=10_000, help="seed the table up to this many users first (default: %(default)s)")
    args = parser.parse_args(argv)

    _, db = prepare_database(args.users)
    top_id = max_user_id(db)
    db.close()
    trees = {"this checkout": PROJECT_ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    for case in args.cases.split(","):
        samples: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                samples[name].append(measure(tree, PATHS[case], args.requests, top_id, db.url))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        line = ", ".join(f"{name} {medians[name]:.1f} µs (samples {', '.join(f'{v:.1f}' for v in samples[name])})" for name in trees)
        ratio = f"; this / baseline {medians['this checkout'] / medians['baseline']:.3f}" if args.baseline else ""
        print(f"{case} ({PATHS[case]}): CPU per request: {line}{ratio}", flush=True)


if __name__ == "__main__":
    main()
