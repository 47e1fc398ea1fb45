"""Print postgresql.conf settings for a machine, following PgTune's rules.

The rules are those of the PgTune web app (github.com/le0pard/pgtune) for
the "web" application type on Linux, as in its configurationSlice.js
selectors.  Run from the repository root:

    python -m scripts.pgtune --memory 24GB --cpus 2
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

from settings import SettingsError, load_settings

KB = 1024
MB_IN_KB = 1024
GB_IN_KB = 1024 * 1024

STORAGE_TYPES = ("ssd", "hdd", "san")

RANDOM_PAGE_COST = {"ssd": "1.1", "hdd": "4", "san": "1.1"}
EFFECTIVE_IO_CONCURRENCY = {"ssd": 200, "hdd": 2, "san": 300}

# PostgreSQL's own max_worker_processes default; pgtune budgets work_mem
# against it when it does not emit parallel settings (fewer than 4 cores).
DEFAULT_MAX_WORKER_PROCESSES = 8

_UNITS = {
    "": 1,
    "B": 1,
    "K": KB,
    "KB": KB,
    "M": KB**2,
    "MB": KB**2,
    "G": KB**3,
    "GB": KB**3,
    "T": KB**4,
    "TB": KB**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def format_kb(value_kb: int) -> str:
    """Render kB in the largest unit that loses nothing (as pgtune prints)."""
    if value_kb % GB_IN_KB == 0:
        return f"{value_kb // GB_IN_KB}GB"
    if value_kb % MB_IN_KB == 0:
        return f"{value_kb // MB_IN_KB}MB"
    return f"{value_kb}kB"


def parse_size(text: str) -> int:
    """Parse a size such as '24GB', '512MB' or '1.5G' into bytes (binary units)."""
    match = _SIZE_RE.match(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS or (unit in ("", "B") and "." in match.group(1)):
        raise ValueError(f"invalid size {text!r}: expected a number with a unit, e.g. 24GB or 512MB")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < KB:
        raise ValueError(f"invalid size {text!r}: must be at least 1kB")
    return size


def machine_memory_bytes() -> int:
    """Total RAM of this machine, from /proc/meminfo or else os.sysconf."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * KB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tune(
    memory_bytes: int,
    cpus: int,
    storage: str,
    db_version: int,
    max_connections: int,
) -> dict[str, str]:
    """Return PgTune's "web" settings as postgresql.conf name -> value, in pgtune's order."""
    if storage not in STORAGE_TYPES:
        raise ValueError(f"storage must be one of {', '.join(STORAGE_TYPES)}, not {storage!r}")
    if memory_bytes < KB or cpus < 1 or max_connections < 1:
        raise ValueError("memory_bytes, cpus and max_connections must be positive")

    total_kb = memory_bytes // KB
    shared_buffers = total_kb // 4
    effective_cache_size = total_kb * 3 // 4
    maintenance_work_mem = min(total_kb // 16, 2 * GB_IN_KB)

    # PostgreSQL's own wal_buffers auto-tuning: 3% of shared_buffers, at most
    # 16MB; pgtune rounds values just under 16MB up to it, and floors at 32kB.
    wal_buffers = min(3 * shared_buffers // 100, 16 * MB_IN_KB)
    if 14 * MB_IN_KB < wal_buffers < 16 * MB_IN_KB:
        wal_buffers = 16 * MB_IN_KB
    wal_buffers = max(wal_buffers, 32)

    parallel: dict[str, int] = {}
    if cpus >= 4:
        # pgtune caps per-query workers at 4: more rarely pays off for web loads.
        half = min(math.ceil(cpus / 2), 4)
        parallel["max_worker_processes"] = cpus
        parallel["max_parallel_workers_per_gather"] = half
        if db_version >= 10:
            parallel["max_parallel_workers"] = cpus
        if db_version >= 11:
            parallel["max_parallel_maintenance_workers"] = half

    # A query may use work_mem several times (sorts, hashes), and parallel
    # workers get their own, so pgtune spreads what shared_buffers leaves over
    # 3 allocations per connection plus per worker process.
    worker_processes = parallel.get("max_worker_processes", DEFAULT_MAX_WORKER_PROCESSES)
    work_mem = max(
        math.floor((total_kb - shared_buffers) / ((max_connections + worker_processes) * 3)),
        64,
    )

    settings = {
        "max_connections": str(max_connections),
        "shared_buffers": format_kb(shared_buffers),
        "effective_cache_size": format_kb(effective_cache_size),
        "maintenance_work_mem": format_kb(maintenance_work_mem),
        "checkpoint_completion_target": "0.9",
        "wal_buffers": format_kb(wal_buffers),
        "default_statistics_target": "100",
        "random_page_cost": RANDOM_PAGE_COST[storage],
        "effective_io_concurrency": str(EFFECTIVE_IO_CONCURRENCY[storage]),
        "work_mem": format_kb(work_mem),
        "huge_pages": "try" if total_kb >= 32 * GB_IN_KB else "off",
        "min_wal_size": format_kb(1 * GB_IN_KB),
        "max_wal_size": format_kb(4 * GB_IN_KB),
    }
    settings.update({name: str(value) for name, value in parallel.items()})
    return settings


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_at_least(minimum: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    """Command line options; every one is described in --help."""
    try:
        service = load_settings()  # the worker and thread counts the service itself would use
    except SettingsError as exc:
        raise SystemExit(f"error: configuration: {exc}") from None
    parser = argparse.ArgumentParser(
        prog="python -m scripts.pgtune",
        description=(
            "Print postgresql.conf settings for this API's database server, computed "
            "with PgTune's rules for a 'web' application on Linux. "
            "max_connections = workers * connections-per-worker + extra-connections."
        ),
    )
    parser.add_argument(
        "--memory",
        type=_size_arg,
        default=None,
        help="RAM available to PostgreSQL, with a binary unit: kB, MB, GB or TB "
        "(e.g. 24GB, 512MB). Default: this machine's total RAM from /proc/meminfo "
        "(ignores container memory limits).",
    )
    parser.add_argument(
        "--cpus",
        type=_int_at_least(1),
        default=os.cpu_count() or 1,
        help="CPU cores available to PostgreSQL; parallel query settings are "
        "emitted only for 4 or more. Default: os.cpu_count() (%(default)s here).",
    )
    parser.add_argument(
        "--storage",
        choices=STORAGE_TYPES,
        default="ssd",
        help="data storage type; sets random_page_cost and effective_io_concurrency. Default: %(default)s.",
    )
    parser.add_argument(
        "--db-version",
        type=_int_at_least(10),
        default=15,
        help="PostgreSQL major version (10 or later); older versions lack some parallel settings. Default: %(default)s.",
    )
    parser.add_argument(
        "--workers",
        type=_int_at_least(1),
        default=service.workers,
        help="number of gunicorn worker processes serving the API. "
        "Default: the service's own, WEB_CONCURRENCY or 2 per core (here %(default)s).",
    )
    parser.add_argument(
        "--connections-per-worker",
        type=_int_at_least(1),
        default=service.db_pool_size if service.worker_class == "gevent" else service.threads,
        help="database connections each gunicorn worker may hold: its pool (gevent) or one per thread (gthread). "
        "Default: the service's own, DB_POOL_SIZE or WEB_THREADS (here %(default)s).",
    )
    parser.add_argument(
        "--extra-connections",
        type=_int_at_least(0),
        default=10,
        help="connections reserved for scripts, psql sessions and the superuser. Default: %(default)s.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse options, compute the settings and print them."""
    args = build_parser().parse_args(argv)
    memory_bytes = args.memory if args.memory is not None else machine_memory_bytes()
    max_connections = args.workers * args.connections_per_worker + args.extra_connections
    settings = tune(memory_bytes, args.cpus, args.storage, args.db_version, max_connections)
    print(
        f"# PgTune (web, linux) for {format_kb(memory_bytes // KB)} RAM, {args.cpus} CPUs, "
        f"{args.storage}, PostgreSQL {args.db_version}, max_connections {max_connections} "
        f"= {args.workers} workers * {args.connections_per_worker} + {args.extra_connections} extra"
    )
    for name, value in settings.items():
        print(f"{name} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
