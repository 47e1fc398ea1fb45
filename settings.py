"""The one place that reads the environment.

`load_settings()` validates every variable once; a bad value raises `SettingsError`
naming the variable, and entry points turn that into one line and a non-zero exit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import database

PROJECT_ROOT = Path(__file__).resolve().parent


class SettingsError(ValueError):
    """A configuration variable holds a value the service cannot run with."""


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


def default_workers() -> int:
    # Measured on a 2-core machine (`make sweep`, BENCHMARKS.md): two gthread workers per
    # core beat one (+25-30% requests/s) and eight (-11-22%), for this app and a minimal one.
    return 2 * (os.cpu_count() or 1)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    worker_timeout = _integer(env, "WORKER_TIMEOUT", 30, 2, 3600)
    statement_timeout_ms = _integer(env, "STATEMENT_TIMEOUT_MS", 5000, 1, 3_600_000)
    if statement_timeout_ms >= worker_timeout * 1000:
        raise SettingsError(f"STATEMENT_TIMEOUT_MS={statement_timeout_ms} must be below WORKER_TIMEOUT ({worker_timeout} s)")
    page_max = _integer(env, "PAGE_MAX", 1000, 1, 100_000)
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
        workers=_integer(env, "WEB_CONCURRENCY", default_workers(), 1, 256),
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
    )
