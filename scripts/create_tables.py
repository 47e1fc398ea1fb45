"""Create the tables and indexes (idempotent: existing ones are left as they are)."""

from __future__ import annotations

import argparse

import models
from scripts._database import add_wait_option, connect


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.create_tables",
        description=__doc__ + " Uses DATABASE_URL, or the embedded PostgreSQL when it is unset.",
    )
    add_wait_option(parser)
    args = parser.parse_args(argv)
    connect(args.wait)
    models.create_schema()
    print(f"tables ready: users ({models.count_users()} rows)")


if __name__ == "__main__":
    main()
