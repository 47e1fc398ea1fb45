"""Capacity under an open model: the highest offered rate the service serves within a latency budget.

Starts the service (gunicorn --workers N) like `python -m load.run`, then runs
`bzt bzt-config.yml load/bzt-open.yml` once per offered rate, lowest first: USERS locust users,
each sending RATE/USERS requests per second (locust's constant_throughput), the usual traffic mix.
Each point is a full Taurus run with its own report (load/results/artifacts/<time>/report.html).

The capacity is the highest offered rate at which p99 stayed within --p99-budget-ms, no request
failed, and the generator delivered at least 95% of the offered rate (a closed loop hides
overload by sending less; an open model must not), below the first two misses in a row (on a
shared machine one miss alone can be noise; the table shows every point). The series stops there
unless --every-rate is given.

Writes --out (default reports/capacity/workers-N): capacity.md, capacity.json and
latency-vs-load.png (p50/p95/p99 and achieved rate against offered rate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from harness.processes import PROJECT_ROOT  # noqa: E402
from load.lab import markdown_table, max_user_id, prepare_database, serve  # noqa: E402
from load.run import BZT, RESULTS, database_name, newest_run, run_bzt  # noqa: E402
from load.sweep import int_list  # noqa: E402

DELIVERED = 0.95  # achieved / offered below this: the generator (or a stalled server) did not send the load


def measure_point(server, database: str, url: str, workers: int, top_id: int, rate: int, users: int, hold: str) -> dict:
    overrides = [
        "load/bzt-open.yml",
        "-o",
        f"execution.concurrency={users}",
        "-o",
        f"execution.hold-for={hold}",
        "-o",
        f"settings.env.LOAD_RATE_PER_USER={rate / users:g}",
    ]
    code = run_bzt(server, database, url, workers, top_id, overrides)
    run_dir = newest_run().resolve()
    figures = json.loads((run_dir / "summary.json").read_text())
    hold_seconds = max(1.0, figures["requests"] / max(figures["req/s"], 0.1))  # the whole run, ramp-up included
    context = json.loads((run_dir / "context.json").read_text()) if (run_dir / "context.json").exists() else {}
    return {
        "offered req/s": rate,
        "achieved req/s": figures["steady req/s"],
        "p50 ms": figures["steady p50 ms"],
        "p95 ms": figures["steady p95 ms"],
        "p99 ms": figures["steady p99 ms"],
        "failures": figures["failures"],
        "server CPU ms/req": figures.get("server CPU ms/request"),
        "generator cores": round(context.get("generator_cpu_seconds", 0) / hold_seconds, 2),
        "locust CPU warning": figures["locust CPU warning"],
        "bzt exit code": code,
        "report": str(run_dir.relative_to(PROJECT_ROOT) / "report.html"),
    }


def verdict(point: dict, budget_ms: float) -> str:
    if point["failures"]:
        return "failures"
    if point["achieved req/s"] < DELIVERED * point["offered req/s"]:
        return "generator-bound" if point["locust CPU warning"] else "not delivered"
    if point["p99 ms"] is None or point["p99 ms"] > budget_ms:
        return "over budget"
    return "within budget"


def capacity_of(points: list[dict]) -> tuple[int | None, dict | None]:
    """The highest rate within budget below the first two misses in a row (one miss alone can be the
    shared machine's noise), and that first miss."""
    capacity, first_miss = None, None
    for index, point in enumerate(points):
        if point["verdict"] == "within budget":
            capacity = point["offered req/s"]
        elif index + 1 == len(points) or points[index + 1]["verdict"] != "within budget":
            return capacity, point
    return capacity, first_miss


def chart(points: list[dict], budget_ms: float, title: str, path: Path) -> None:
    offered = [p["offered req/s"] for p in points]
    figure, axis = plt.subplots(figsize=(8, 4))
    for key, color in (("p50 ms", "tab:green"), ("p95 ms", "tab:orange"), ("p99 ms", "tab:red")):
        axis.plot(offered, [p[key] for p in points], marker="o", color=color, label=key.replace(" ms", ""))
    axis.axhline(budget_ms, color="black", linestyle=":", label=f"p99 budget {budget_ms:g} ms")
    axis.set_xlabel("offered load, requests/s")
    axis.set_ylabel("response time, ms")
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(ScalarFormatter())
    axis.yaxis.set_minor_formatter(NullFormatter())
    rate_axis = axis.twinx()
    rate_axis.plot(offered, [p["achieved req/s"] for p in points], color="tab:blue", linestyle="--", marker="x", label="achieved req/s")
    rate_axis.set_ylabel("achieved requests/s")
    rate_axis.set_ylim(0, max(offered) * 1.1)
    lines = axis.get_legend_handles_labels()[0] + rate_axis.get_legend_handles_labels()[0]
    axis.legend(lines, [line.get_label() for line in lines], loc="upper left", fontsize="small")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.capacity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: WEB_CONCURRENCY, else 2 per core)")
    parser.add_argument(
        "--rates",
        type=int_list,
        default=[100, 200, 400, 600, 800, 1000, 1200],
        help="offered requests/s, comma-separated (default: 100,200,400,600,800,1000,1200)",
    )
    parser.add_argument("--users", type=int, default=50, help="locust users sharing the offered rate (default: %(default)s)")
    parser.add_argument("--hold", default="20s", help="hold time of each point, Taurus syntax (default: %(default)s)")
    parser.add_argument("--p99-budget-ms", type=float, default=100.0, help="p99 response time allowed (default: %(default)s)")
    parser.add_argument(
        "--seed-users", type=int, default=10_000, help="make sure the table has at least this many users (default: %(default)s)"
    )
    parser.add_argument("--every-rate", action="store_true", help="measure every rate, also after two misses in a row (the whole curve)")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/capacity/workers-N)")
    args = parser.parse_args(argv)
    if not BZT.exists():
        raise SystemExit("error: Taurus is not installed; run `make install-load` first")

    settings, db = prepare_database(args.seed_users)
    url = db.url
    top_id = max_user_id(db)
    db.close()
    workers = args.workers or settings.workers
    out = args.out or PROJECT_ROOT / "reports" / "capacity" / f"workers-{workers}"
    out.mkdir(parents=True, exist_ok=True)
    server = serve("app:api", url, workers, RESULTS / "logs", ready_path="/readyz")
    points: list[dict] = []
    try:
        for rate in sorted(args.rates):
            point = measure_point(server, database_name(settings, url), url, workers, top_id, rate, args.users, args.hold)
            point["verdict"] = verdict(point, args.p99_budget_ms)
            points.append(point)
            print(
                f"offered {rate} req/s: achieved {point['achieved req/s']}, p99 {point['p99 ms']} ms, "
                f"{point['failures']} failures: {point['verdict']}",
                flush=True,
            )
            if not args.every_rate and len(points) >= 2 and all(p["verdict"] != "within budget" for p in points[-2:]):
                break
    finally:
        server.stop()

    capacity, first_miss = capacity_of(points)
    title = f"gunicorn --workers {workers}, {args.users} users, p99 budget {args.p99_budget_ms:g} ms"
    chart(points, args.p99_budget_ms, title, out / "latency-vs-load.png")
    result = {
        "workers": workers,
        "users": args.users,
        "hold": args.hold,
        "p99 budget ms": args.p99_budget_ms,
        "capacity req/s": capacity,
        "points": points,
    }
    (out / "capacity.json").write_text(json.dumps(result, indent=2))
    columns = [
        "offered req/s",
        "achieved req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "failures",
        "server CPU ms/req",
        "generator cores",
        "verdict",
    ]
    reason = (
        f"; first of two misses in a row: {first_miss['offered req/s']} req/s, {first_miss['verdict']}"
        if first_miss
        else "; every point was within budget (offer more)"
    )
    figure = f"{capacity} req/s" if capacity is not None else "below the lowest rate tried"
    text = (
        f"# Capacity: {title}\n\n"
        f"Capacity: **{figure}** offered "
        f"(p99 ≤ {args.p99_budget_ms:g} ms, no failures, ≥ {DELIVERED:.0%} delivered{reason}).\n\n"
        f"{markdown_table(points, columns)}\n\n![latency against offered load](latency-vs-load.png)\n"
    )
    (out / "capacity.md").write_text(text)
    print(text)
    print(f"written: {out.relative_to(PROJECT_ROOT) if out.is_relative_to(PROJECT_ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
