"""Building blocks of the load lab: the database, servers under test, wrk runs, CPU accounting."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

import migrations
from database import Database, OperationalError, admin_connection
from harness.processes import PROJECT_ROOT, Gunicorn, issue_token
from load.process_cpu import cpu_seconds, tree_cpu
from queries import UserStore
from scripts._database import connect
from scripts.seed_users import seed
from settings import Settings

WRK_DIR = PROJECT_ROOT / "load" / "wrk"


@dataclass
class Measurement:
    label: str
    workers: int
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms_per_request: float
    db_cpu_ms_per_request: float
    generator: str
    generator_cpu_percent: float

    def row(self) -> dict:
        return asdict(self)


def prepare_database(min_users: int) -> tuple[Settings, Database]:
    """The server the lab uses (DATABASE_URL or the embedded one), migrated, with at least `min_users` rows."""
    settings, db = connect(wait_seconds=30)
    migrations.apply(db, report=lambda line: None)
    missing = min_users - UserStore(db).count()
    if missing > 0:
        seed(db, missing, quiet=True)
    db.execute_sql("VACUUM ANALYZE users")
    db.close()
    return settings, db


def max_user_id(db: Database) -> int:
    return db.execute_sql("SELECT max(id) FROM users").fetchone()[0] or 1


def write_user_ids(db: Database, path: Path, count: int = 10_000) -> Path:
    """A sample of existing ids, one a line, for load scripts that GET /users/{id}."""
    rows = db.execute_sql("SELECT id FROM users ORDER BY random() LIMIT %s", (count,)).fetchall()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{row[0]}\n" for row in rows))
    return path


def serve(
    app: str,
    url: str,
    workers: int,
    log_dir: Path,
    ready_path: str,
    extra_env: dict | None = None,
    extra_args: tuple[str, ...] = (),
    tree: Path = PROJECT_ROOT,
    label: str = "",
) -> Gunicorn:
    """`gunicorn <app>` with the gunicorn.conf.py of `tree` (this checkout) and `workers` workers, started."""
    env = {"DATABASE_URL": url, **(extra_env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    name = f"{app.replace(':', '_')}-{workers}w{label}" + ("" if tree == PROJECT_ROOT else f"-{tree.name}")
    server = Gunicorn(
        env,
        "--workers",
        str(workers),
        *extra_args,
        log_path=log_dir / f"{name}.log",
        app=app,
        tree=tree,
        token=issue_token(url, "load lab"),
    )
    return server.start(ready_path=ready_path)


def postgres_cpu() -> float:
    """CPU seconds of every live postgres process on the machine (when the service's cluster is unknown)."""
    return cpu_seconds(proc for proc in psutil.process_iter(["name"]) if proc.info["name"] == "postgres")


def postmaster(url: str) -> psutil.Process | None:
    """The postmaster of the server at `url` when it runs on this machine (found through a backend's parent), else None."""
    try:
        with admin_connection(url, timeout=5) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
            parent = psutil.Process(backend).parent()
            return parent if parent is not None and parent.name() == "postgres" else None
    except (OperationalError, psutil.Error):
        return None


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("error: wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return path


def wrk_run(url: str, script: str, connections: int, seconds: float, token: str, env: dict | None = None) -> tuple[list[str], dict]:
    """The wrk command (2 threads, 3 s timeout, `script` from load/wrk, JSON summary) and its environment."""
    command = [wrk_path(), "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "3s"]
    command += ["-s", str(WRK_DIR / script), url]
    return command, {**os.environ, "WRK_REPORT_LUA": str(WRK_DIR / "report.lua"), "AUTH_TOKEN": token, **(env or {})}


def run_wrk(
    server: Gunicorn,
    script: str,
    connections: int,
    seconds: float,
    label: str,
    workers: int,
    env: dict | None = None,
    database: psutil.Process | None = None,
) -> Measurement:
    """Drive `server` with wrk (2 threads, 3 s timeout) and account the CPU of everyone involved.

    PostgreSQL CPU is that of the cluster whose postmaster is `database` (see `postmaster()`),
    else of every postgres process on the machine.
    """
    command, wrk_env = wrk_run(f"http://127.0.0.1:{server.port}", script, connections, seconds, server.token or "", env)
    master = psutil.Process(server.master_pid)
    database_cpu = (lambda: tree_cpu(database)) if database else postgres_cpu
    server_before, db_before = tree_cpu(master), database_cpu()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    output = subprocess.run(command, env=wrk_env, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    elapsed = time.monotonic() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu, db_cpu = tree_cpu(master) - server_before, database_cpu() - db_before
    generator_cpu = (children_after.ru_utime - children_before.ru_utime) + (children_after.ru_stime - children_before.ru_stime)
    figures = json.loads(output.strip().splitlines()[-1])
    requests = max(figures["requests"], 1)
    errors = sum(figures[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx"))
    return Measurement(
        label=label,
        workers=workers,
        connections=connections,
        requests=figures["requests"],
        rps=round(figures["requests"] / (figures["duration_us"] / 1e6), 1),
        p50_ms=figures["p50_us"] / 1000,
        p95_ms=figures["p95_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        errors=errors,
        server_cpu_ms_per_request=round(server_cpu * 1000 / requests, 3),
        db_cpu_ms_per_request=round(db_cpu * 1000 / requests, 3),
        generator="wrk 2 threads",
        generator_cpu_percent=round(generator_cpu * 100 / elapsed, 1),
    )


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines)
