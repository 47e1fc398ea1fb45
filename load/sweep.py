"""Scaling sweep: gunicorn workers × concurrent users, each point bounded in time.

For each worker count, ONE gunicorn (`app:api`, the project's gunicorn.conf.py) is started,
driven with wrk at each user count (wrk connections = concurrent users, keep-alive), then
stopped. Every point records requests/s, p50/p95/p99, errors, and the CPU of the service
(gunicorn master + workers), of PostgreSQL (the cluster the service uses, when it runs on this
machine; else every `postgres` process) and of the load generator (wrk), plus how busy the whole
machine was, so the report can say where
throughput stops growing and which CPU consumer explains it.

wrk, not locust, produces every figure: on this 2-core machine locust tops out near 1,200
requests/s and would measure itself rather than the service.

Writes to --out: sweep.md (table + "where scaling stops", computed from the data),
sweep.json (raw), sweep.csv, throughput.png and p99.png (x = workers, one line per user count).

Database: DATABASE_URL when set, else the embedded PostgreSQL (EMBEDDED_PG_DIR, default .pgdata).
Other settings (WEB_THREADS, KEEPALIVE, ...) reach gunicorn through the environment as usual.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.processes import PROJECT_ROOT
from load.lab import (
    markdown_table,
    postmaster,
    prepare_database,
    run_wrk,
    serve,
    write_user_ids,
    wrk_path,
)
from queries import UserStore

GAIN_THRESHOLD = 0.10  # a step that adds less than this much throughput is where scaling stops
SATURATED = 0.85  # share of the machine's cores above which a point counts as CPU-saturated


@dataclass(frozen=True)
class Mix:
    script: str
    description: str
    list_percent: int


MIXES = {
    "get": Mix("get_user.lua", "GET /users/{id} for random existing ids", 0),
    "read-mix": Mix("mix.lua", "~90% GET /users/{id} for random existing ids, ~10% GET /users?limit=100 (first page)", 10),
}

COLUMNS = [
    ("workers", "workers"),
    ("users", "users"),
    ("rps", "requests/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("errors", "errors"),
    ("service_cpu_ms_per_request", "service CPU ms/req"),
    ("service_cpu_percent", "service CPU %"),
    ("db_cpu_ms_per_request", "PostgreSQL CPU ms/req"),
    ("db_cpu_percent", "PostgreSQL CPU %"),
    ("generator", "generator"),
    ("generator_cpu_percent", "generator CPU %"),
    ("cores_used", "svc+PG+gen cores"),
    ("machine_busy_cores", "machine busy cores"),
]


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more integers >= 1")
    return sorted(set(values))


def machine_busy_seconds() -> float:
    """CPU seconds spent by everything on the machine (all cores, anything but idle and iowait)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def wrk_version() -> str:
    result = subprocess.run([wrk_path(), "-v"], capture_output=True, text=True)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


def measure_point(server, mix: Mix, users: int, seconds: float, workers: int, env: dict, pg_master: psutil.Process | None) -> dict:
    """One wrk run; the lab's Measurement plus CPU shares in % of one core and the machine's busy cores.

    PostgreSQL CPU is that of the cluster the service uses (its postmaster's process tree) when it runs
    here, else of every `postgres` process on the machine.
    """
    busy_before, started = machine_busy_seconds(), time.monotonic()
    measurement = run_wrk(server, mix.script, users, seconds, f"{workers}w/{users}u", workers, env, database=pg_master)
    busy, elapsed = machine_busy_seconds() - busy_before, time.monotonic() - started
    row = measurement.row()
    row["users"] = row.pop("connections")
    row["db_cpu_scope"] = f"cluster of postmaster {pg_master.pid}" if pg_master else "every postgres process on the machine"
    service_cores = row["server_cpu_ms_per_request"] * row["rps"] / 1000
    db_cores = row["db_cpu_ms_per_request"] * row["rps"] / 1000
    generator_cores = row["generator_cpu_percent"] / 100
    row["service_cpu_ms_per_request"] = row.pop("server_cpu_ms_per_request")
    row["service_cpu_percent"] = round(service_cores * 100, 1)
    row["db_cpu_percent"] = round(db_cores * 100, 1)
    row["generator_cpu_ms_per_request"] = round(generator_cores * 1000 / max(row["rps"], 0.001), 3)
    row["cores_used"] = round(service_cores + db_cores + generator_cores, 2)
    row["machine_busy_cores"] = round(busy / elapsed, 2)
    row["seconds"] = seconds
    return row


