"""What every script needs: settings, the database (embedded when DATABASE_URL is unset), a bounded wait."""

from __future__ import annotations

import argparse
import time

import embedded
from database import Database, Misconfigured, OperationalError, describe, first_line
from settings import Settings, SettingsError, load_settings


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the database to answer before giving up (default: %(default)s)",
    )


def connect(wait_seconds: float) -> tuple[Settings, Database]:
    """The settings and the database, once it answers; exit with one line if it never does, or refuses the configuration."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"error: configuration: {exc}") from None
    if settings.uses_embedded_database:
        try:
            url, started = embedded.start(settings.embedded_pg_dir)
        except Exception as exc:
            raise SystemExit(f"error: could not start the embedded PostgreSQL in {settings.embedded_pg_dir}: {exc}") from None
        if started:
            print(f"started the embedded PostgreSQL (data in {settings.embedded_pg_dir}) at {url}; `make stop-db` stops it")
    else:
        url = settings.database_url
    db = Database(url, connect_timeout=settings.connect_timeout)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            db.ping()
            return settings, db
        except Misconfigured as exc:  # waiting cannot heal it: say so now
            raise SystemExit(f"error: database {describe(url)} refuses this configuration: {exc.cause}") from None
        except OperationalError as exc:
            db.discard()
            if time.monotonic() >= deadline:
                raise SystemExit(f"error: database {describe(url)} did not answer within {wait_seconds:g} s: {first_line(exc)}") from None
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
