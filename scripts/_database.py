"""What every script needs: settings, the database (embedded when DATABASE_URL is unset), a bounded wait."""

from __future__ import annotations

import argparse
import time

import peewee

import embedded
import models
from problems import first_line
from settings import Settings, SettingsError, load_settings


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the database to answer before giving up (default: %(default)s)",
    )


def connect(wait_seconds: float) -> tuple[Settings, str]:
    """Bind the models and wait until the database answers; exit with one line if it never does.

    Returns the settings and the database URL in use."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"error: configuration: {exc}") from None
    if settings.uses_embedded_database:
        try:
            url = embedded.start(settings.embedded_pg_dir)
        except Exception as exc:
            raise SystemExit(f"error: could not start the embedded PostgreSQL in {settings.embedded_pg_dir}: {exc}") from None
    else:
        url = settings.database_url
    models.bind_database(url, statement_timeout_ms=0, connect_timeout=settings.connect_timeout)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            models.ping()
            return settings, url
        except peewee.OperationalError as exc:
            models.discard_connection()
            if time.monotonic() >= deadline:
                raise SystemExit(
                    f"error: database {models.describe_database(url)} did not answer within {wait_seconds:g} s: {first_line(exc)}"
                ) from None
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
