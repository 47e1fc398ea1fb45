"""`make run` as the README's quick start has it, on an embedded PostgreSQL in a temporary
folder: the start-up log names a URL libpq accepts and says whether it started the
database; Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops it
cleanly and at once and leaves the database running, as the README says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import embedded
from database import admin_connection
from harness.processes import PROJECT_ROOT, free_port, request

pytestmark = pytest.mark.e2e

DATABASE_LINE = re.compile(r"database: embedded PostgreSQL \(data in \S+\) (started now|found running).*, at (postgresql://\S+)")


def _serve(command: list[str], env: dict[str, str], log_path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(process: subprocess.Popen, port: int, log_path, path: str) -> None:
    end = time.monotonic() + 120
    while time.monotonic() < end:
        assert process.poll() is None, log_path.read_text()
        try:
            if request(port, "GET", path, timeout=2)[0] == 200 and log_path.read_text().count(" ready: ") >= 2:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no answer on {port}:\n{log_path.read_text()}")


def _ctrl_c(process: subprocess.Popen) -> float:
    signalled = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        raise
    return time.monotonic() - signalled


def test_make_run_logs_a_real_url_and_stops_on_ctrl_c_leaving_the_database_running(tmp_path):
    base = tmp_path / "pg"
    base.mkdir()
    base.chmod(0o755)  # the server may run as its own system user
    data_dir = base / "data"
    port = free_port()
    env = {**os.environ, "EMBEDDED_PG_DIR": str(data_dir), "PORT": str(port), "WEB_CONCURRENCY": "2", "LOG_LEVEL": "info"}
    env.pop("DATABASE_URL", None)
    try:
        first_log = tmp_path / "make-run.log"
        make = _serve(["make", "run"], env, first_log)
        _wait_for(make, port, first_log, "/readyz")
        # The quick start's next step: a token, then the users.
        created = subprocess.run(
            [sys.executable, "-m", "scripts.tokens", "create", "--name", "me", "--scope", "users:write"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
        assert request(port, "GET", "/users?limit=5", headers=headers)[0] == 200
        seconds = _ctrl_c(make)
        log = first_log.read_text()
        assert "started the embedded PostgreSQL" in log  # by the migrations, before gunicorn
        said = DATABASE_LINE.search(log)
        assert said and said[1] == "found running", log
        with admin_connection(said[2]) as conn, conn.cursor() as cursor:  # the logged URL works as it is
            cursor.execute("SELECT count(*) FROM users")
            assert cursor.fetchone()[0] == 20
        assert seconds < 8 and "SIGKILL" not in log, (seconds, log[-3000:])
        assert log.count("Worker exiting") == 2, log[-3000:]
        assert embedded.running_url(data_dir) is not None, "Ctrl-C stopped the embedded PostgreSQL"

        embedded.stop(data_dir)
        second_log = tmp_path / "serve.log"
        serve = _serve([sys.executable, "-m", "scripts.serve"], env, second_log)
        _wait_for(serve, port, second_log, "/readyz")
        _ctrl_c(serve)
        said = DATABASE_LINE.search(second_log.read_text())
        assert said and said[1] == "started now", second_log.read_text()
    finally:
        embedded.stop(data_dir)
