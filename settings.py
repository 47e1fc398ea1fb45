"""The one place that reads the environment.

`load_settings()` validates every variable once; a bad value raises `SettingsError`
naming the variable, and entry points turn that into one line and a non-zero exit.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import database

PROJECT_ROOT = Path(__file__).resolve().parent


class SettingsError(ValueError):
    """A configuration variable holds a value the service cannot run with."""


ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True)
class Operations:
    """Who may call what, metrics and logs (issue 10)."""

    read_access: str = "token"
    token_cache_seconds: int = 10
    jwt_jwks_url: str | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwt_leeway_seconds: int = 30
    metrics: bool = True
    metrics_dir: Path | None = None
    log_format: str = "text"

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_jwks_url or self.jwt_jwks_file)


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    embedded_pg_dir: Path
    port: int
    workers: int
    threads: int
    worker_timeout: int
    graceful_timeout: int
    keepalive: int
    client_timeout: int
    max_requests: int
    statement_timeout_ms: int
    connect_timeout: int
    page_default: int
    page_max: int
    max_body_bytes: int
    log_level: str
    access_log: bool
    operations: Operations
    trusted_proxies: str
    prepared_statements: bool
    worker_class: str
    worker_connections: int
    db_pool_size: int
    lookup_lanes: int | None

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name}={value} is outside {minimum}..{maximum}")
    return value


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


def _database_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("postgres://", "postgresql://")):
        raise SettingsError(f"{name} must be a postgresql:// URL")
    try:
        database.check_url(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} is not a valid PostgreSQL URL: {exc}") from None
    return raw


def _addresses(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    for part in filter(None, (item.strip() for item in raw.split(","))):
        try:
            ipaddress.ip_network(part)
        except ValueError:
            raise SettingsError(f"{name}: {part!r} is not an IP address or network") from None
    return raw


def default_workers(worker_class: str = "gevent") -> int:
    # Measured on a 2-core machine (BENCHMARKS.md): gevent workers serve the most with one per
    # core (two per core: -13 to -19% on GET /users/{id} at 100 clients); gthread workers with
    # two per core (+25-30% over one, `make sweep`).
    return (1 if worker_class == "gevent" else 2) * (os.cpu_count() or 1)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    worker_timeout = _integer(env, "WORKER_TIMEOUT", 30, 2, 3600)
    statement_timeout_ms = _integer(env, "STATEMENT_TIMEOUT_MS", 5000, 1, 3_600_000)
    if statement_timeout_ms >= worker_timeout * 1000:
        raise SettingsError(f"STATEMENT_TIMEOUT_MS={statement_timeout_ms} must be below WORKER_TIMEOUT ({worker_timeout} s)")
    page_max = _integer(env, "PAGE_MAX", 1000, 1, 100_000)
    worker_class = _choice(env, "WORKER_CLASS", "gevent", ("gevent", "gthread", "sync"))
    page_default = _integer(env, "PAGE_DEFAULT", min(100, page_max), 1, 100_000)
    if page_default > page_max:
        raise SettingsError(f"PAGE_DEFAULT={page_default} must not exceed PAGE_MAX={page_max}")
    log_level = env.get("LOG_LEVEL", "info").strip().lower() or "info"
    if log_level not in ("debug", "info", "warning", "error", "critical"):
        raise SettingsError(f"LOG_LEVEL={log_level!r} is not one of debug, info, warning, error, critical")
    embedded_dir = env.get("EMBEDDED_PG_DIR", "").strip()
    database_url = _database_url(env, "DATABASE_URL")
    if database_url is None and not _boolean(env, "EMBEDDED_DATABASE", True):
        # The container image sets EMBEDDED_DATABASE=false: a database inside a container is lost with it.
        raise SettingsError("DATABASE_URL is not set (EMBEDDED_DATABASE=false: give the postgresql:// URL of a server)")
    return Settings(
        database_url=database_url,
        embedded_pg_dir=Path(embedded_dir) if embedded_dir else PROJECT_ROOT / ".pgdata",
        port=_integer(env, "PORT", 8000, 1, 65535),
        workers=_integer(env, "WEB_CONCURRENCY", default_workers(worker_class), 1, 256),
        threads=_integer(env, "WEB_THREADS", 4, 1, 256),
        worker_timeout=worker_timeout,
        graceful_timeout=_integer(env, "GRACEFUL_TIMEOUT", 20, 1, 3600),
        keepalive=_integer(env, "KEEPALIVE", 5, 0, 3600),
        client_timeout=_integer(env, "CLIENT_TIMEOUT", 10, 1, 3600),
        max_requests=_integer(env, "MAX_REQUESTS", 100_000, 0, 100_000_000),
        statement_timeout_ms=statement_timeout_ms,
        connect_timeout=_integer(env, "DB_CONNECT_TIMEOUT", 3, 1, 60),
        page_default=page_default,
        page_max=page_max,
        max_body_bytes=_integer(env, "MAX_BODY_BYTES", 16 * 1024, 256, 64 * 1024 * 1024),
        log_level=log_level,
        access_log=_boolean(env, "ACCESS_LOG", False),
        trusted_proxies=_addresses(env, "TRUSTED_PROXIES"),
        prepared_statements=_boolean(env, "DB_PREPARED_STATEMENTS", True),
        worker_class=worker_class,
        worker_connections=_integer(env, "WORKER_CONNECTIONS", 1000, 1, 100_000),
        db_pool_size=_integer(env, "DB_POOL_SIZE", 4, 1, 1000),
        # Measured (BENCHMARKS.md): one lane per gevent worker batches best; with threads, batching only cost.
        lookup_lanes=_integer(env, "LOOKUP_LANES", 1 if worker_class == "gevent" else 0, 0, 1000) or None,
        operations=load_operations(env),
    )


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def load_operations(env: Mapping[str, str]) -> Operations:
    jwks_url = _text(env, "JWT_JWKS_URL")
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise SettingsError("JWT_JWKS_URL must be an http:// or https:// URL")
    jwks_file = _text(env, "JWT_JWKS_FILE")
    if jwks_url and jwks_file:
        raise SettingsError("set JWT_JWKS_URL or JWT_JWKS_FILE, not both")
    issuer, audience = _text(env, "JWT_ISSUER"), _text(env, "JWT_AUDIENCE")
    if (jwks_url or jwks_file) and not (issuer and audience):
        raise SettingsError("JWT_ISSUER and JWT_AUDIENCE are required with JWT_JWKS_URL or JWT_JWKS_FILE")
    algorithms = tuple(name.strip() for name in env.get("JWT_ALGORITHMS", "RS256,ES256").split(",") if name.strip())
    for name in algorithms:
        if name not in ASYMMETRIC_ALGORITHMS:
            # Never "none", never HMAC: a shared secret (or a public key misread as one) could sign tokens.
            raise SettingsError(f"JWT_ALGORITHMS: {name!r} is not one of {', '.join(ASYMMETRIC_ALGORITHMS)}")
    if not algorithms:
        raise SettingsError("JWT_ALGORITHMS names no algorithm")
    metrics_dir = _text(env, "PROMETHEUS_MULTIPROC_DIR")
    return Operations(
        read_access=_choice(env, "READ_ACCESS", "token", ("public", "token")),
        token_cache_seconds=_integer(env, "TOKEN_CACHE_SECONDS", 10, 0, 3600),
        jwt_jwks_url=jwks_url,
        jwt_jwks_file=Path(jwks_file) if jwks_file else None,
        jwt_issuer=issuer,
        jwt_audience=audience,
        jwt_algorithms=algorithms,
        jwt_leeway_seconds=_integer(env, "JWT_LEEWAY_SECONDS", 30, 0, 600),
        metrics=_boolean(env, "METRICS", True),
        metrics_dir=Path(metrics_dir) if metrics_dir else None,
        log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
    )
