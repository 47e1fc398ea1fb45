"""Apply the pending schema migrations (numbered SQL files in migrations/), in order.

Safe to run from several hosts at once: they take turns on a PostgreSQL advisory lock,
and each migration runs in its own transaction. Running it again when the schema is
current changes nothing.
"""

from __future__ import annotations

import argparse

import migrations
from queries import UserStore
from scripts._database import add_wait_option, connect


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.migrate",
        description=__doc__ + " Uses DATABASE_URL, or the embedded PostgreSQL when it is unset.",
    )
    parser.add_argument("--status", action="store_true", help="only print the schema version and what is pending")
    add_wait_option(parser)
    args = parser.parse_args(argv)
    _, db = connect(args.wait)
    try:
        needed = migrations.latest()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.status:
        with db.connection_context():
            found = db.current_schema_version()
        print(f"schema version {found}; this code needs {needed}" + ("" if found >= needed else f": {needed - found} pending"))
        return
    applied = migrations.apply(db)
    print(f"schema at version {needed} ({len(applied)} applied now); users: {UserStore(db).count()} rows")


if __name__ == "__main__":
    main()
