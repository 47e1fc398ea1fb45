"""Who may call what: bearer tokens (API tokens, and JWTs from an identity provider when
configured), checked by a Falcon middleware before any responder reads the body.

Verified tokens are cached per worker for `token_cache_seconds` (keyed by the token's
SHA-256, never the token): a hot read costs a dictionary lookup, and a revoked API token
stops working within that many seconds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import falcon
import jwt
import orjson

from problems import RETRY_AFTER_SECONDS, Problem
from settings import Operations
from tokens import READ, SCOPES, WRITE, TokenStore

log = logging.getLogger("orgapi")

REALM = 'Bearer realm="orgapi"'
# RFC 6750 token68 syntax, bounded: nothing longer is a token this service issued or accepts.
BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]{1,4096}=*)", re.IGNORECASE)
READ_METHODS = frozenset(("GET", "HEAD"))
WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
CACHE_ENTRIES = 10_000
# An unknown `kid` refetches the key set, at most this often, so made-up kids cannot flood the IdP.
JWKS_REFRESH_SECONDS = 10.0
JWKS_MAX_AGE_SECONDS = 300.0
JWKS_TIMEOUT_SECONDS = 5.0


class InvalidToken(Exception):
    """The token is unknown, malformed, expired, revoked or signed by no trusted key."""


class KeysUnavailable(Exception):
    """The identity provider's key set could not be read."""


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = f'{REALM}, error="{error}"' if error else REALM
    return Problem(falcon.HTTP_401, detail, headers={"WWW-Authenticate": challenge})


NO_TOKEN_DETAIL = "This request needs a bearer token: send Authorization: Bearer <token>."
INVALID_TOKEN_DETAIL = "The bearer token is not valid."


class KeySet:
    """An identity provider's JWKS, read from a file or a URL, cached and refetched on an unknown `kid`."""

    def __init__(self, url: str | None = None, path: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.path = path
        self.clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        if self.url:
            with urllib.request.urlopen(self.url, timeout=JWKS_TIMEOUT_SECONDS) as response:
                return orjson.loads(response.read(1_000_000))
        with open(self.path, "rb") as source:
            return orjson.loads(source.read())

    def _load(self) -> None:
        try:
            document = self._read()
            keys: dict[str | None, jwt.PyJWK] = {}
            for entry in document.get("keys", []):
                if entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK(entry)
                except jwt.PyJWKError as exc:
                    log.warning("JWKS: skipping key %s: %s", entry.get("kid"), exc)
                    continue
                keys[entry.get("kid")] = key
        except Exception as exc:
            self._error = str(exc)
            raise KeysUnavailable(self._error) from exc
        finally:
            self._loaded_at = self.clock()
        self._keys, self._error = keys, None

    def key(self, kid: str | None) -> jwt.PyJWK:
        now = self.clock()
        with self._lock:
            stale = self._loaded_at is None or now - self._loaded_at > JWKS_MAX_AGE_SECONDS
            unknown = kid not in self._keys and (self._loaded_at is None or now - self._loaded_at > JWKS_REFRESH_SECONDS)
            if stale or unknown:
                self._load()
            key = self._keys.get(kid)
            if key is None and kid is None and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
        if key is None and self._error is not None:
            raise KeysUnavailable(self._error)
        if key is None:
            raise InvalidToken("no key with this kid")
        return key


class JwtVerifier:
    def __init__(self, keys: KeySet, issuer: str, audience: str, algorithms: tuple[str, ...], leeway: int) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.leeway = leeway

    def verify(self, token: str) -> tuple[frozenset[str], float]:
        """The token's scopes and its expiry (Unix time)."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in self.algorithms:
                raise InvalidToken("algorithm not allowed")
            key = self.keys.key(header.get("kid"))
            if key.algorithm_name not in self.algorithms:
                raise InvalidToken("key algorithm not allowed")
            # A PyJWK verifies with its own algorithm, whatever the header claims.
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        return _claimed_scopes(claims), float(claims["exp"])


def _claimed_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (space-separated, RFC 8693) or `scp` (a list or a string)."""
    claimed = claims.get("scope", claims.get("scp", ""))
    names = claimed.split() if isinstance(claimed, str) else [name for name in claimed if isinstance(name, str)]
    return frozenset(names) & frozenset(SCOPES)


class Authenticator:
    """A bearer token's scopes: from the per-worker cache, else the token store or the JWT verifier."""

    def __init__(
        self,
        tokens: TokenStore,
        jwt_verifier: JwtVerifier | None,
        cache_seconds: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = tokens
        self.jwt_verifier = jwt_verifier
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.wall_clock = wall_clock
        self._cache: dict[bytes, tuple[frozenset[str], float]] = {}

    def scopes(self, token: str) -> frozenset[str]:
        key = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        until = now + self.cache_seconds
        if token.startswith("orgapi_"):
            scopes = self.tokens.scopes(token)
            if scopes is None:
                raise InvalidToken("unknown API token")
        elif self.jwt_verifier is not None and token.count(".") == 2:
            scopes, expires = self.jwt_verifier.verify(token)
            until = min(until, now + expires - self.wall_clock())
        else:
            raise InvalidToken("not a token this service accepts")
        if self.cache_seconds:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()  # rare; a bound on memory, not an eviction policy worth more code
            self._cache[key] = (scopes, until)
        return scopes


def build_authenticator(operations: Operations, tokens: TokenStore) -> Authenticator:
    verifier = None
    if operations.jwt_enabled:
        keys = KeySet(url=operations.jwt_jwks_url, path=operations.jwt_jwks_file)
        assert operations.jwt_issuer and operations.jwt_audience  # settings requires both with a key set
        verifier = JwtVerifier(
            keys, operations.jwt_issuer, operations.jwt_audience, operations.jwt_algorithms, operations.jwt_leeway_seconds
        )
    return Authenticator(tokens, verifier, operations.token_cache_seconds)


@dataclass(frozen=True)
class Access:
    """The scope each kind of method needs on a resource; None: no token needed."""

    read: str | None
    write: str | None


def satisfies(granted: frozenset[str], needed: str) -> bool:
    # Writing users includes reading them: every write answers with the user.
    return needed in granted or (needed == READ and WRITE in granted)


class Guard:
    """Falcon middleware: refuses a request without the scope its resource and method need (401/403)."""

    def __init__(self, authenticator: Authenticator, rules: dict[object, Access]) -> None:
        self.authenticator = authenticator
        self.rules = rules

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict) -> None:
        rule = self.rules.get(resource)
        if rule is None:
            return
        needed = rule.read if req.method in READ_METHODS else rule.write if req.method in WRITE_METHODS else None
        if needed is None:
            return
        match = BEARER.fullmatch(req.auth or "")
        if match is None:
            raise _unauthorized(NO_TOKEN_DETAIL)
        try:
            granted = self.authenticator.scopes(match[1])
        except InvalidToken:
            raise _unauthorized(INVALID_TOKEN_DETAIL, "invalid_token") from None
        except KeysUnavailable as exc:
            log.warning("identity provider keys unavailable: %s", exc)
            raise Problem(
                falcon.HTTP_503,
                "The identity provider's keys are unavailable; retry shortly.",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ) from None
        if not satisfies(granted, needed):
            raise Problem(
                falcon.HTTP_403,
                f"The token lacks the scope {needed}.",
                headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{needed}"'},
            )