def scaling_analysis(rows: list[dict], cores: int) -> tuple[str, dict[int, int | None]]:
    """The "where scaling stops" paragraph, and per user count the worker count after which gains fall below the threshold."""
    paragraphs, stops = [], {}
    for users in sorted({row["users"] for row in rows}):
        points = sorted((row for row in rows if row["users"] == users), key=lambda row: row["workers"])
        best = max(points, key=lambda row: row["rps"])
        stop = None
        for before, after in zip(points, points[1:]):
            if after["rps"] < before["rps"] * (1 + GAIN_THRESHOLD):
                stop = before
                break
        stops[users] = stop["workers"] if stop else None
        plural = lambda n: f"{n} worker" + ("s" if n != 1 else "")  # noqa: E731
        steps = ", ".join(
            f"{before['workers']}→{after['workers']}: {(after['rps'] / max(before['rps'], 0.001) - 1) * 100:+.0f}%"
            for before, after in zip(points, points[1:])
        )
        if len(points) < 2:
            text = f"**{users} users**: one worker count only ({points[0]['workers']}), so no scaling step to judge."
        elif stop is None:
            text = (
                f"**{users} users**: throughput still grows by ≥{GAIN_THRESHOLD:.0%} at every step ({steps}); "
                f"scaling has not stopped within {points[-1]['workers']} workers."
            )
        else:
            text = (
                f"**{users} users**: scaling stops after **{plural(stop['workers'])}** "
                f"(gains per step {steps}; best {best['rps']:.0f} req/s at {plural(best['workers'])})."
            )
        # Why: the CPU picture at the point where it stops (or the last point if it never does).
        at = stop or points[-1]
        total_ms = at["service_cpu_ms_per_request"] + at["db_cpu_ms_per_request"] + at["generator_cpu_ms_per_request"]
        ceiling = cores * 1000 / total_ms if total_ms else float("inf")
        others = max(at["machine_busy_cores"] - at["cores_used"], 0.0)
        shares = sorted(
            [
                ("the service", at["service_cpu_percent"]),
                ("PostgreSQL", at["db_cpu_percent"]),
                ("wrk", at["generator_cpu_percent"]),
                ("other processes on the machine", others * 100),
            ],
            key=lambda item: -item[1],
        )
        text += (
            f" At {plural(at['workers'])} the service uses {at['service_cpu_percent'] / 100:.2f} cores, "
            f"PostgreSQL {at['db_cpu_percent'] / 100:.2f}, wrk {at['generator_cpu_percent'] / 100:.2f}: "
            f"**{at['cores_used']:.2f} of {cores} cores** ({at['cores_used'] / cores:.0%}), "
            f"the whole machine {at['machine_busy_cores']:.2f} cores busy"
            + (f" ({others:.2f} by other processes)" if others >= 0.05 else "")
            + ". "
        )
        if at["machine_busy_cores"] >= SATURATED * cores or at["cores_used"] >= SATURATED * cores:
            text += (
                f"The CPU is saturated, so more workers only share the same cores: the limit is CPU, the largest consumer being "
                f"{shares[0][0]} ({shares[0][1]:.0f}% of a core), then {shares[1][0]} ({shares[1][1]:.0f}%). "
            )
            if shares[0][0].startswith("other"):
                text += (
                    "Most of that CPU went to other work on this shared machine, so this point shows the machine's limit "
                    "rather than the service's: rerun it on a quiet machine. "
                )
        else:
            text += (
                "The CPU is not saturated, so the limit is elsewhere (waiting: database round trips, connection or thread "
                "limits, lock contention) rather than CPU. "
            )
        text += (
            f"Each request costs {total_ms:.2f} ms of CPU in total (service {at['service_cpu_ms_per_request']:.2f}, "
            f"PostgreSQL {at['db_cpu_ms_per_request']:.2f}, wrk {at['generator_cpu_ms_per_request']:.2f}), "
            f"so {cores} cores cannot serve more than ~{ceiling:.0f} req/s"
            + (
                f" (~{ceiling * max(cores - others, 0) / cores:.0f} on the {cores - others:.2f} cores not taken by other processes)"
                if others >= 0.05
                else ""
            )
            + f"; measured {at['rps']:.0f} ({at['rps'] / ceiling:.0%} of the full-machine figure)."
        )
        last = points[-1]
        if last is not at and len(points) > 1:
            text += (
                f" Beyond it, up to {last['workers']} workers: {last['rps']:.0f} req/s "
                f"({(last['rps'] / max(at['rps'], 0.001) - 1) * 100:+.0f}%), p99 {at['p99_ms']:.1f} → {last['p99_ms']:.1f} ms."
            )
        paragraphs.append(text)
    return "\n\n".join(paragraphs), stops


