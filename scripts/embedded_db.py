"""Manage the embedded PostgreSQL used when DATABASE_URL is unset (data in EMBEDDED_PG_DIR, default ./.pgdata)."""

from __future__ import annotations

import argparse

import embedded
from settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.embedded_db", description=__doc__)
    parser.add_argument(
        "action",
        choices=("start", "stop", "status", "url"),
        help="start: initialise if needed and start; stop: fast shutdown; status: running or not; url: print its DATABASE_URL",
    )
    args = parser.parse_args(argv)
    try:
        data_dir = load_settings().embedded_pg_dir
    except SettingsError as exc:
        raise SystemExit(f"error: configuration: {exc}") from None
    if args.action == "start":
        url, started = embedded.start(data_dir)
        print(f"embedded PostgreSQL {'started' if started else 'already running'} at {url}")
    elif args.action == "stop":
        print("stopped" if embedded.stop(data_dir) else "not running")
    else:
        url = embedded.running_url(data_dir)
        if url is None:
            raise SystemExit(f"embedded PostgreSQL in {data_dir} is not running")
        print(url if args.action == "url" else f"running at {url}")


if __name__ == "__main__":
    main()
