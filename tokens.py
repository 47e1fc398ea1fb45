"""API tokens: issued by `python -m scripts.tokens`, checked on requests.

A token reads `orgapi_<id>_<secret>`: the id finds its row, the secret is 256 random bits
(43 URL-safe base64 characters). Only the SHA-256 of the secret is stored, and it is
compared in constant time; nothing can recover a token from the table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from database import Database

READ = "users:read"
WRITE = "users:write"
METRICS = "metrics:read"
SCOPES = (READ, WRITE, METRICS)
TOKEN = re.compile(r"orgapi_([1-9][0-9]{0,17})_([A-Za-z0-9_-]{43})")
# Compared against when the id is unknown, so an unknown id costs what a wrong secret does.
_NO_DIGEST = hashlib.sha256(b"no such token").digest()


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._find = db.prepare("find_token", "SELECT secret_sha256, scopes FROM api_tokens WHERE id = %s AND revoked_at IS NULL")
        self._touch = db.prepare("touch_token", "UPDATE api_tokens SET last_used_at = now() WHERE id = %s")

    def create(self, name: str, scopes: list[str]) -> tuple[int, str]:
        """A new token's id and the token itself (shown once; only its hash is kept)."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        row = self.db.execute_sql(
            "INSERT INTO api_tokens (name, scopes, secret_sha256) VALUES (%s, %s, %s) RETURNING id",
            (name, sorted(set(scopes)), _digest(secret)),
        ).fetchone()
        return row[0], f"orgapi_{row[0]}_{secret}"

    def scopes(self, token: str) -> frozenset[str] | None:
        """The scopes of a valid, unrevoked token (and its last use recorded); None for anything else."""
        match = TOKEN.fullmatch(token)
        if match is None:
            return None
        token_id = int(match[1])
        row = self.db.run_prepared(self._find, (token_id,), read=True).fetchone()
        expected = bytes(row[0]) if row else _NO_DIGEST
        if not hmac.compare_digest(_digest(match[2]), expected) or row is None:
            return None
        self.db.run_prepared(self._touch, (token_id,))
        return frozenset(row[1])

    def list(self) -> list[TokenRecord]:
        rows = self.db.execute_sql("SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id").fetchall()
        return [TokenRecord(row[0], row[1], tuple(row[2]), row[3], row[4], row[5]) for row in rows]

    def revoke(self, token_id: int) -> bool:
        """Revoke a token; False when there is no such unrevoked token."""
        cursor = self.db.execute_sql("UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (token_id,))
        return cursor.rowcount > 0
