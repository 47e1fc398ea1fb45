"""Add COUNT users with random 8-hex-character usernames, in bulk, with a progress bar.

Names that are already taken are skipped and replaced, so running it again never fails
and always adds COUNT new users (within --max-rounds). Pending schema migrations are
applied first. Into an empty table (and COUNT of
at least 10000) it loads like `pgbench -i`: rows first, indexes built at the end, in one
transaction that readers wait for.
"""

from __future__ import annotations

import argparse
import time

from tqdm import tqdm

import migrations
import seeding
from database import Database
from queries import UserStore
from scripts._database import add_wait_option, connect

# Below this, the plain path is fast enough and keeps the table's indexes in place.
BULK_THRESHOLD = 10_000


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def seed(db: Database, count: int, batch: int = 100_000, max_rounds: int = 1000, quiet: bool = False) -> int:
    """Add `count` users (see the module doc); the number added."""
    with tqdm(total=count, unit="users", disable=quiet) as progress:
        added = 0
        batches = max(1, -(-count // batch))
        if UserStore(db).count() == 0 and count >= BULK_THRESHOLD:
            with seeding.bulk_loading(db) as load:
                for part in range(batches):
                    inserted = load(min(batch, count - added), part, batches)
                    added += inserted
                    progress.update(inserted)
                progress.set_postfix_str("building indexes")
        # Top up what duplicate draws left short (and the whole count on a non-empty table).
        for round_number in range(max_rounds):
            if added >= count:
                break
            with db.atomic():
                inserted = seeding.seed_random_users(db, min(batch, count - added), round_number % batches, batches)
            added += inserted
            progress.update(inserted)
    return added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.seed_users", description=__doc__)
    parser.add_argument("count", type=positive, help="how many users to add")
    parser.add_argument("--batch", type=positive, default=100_000, help="users per transaction (default: %(default)s)")
    parser.add_argument(
        "--max-rounds",
        type=positive,
        default=1000,
        help="stop after this many batches even if duplicates kept the total short (default: %(default)s)",
    )
    parser.add_argument("--if-empty", action="store_true", help="add users only when the table has none (for `make run`)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_wait_option(parser)
    args = parser.parse_args(argv)
    _, db = connect(args.wait)
    migrations.apply(db)
    users = UserStore(db)
    if args.if_empty and users.count():
        print(f"the table already has {users.count()} users; none added (--if-empty)")
        return
    started = time.monotonic()
    added = seed(db, args.count, args.batch, args.max_rounds, args.quiet)
    elapsed = time.monotonic() - started
    print(f"added {added} users in {elapsed:.1f} s; the table now has {users.count()}")
    if added < args.count:
        raise SystemExit(f"error: only {added} of {args.count} users added within --max-rounds {args.max_rounds}")


if __name__ == "__main__":
    main()
