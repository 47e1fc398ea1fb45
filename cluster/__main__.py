"""`python -m cluster up` (make cluster) and `python -m cluster down` (make cluster-down).

`up` leaves the topology running after it returns and prints the front's URL on a line of
its own; `down` stops and removes everything `up` made.
"""

from __future__ import annotations

import argparse
import sys

from cluster.topology import STATE_FILE, Topology


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--app-hosts", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app host")
    parser.add_argument("--rate-limit", type=int, default=2000, help="requests per client address per 10 s at the front")
    args = parser.parse_args(argv)
    running = Topology.load()
    if args.command == "up":
        if running is not None:
            print(f"already up (make cluster-down first); the front:\n{running.url}")
            return 0
        print("starting etcd, PostgreSQL x2 under Patroni, PgBouncer, app hosts, HAProxy ...", file=sys.stderr)
        topology = Topology(app_hosts=args.app_hosts, workers=args.workers, rate_limit=args.rate_limit, access_log=True).up()
        topology.save()
        topology.seed(20)
        print(f"an API token with every scope: {topology.issue_token()}", file=sys.stderr)
        print(f"up in {topology.timings} s; logs and data in {topology.workdir}; the front:", file=sys.stderr)
        print(topology.url)
        return 0
    if args.command == "status":
        if running is None:
            print("down")
            return 0
        print(f"front {running.url}: app hosts up {sorted(running.servers_up())}")
        for member in running.cluster_state():
            print(f"{member['name']} {member['host']}: {member['role']} {member['state']}")
        return 0
    if running is None:
        print("nothing to tear down")
        return 0
    running.down()
    STATE_FILE.unlink()
    STATE_FILE.parent.rmdir()
    print("down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
