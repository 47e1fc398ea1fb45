"""Every query the request path runs, on the `Database` the store is given.

The resources call a `UserStore` only; a reviewer finds every SQL shape here. Each
statement that only reads says so (`read=True`): the database may then run it again on a
new connection when its connection turns out to be dead (see `Database.execute_sql`).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from peewee import SQL, IntegrityError, Query, fn

from batching import Lookups
from database import Database
from models import User, public_fields, unique_index_fields, writable_fields, writable_names
from preconditions import Versions

PUBLIC = public_fields(User)
PUBLIC_NAMES = tuple(field.name for field in PUBLIC)


class Conflict(Exception):
    """A write collided with the unique index that protects `field`."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class UserStore:
    """`lookup_lanes`: how many GET-by-id statements may be in flight before concurrent ones
    share one (see batching.py); None sends each on its own."""

    def __init__(self, db: Database, lookup_lanes: int | None = None) -> None:
        self.db = db
        # peewee assembles SQL in Python on every execution (about 0.3 ms, most of a
        # request's CPU); the hot queries are built once here and run with fresh parameters.
        page = User.select(*PUBLIC).where(User.id > 0).order_by(User.id).limit(1)
        self._list = db.prepare("list_users", self._sql(page))
        # A range, not LIKE: with the "C" collation it reads the username index for any prefix.
        # Not prepared: its best plan depends on how common the prefix is, and a prepared
        # statement soon switches to one generic plan for all prefixes.
        self._list_by_prefix_sql = self._sql(page.where((User.username >= "a") & (User.username < "b")))
        self._get = db.prepare("get_user", self._sql(User.select(*PUBLIC, User.version).where(User.id == 0)))
        self._get_many = db.prepare("get_users", self._sql(User.select(*PUBLIC, User.version).where(User.id == fn.ANY(0))))
        self._lookups = None if lookup_lanes is None else Lookups(self._get_one, self._get_several, lookup_lanes)
        self._exists_sql = self._sql(User.select(SQL("1")).where(User.id == 0))
        # Each value of the compiled INSERT is its field's name, so the parameters it takes are
        # read off the query itself, in the order peewee wrote them: values go in by name.
        insert = User.insert({field: field.name for field in writable_fields(User)}).returning(*PUBLIC, User.version)
        self._insert_sql, self._insert_order = self.db.get_sql_context().sql(insert).query()
        if set(self._insert_order) != set(writable_names(User)):  # a Python-side default would slip in here
            raise TypeError(f"the INSERT takes {self._insert_order}, not the writable fields; no model defaults")

    def _sql(self, query: Query) -> str:
        sql, _ = self.db.get_sql_context().sql(query).query()
        return sql

    def list_page(self, *, limit: int, after: int | None, username_prefix: str | None) -> list[dict[str, Any]]:
        """One keyset page: `limit` rows with id > `after`, in id order, read from an index."""
        if username_prefix:
            # Byte order ("C" collation): names starting with the prefix are those from the prefix
            # up to (not including) the prefix with its last character's successor.
            upper = username_prefix[:-1] + chr(ord(username_prefix[-1]) + 1)
            cursor = self.db.execute_sql(self._list_by_prefix_sql, (after or 0, username_prefix, upper, limit), read=True)
        else:
            cursor = self.db.run_prepared(self._list, (after or 0, limit), read=True)
        return [dict(zip(PUBLIC_NAMES, row)) for row in cursor.fetchall()]

    def get(self, user_id: int) -> tuple[dict[str, Any], int] | None:
        """The user's public fields and version, or None."""
        return self._get_one(user_id) if self._lookups is None else self._lookups.get(user_id)

    def _get_one(self, user_id: int) -> tuple[dict[str, Any], int] | None:
        row = self.db.run_prepared(self._get, (user_id,), read=True).fetchone()
        return None if row is None else _user(row)

    def _get_several(self, user_ids: list[int]) -> list[tuple[int, tuple[dict[str, Any], int]]]:
        rows = self.db.run_prepared(self._get_many, (user_ids,), read=True).fetchall()
        return [(row[0], _user(row)) for row in rows]

    def create(self, fields: dict[str, Any]) -> tuple[dict[str, Any], int]:
        # One statement in autocommit mode is its own transaction: no BEGIN/COMMIT round trips.
        try:
            stored = _stored(fields)
            cursor = self.db.execute_sql(self._insert_sql, tuple(stored.get(name) for name in self._insert_order))
        except IntegrityError as exc:
            raise Conflict(_conflicting_field(exc)) from exc
        return _user(cursor.fetchone())

    def update(self, user_id: int, fields: dict[str, Any], versions: Versions) -> tuple[dict[str, Any], int] | None:
        """Apply `fields`; `versions` (If-Match, If-None-Match) are checked in the same statement.
        None: no row matched. No fields: nothing is written (RFC 7396: `{}` changes nothing)."""
        if not fields:
            query = _versioned(User.select(*PUBLIC, User.version).where(User.id == user_id), versions)
            row = self.db.execute(query, read=True).fetchone()
            return None if row is None else _user(row)
        query = User.update(**_stored(fields), version=User.version + 1, updated_at=fn.now()).where(User.id == user_id)
        try:
            row = self.db.execute(_versioned(query, versions).returning(*PUBLIC, User.version)).fetchone()
        except IntegrityError as exc:
            raise Conflict(_conflicting_field(exc)) from exc
        return None if row is None else _user(row)

    def delete(self, user_id: int, versions: Versions) -> bool:
        return self.db.execute(_versioned(User.delete().where(User.id == user_id), versions)).rowcount > 0

    def exists(self, user_id: int) -> bool:
        return self.db.execute_sql(self._exists_sql, (user_id,), read=True).fetchone() is not None

    def count(self) -> int:
        return self.db.execute_sql("SELECT count(*) FROM users", read=True).fetchone()[0]


def _versioned(query: Any, versions: Versions) -> Any:
    if versions.allowed is not None:
        query = query.where(User.version.in_(versions.allowed))
    if versions.excluded:
        query = query.where(User.version.not_in(versions.excluded))
    return query


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as stored: an email in Unicode NFC, the form its uniqueness rule compares (see models.User.email)."""
    email = fields.get("email")
    return {**fields, "email": unicodedata.normalize("NFC", email)} if email else fields


def _user(row: tuple) -> tuple[dict[str, Any], int]:
    """(public fields as a dict, version) from a row of the public fields then version."""
    return dict(zip(PUBLIC_NAMES, row)), row[-1]


def _conflicting_field(exc: IntegrityError) -> str:
    # peewee keeps the driver's exception in `.orig` (its args hold only the message).
    original = getattr(exc, "orig", None)
    constraint = getattr(getattr(original, "diag", None), "constraint_name", None)
    field = unique_index_fields(User).get(constraint or "")
    if field is None:
        # A unique index the model does not know: an error to see, not a guess at the field.
        raise RuntimeError(f"unique index {constraint!r} is not in User.Meta.unique_indexes") from exc
    return field
