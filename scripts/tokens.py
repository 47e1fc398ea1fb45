"""Issue, list and revoke API tokens.

`create` prints the token once: only a hash of its secret is stored, so it cannot be shown
again. A revoked token stops working within TOKEN_CACHE_SECONDS (default 10), the time
each worker may keep a verified token before checking it again.
"""

from __future__ import annotations

import argparse
import sys

import migrations
from database import SchemaNotReady
from scripts._database import add_wait_option, connect
from tokens import READ, SCOPES, TokenStore


def _time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tokens",
        description=__doc__ + " Uses DATABASE_URL, or the embedded PostgreSQL when it is unset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_wait_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="issue a token and print it (once)")
    create.add_argument("--name", required=True, help="what the token is for, e.g. ci or billing-sync (shown by list)")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help=f"a scope the token grants; repeat for several (default: {READ}; users:write includes {READ})",
    )
    commands.add_parser("list", help="every token: id, name, scopes, created, last used, revoked")
    revoke = commands.add_parser("revoke", help="revoke a token by its id (the number after orgapi_)")
    revoke.add_argument("id", type=int)
    args = parser.parse_args(argv)

    _, db = connect(args.wait)
    with db.connection_context():
        found, needed = db.current_schema_version(), migrations.latest()
    if found < needed:
        raise SystemExit(f"error: {SchemaNotReady(found, needed)}")
    store = TokenStore(db)
    if args.command == "create":
        if not 1 <= len(args.name) <= 100:
            raise SystemExit("error: --name must be 1 to 100 characters")
        token_id, token = store.create(args.name, args.scope or [READ])
        print(token)
        print(f"token {token_id} ({args.name}); shown only now: store it as a secret.", file=sys.stderr)
    elif args.command == "list":
        print(f"{'id':>5}  {'name':<20} {'scopes':<36} {'created':<23} {'last used':<23} revoked")
        for record in store.list():
            print(
                f"{record.id:>5}  {record.name:<20} {' '.join(record.scopes):<36} {_time(record.created_at):<23} "
                f"{_time(record.last_used_at):<23} {_time(record.revoked_at)}"
            )
    elif not store.revoke(args.id):
        raise SystemExit(f"error: there is no unrevoked token {args.id}")
    else:
        print(f"revoked token {args.id}; it stops working within TOKEN_CACHE_SECONDS")


if __name__ == "__main__":
    main()