def _x_axis(ax, workers: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(workers)
    ax.set_xticklabels([str(value) for value in workers])
    ax.minorticks_off()
    ax.set_xlim(min(workers) / 1.4, max(workers) * 1.4)
    ax.set_xlabel("gunicorn workers (log2 scale)")


def write_charts(rows: list[dict], out: Path, cores: int, stops: dict[int, int | None], title_suffix: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = sorted({row["workers"] for row in rows})
    user_counts = sorted({row["users"] for row in rows})
    by_users = {users: sorted((row for row in rows if row["users"] == users), key=lambda row: row["workers"]) for users in user_counts}
    colours = plt.get_cmap("tab10")
    paths = []

    # Throughput, and below it the CPU that explains it (stacked per consumer, one bar per user count).
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8.5), sharex=False, gridspec_kw={"height_ratios": [3, 2]})
    for index, users in enumerate(user_counts):
        points = by_users[users]
        stop = stops.get(users)
        label = f"{users} users" + (f" (gains <{GAIN_THRESHOLD:.0%} after {stop} w)" if stop else "")
        top.plot([p["workers"] for p in points], [p["rps"] for p in points], marker="o", color=colours(index), label=label)
        for point in points:
            # the highest value at this worker count is labelled above its marker, the others below theirs
            highest = max(p["rps"] for p in rows if p["workers"] == point["workers"])
            top.annotate(
                f"{point['rps']:.0f}",
                (point["workers"], point["rps"]),
                textcoords="offset points",
                xytext=(0, 7 if point["rps"] >= highest else -14),
                ha="center",
                fontsize=8,
                color=colours(index),
            )
        if stop:
            top.axvline(stop, color=colours(index), linestyle=":", linewidth=1)
    _x_axis(top, workers)
    top.set_ylabel("requests/s")
    top.set_ylim(bottom=0, top=max(row["rps"] for row in rows) * 1.15)
    top.grid(True, alpha=0.3)
    top.legend(loc="lower right")
    top.set_title(f"Throughput vs workers (wrk)\n{title_suffix}")

    width = 0.8 / len(user_counts)
    parts = [
        ("service_cpu_percent", "service (gunicorn)", "tab:blue"),
        ("db_cpu_percent", "PostgreSQL", "tab:orange"),
        ("generator_cpu_percent", "wrk", "tab:green"),
    ]
    for index, users in enumerate(user_counts):
        points = {p["workers"]: p for p in by_users[users]}
        xs = [i + (index - (len(user_counts) - 1) / 2) * width for i in range(len(workers))]
        base = [0.0] * len(workers)
        for key, name, colour in parts:
            heights = [points[w][key] / 100 if w in points else 0 for w in workers]
            bottom.bar(
                xs,
                heights,
                width * 0.9,
                bottom=base,
                color=colour,
                edgecolor="white",
                hatch="//" if index % 2 else None,
                label=name if index == 0 else None,
            )
            base = [b + h for b, h in zip(base, heights)]
        others = [max(points[w]["machine_busy_cores"] - points[w]["cores_used"], 0) if w in points else 0 for w in workers]
        bottom.bar(
            xs,
            others,
            width * 0.9,
            bottom=base,
            color="lightgrey",
            edgecolor="white",
            hatch="//" if index % 2 else None,
            label="other processes" if index == 0 else None,
        )
        for x, w in zip(xs, workers):
            if w in points:
                bottom.annotate(f"{users}u", (x, 0), textcoords="offset points", xytext=(0, -11), ha="center", fontsize=7)
    bottom.axhline(cores, color="red", linestyle="--", linewidth=1, label=f"machine: {cores} cores")
    bottom.set_xticks(range(len(workers)))
    bottom.set_xticklabels([f"\n{w}" for w in workers])
    bottom.set_xlabel("gunicorn workers (bars: one per user count; hatched = second user count)")
    bottom.set_ylabel("CPU cores used")
    bottom.set_ylim(0, max(cores, max(max(row["machine_busy_cores"], row["cores_used"]) for row in rows)) * 1.35)
    bottom.grid(True, axis="y", alpha=0.3)
    bottom.legend(loc="upper center", fontsize=8, ncol=5, frameon=False)
    bottom.set_title("Where the CPU went (what limits the throughput above)", fontsize=10)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for index, users in enumerate(user_counts):
        points = by_users[users]
        ax.plot(
            [p["workers"] for p in points], [p["p99_ms"] for p in points], marker="o", color=colours(index), label=f"{users} users, p99"
        )
        ax.plot(
            [p["workers"] for p in points],
            [p["p50_ms"] for p in points],
            marker=".",
            linestyle="--",
            color=colours(index),
            alpha=0.6,
            label=f"{users} users, p50",
        )
        for point in points:
            ax.annotate(
                f"{point['p99_ms']:.0f}",
                (point["workers"], point["p99_ms"]),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
                color=colours(index),
            )
    _x_axis(ax, workers)
    ax.set_ylabel("latency, ms")
    ax.set_ylim(bottom=0, top=max(row["p99_ms"] for row in rows) * 1.15)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"p99 latency vs workers (wrk; dashed: p50)\n{title_suffix}")
    fig.tight_layout()
    path = out / "p99.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def write_report(rows: list[dict], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cores = meta["cores"]
    analysis, stops = scaling_analysis(rows, cores) if rows else ("No point was measured.", {})
    table = markdown_table(rows, [key for key, _ in COLUMNS]) if rows else ""
    if rows:  # the lab's table takes the keys as headers: put the readable names in the header line
        lines = table.splitlines()
        lines[0] = "| " + " | ".join(name for _, name in COLUMNS) + " |"
        table = "\n".join(lines)
    report = "\n".join(
        [
            f"# Scaling sweep: workers × concurrent users ({meta['date']})",
            "",
            f'- machine: {cores} cores ({meta["machine"]}); the machine is shared, see "machine busy cores"',
            f"- service: `gunicorn app:api`, gthread, {meta['threads']} threads per worker; one server per worker count",
            f"- requests: {meta['mix_description']} (`--mix {meta['mix']}`, load/wrk/{meta['script']}); {meta['users_in_table']} users in the table",
            f"- each point: {meta['warmup']:g} s warm-up (not measured), then {meta['seconds']:g} s measured",
            f"- generator of **every** figure: {meta['wrk_version']}, 2 threads, keep-alive, 3 s timeout, one connection per concurrent user; "
            'its CPU is in "generator CPU %". Locust is not used for throughput: on this machine it tops out near 1,200 req/s '
            "and would measure itself",
            "- CPU % = % of one core over the measured run (100% = one core busy); ms/req = CPU milliseconds per request; "
            f'PostgreSQL = {meta["postgres_cpu_scope"]} (the one the service uses); "svc+PG+gen cores" = the three added up, '
            '"machine busy cores" = all processes (includes other work on the machine)',
            "",
            table,
            "",
            "## Where scaling stops",
            "",
            f"Rule: scaling stops at the worker count after which one more step adds less than {GAIN_THRESHOLD:.0%} requests/s; "
            f"a point counts as CPU-saturated when ≥{SATURATED:.0%} of the {cores} cores are busy.",
            "",
            analysis,
            "",
            "Charts: throughput.png (requests/s per worker count, and the CPU per consumer under it), p99.png. Raw data: sweep.json, sweep.csv.",
            "",
        ]
    )
    (out / "sweep.md").write_text(report)
    (out / "sweep.json").write_text(
        json.dumps({"meta": meta, "points": rows, "scaling_stops_after_workers": {str(k): v for k, v in stops.items()}}, indent=2) + "\n"
    )
    fields = [key for key, _ in COLUMNS] + sorted({key for row in rows for key in row} - {key for key, _ in COLUMNS})
    with open(out / "sweep.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        write_charts(rows, out, cores, stops, f"{cores} cores, {meta['date']}, {meta['mix']} mix, {meta['seconds']:g} s per point")
    print(report, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workers",
        type=int_list,
        default=int_list("1,2,4,8"),
        metavar="N,N,...",
        help="comma-separated gunicorn worker counts; one server is started per count (default: 1,2,4,8)",
    )
    parser.add_argument(
        "--users",
        type=int_list,
        default=int_list("100,500"),
        metavar="N,N,...",
        help="comma-separated concurrent user counts = wrk connections, each a keep-alive client "
        "sending its next request as soon as the previous answer arrives (default: 100,500)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=20,
        help="measured length of each point, in seconds, rounded to whole seconds by wrk (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=float, default=3, help="unmeasured wrk run before each point, in seconds; 0 skips it (default: %(default)s)"
    )
    parser.add_argument(
        "--seed-users",
        type=int,
        default=100_000,
        help="seed the users table up to this many rows before the sweep (existing rows are kept) (default: %(default)s)",
    )
    parser.add_argument(
        "--mix",
        choices=sorted(MIXES),
        default="get",
        help="what the generator requests: "
        + "; ".join(f"'{name}' = {mix.description}" for name, mix in MIXES.items()).replace("%", "%%")
        + " (default: %(default)s)",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="measure nothing: rewrite sweep.md, sweep.csv and the charts from the sweep.json already in --out",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "reports" / "sweep",
        help="report folder: sweep.md, sweep.json, sweep.csv, throughput.png, p99.png, logs/ (default: reports/sweep)",
    )
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.replot:
        saved = json.loads((args.out / "sweep.json").read_text())
        write_report(saved["points"], saved["meta"], args.out)
        return
    wrk_path()  # fail before seeding if the generator is missing
    mix = MIXES[args.mix]

    settings, db = prepare_database(args.seed_users)
    url = db.url
    users_in_table = UserStore(db).count()
    args.out.mkdir(parents=True, exist_ok=True)
    ids_file = write_user_ids(db, args.out / "user-ids.txt")
    db.close()
    pg_master = postmaster(url)
    env = {"USER_IDS_FILE": str(ids_file), "LIST_PERCENT": str(mix.list_percent), "PAGE_LIMIT": "100"}
    cores = os.cpu_count() or 1
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cores": cores,
        "machine": f"{platform.machine()}, {round(psutil.virtual_memory().total / 2**30)} GiB, Python {platform.python_version()}",
        "threads": settings.threads,
        "mix": args.mix,
        "mix_description": mix.description,
        "script": mix.script,
        "users_in_table": users_in_table,
        "workers": args.workers,
        "users": args.users,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "wrk_version": wrk_version(),
        "generator": "wrk, 2 threads, 3 s timeout",
        "postgres_cpu_scope": f"cluster of postmaster {pg_master.pid}" if pg_master else "every postgres process on the machine",
    }
    rows: list[dict] = []
    try:
        for workers in args.workers:
            server = serve("app:api", url, workers, args.out / "logs", ready_path="/readyz")
            try:
                for users in args.users:
                    if args.warmup:
                        run_wrk(server, mix.script, users, args.warmup, "warm-up", workers, env)
                    rows.append(measure_point(server, mix, users, args.seconds, workers, env, pg_master))
                    row = rows[-1]
                    print(
                        f"  {workers} workers, {users} users: {row['rps']} req/s, p99 {row['p99_ms']} ms, {row['errors']} errors, "
                        f"cores svc {row['service_cpu_percent'] / 100:.2f} pg {row['db_cpu_percent'] / 100:.2f} "
                        f"wrk {row['generator_cpu_percent'] / 100:.2f} machine {row['machine_busy_cores']:.2f}",
                        flush=True,
                    )
            finally:
                server.stop()
    finally:
        write_report(rows, meta, args.out)


if __name__ == "__main__":
    main()
