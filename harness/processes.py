"""Real processes for end-to-end tests and the load lab: gunicorn on a free loopback port, stopped by process group."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The API token of each server started here, by port: `request()` and harness.load's `send()`
# present it unless the caller sets Authorization itself (to "" to send none).
SERVER_TOKENS: dict[int, str] = {}


def issue_token(database_url: str, name: str = "harness") -> str:
    """A token with every scope on the database at `database_url` (migrated), as `scripts.tokens create` makes one."""
    from database import Database
    from tokens import SCOPES, TokenStore

    db = Database(database_url)
    try:
        return TokenStore(db).create(name, list(SCOPES))[1]
    finally:
        db.close()


def with_token(port: int, headers: dict | None) -> dict:
    """`headers` plus the server's token, unless they set Authorization (an empty one is dropped)."""
    headers = dict(headers or {})
    if "Authorization" not in headers and port in SERVER_TOKENS:
        headers["Authorization"] = f"Bearer {SERVER_TOKENS[port]}"
    if headers.get("Authorization") == "":
        del headers["Authorization"]
    return headers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 5.0):
    """One HTTP request on a fresh connection: (status, headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=with_token(port, headers))
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class Gunicorn:
    """`gunicorn app:api` with the project's gunicorn.conf.py, on 127.0.0.1:<free port>."""

    def __init__(
        self, env: dict[str, str], *args: str, log_path: Path, app: str = "app:api", tree: Path = PROJECT_ROOT, token: str | None = None
    ) -> None:
        self.port = free_port()
        self.tree = tree  # the checkout whose app and gunicorn.conf.py run (another one to compare commits)
        self.token = token
        if token:
            SERVER_TOKENS[self.port] = token
        self.log_path = log_path
        self.args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", *args, app]
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen | None = None
        self.expected_workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1

    def start(self, ready_path: str = "/healthz", deadline: float = 30.0) -> Gunicorn:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args, cwd=self.tree, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_until_answers(ready_path, deadline)
        return self

    def wait_until_answers(self, path: str, deadline: float) -> None:
        """Poll this server's own port until `path` answers 200; fail with the log if it never does."""
        assert self.process is not None
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                # One worker can answer before the others have booted: wait until every one
                # has logged that it is ready (gunicorn.conf.py's post_worker_init, at LOG_LEVEL info).
                if request(self.port, "GET", path, timeout=2)[0] == 200 and self.log().count(" ready: ") >= self.expected_workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer {path} on port {self.port} within {deadline} s:\n{self.log()}")

    @property
    def master_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()

    def signal(self, signum: int) -> None:
        os.kill(self.master_pid, signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the process group, SIGKILL it if it is not gone within `timeout`; the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.killpg(self.master_pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.master_pid, signal.SIGKILL)
            return self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
