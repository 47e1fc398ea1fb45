"""gunicorn reads this file on its own (`gunicorn app:api`); command-line flags override it.

Every value comes from `settings`. `preload_app` stays off: each worker imports the app
after the fork, so no database connection is ever shared between processes.
"""

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import gunicorn.util

import database
import embedded
import logs
import migrations
import problems
from settings import SettingsError, load_settings

try:
    _settings = load_settings()
except SettingsError as exc:
    sys.exit(f"orgapi: configuration error: {exc}")

# prometheus_client picks its multiprocess mode when it is first imported, so the directory
# is named here, before any worker forks and before anything imports it; workers inherit it.
METRICS_DIR_PREFIX = "orgapi-metrics-"
if _settings.operations.metrics and _settings.operations.metrics_dir is None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    _settings = load_settings()

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.workers
worker_class = _settings.worker_class
threads = _settings.threads  # gthread
worker_connections = _settings.worker_connections  # gevent: clients a worker serves at once
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
max_requests = _settings.max_requests
max_requests_jitter = max(1, _settings.max_requests // 10) if _settings.max_requests else 0
loglevel = _settings.log_level
# The service writes its own access log (route templates and request ids; see telemetry.py).
accesslog = None
logger_class = logs.GunicornLogger
logs.GunicornLogger.log_format = _settings.operations.log_format
proc_name = "orgapi"

if _settings.trusted_proxies:
    # Behind the front (cluster/), which sets X-Forwarded-For: X-Forwarded-* count only from it.
    forwarded_allow_ips = _settings.trusted_proxies

# No control socket: its default path is per user, so two servers on one machine would clash.
control_socket_disable = True

# Requests gunicorn itself rejects get the service's one error shape, not an HTML page.
gunicorn.util.write_error = problems.write_server_error


def pre_request(worker, req):
    # gunicorn reads a request body with no deadline: a client that stops sending would hold
    # a thread for good. Past this many seconds of silence the read fails and the app answers 408.
    req.unreader.sock.settimeout(_settings.client_timeout)


def _route_app_logs(log):
    logs.route_app_logs(log.error_log, _settings.access_log)


def _empty_metrics_dir():
    """Files left by a previous run would add its counts to this one's: start empty, as the multiprocess docs require."""
    directory = _settings.operations.metrics_dir
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()


def child_exit(server, worker):
    if _settings.operations.metrics:
        from prometheus_client import multiprocess  # imported only now: the directory is set

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    directory = _settings.operations.metrics_dir
    if directory is not None and directory.parent == Path(tempfile.gettempdir()) and directory.name.startswith(METRICS_DIR_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)


def _interrupt_stops_gracefully(server):
    """Ctrl-C stops like SIGTERM. A terminal sends SIGINT to the master and every worker at
    once; gunicorn takes it for a quick stop, so the master SIGQUITs workers already exiting
    on their own SIGINT, and a worker's exit handler re-entered by the second signal can hang
    until the master SIGKILLs it after GRACEFUL_TIMEOUT. A second Ctrl-C still forces
    gunicorn's quick stop."""
    server.handle_int = server.handle_term


def on_starting(server):
    """In the master, before any worker: start the embedded PostgreSQL when no DATABASE_URL is set,
    and say once whether the schema is what this code needs."""
    _route_app_logs(server.log)
    _interrupt_stops_gracefully(server)
    # `--worker-class` on the command line wins over this file; the app (built in each worker,
    # which inherits this environment) sizes its database connections by the class in use.
    os.environ["WORKER_CLASS"] = server.cfg.worker_class_str
    _empty_metrics_dir()
    if _settings.uses_embedded_database:
        try:
            url, started = embedded.start(_settings.embedded_pg_dir)
        except Exception as exc:  # serve anyway: data routes answer 503 until a database is there
            server.log.error("could not start the embedded PostgreSQL in %s: %s", _settings.embedded_pg_dir, exc)
            return
        server.log.info(
            "database: embedded PostgreSQL (data in %s) %s, at %s",
            _settings.embedded_pg_dir,
            "started now (it keeps running after gunicorn stops)" if started else "found running",
            database.describe(url),
        )
    else:
        url = _settings.database_url
        server.log.info("database: %s (from DATABASE_URL)", database.describe(url))
    _check_schema(server.log, url)


def _check_schema(log, url):
    # The master's connection is closed before any worker forks; workers open their own.
    db = database.Database(url, connect_timeout=_settings.connect_timeout)
    try:
        with db.connection_context():
            found = db.current_schema_version()
    except database.Misconfigured as exc:
        log.error("the database refuses this configuration: %s; data routes and /readyz answer 503 until it is fixed", exc.cause)
        problems.SAID_AT_START.add(exc.cause)
        return
    except database.OperationalError as exc:
        log.warning("database not reachable at start (data routes answer 503 until it is): %s", database.first_line(exc))
        return
    needed = migrations.latest()
    if found < needed:
        log.error("%s; until then data routes and /readyz answer 503", database.SchemaNotReady(found, needed))


# A gevent worker's yield to its other greenlets (set after the fork; None in other workers).
_take_turns = None


def post_request(worker, req, environ, resp):
    if _take_turns is not None:
        # A greenlet whose client sent its next request already would read and serve it
        # without yielding, and keep the others waiting: yield first, so clients take turns.
        _take_turns(0)


def post_fork(server, worker):
    global _take_turns
    if worker.cfg.worker_class_str == "gevent":
        import gevent
        from psycogreen.gevent import patch_psycopg

        # psycopg2 then waits for the database through gevent's hub, so other greenlets run meanwhile.
        patch_psycopg()
        _take_turns = gevent.sleep
        _accept_in_bursts()


def _accept_in_bursts():
    """gunicorn's gevent worker accepts one connection per turn of its event loop when there
    are several workers. A turn runs every request in progress, so a burst of new clients
    waited behind them all: 500 at once took seconds to be accepted, and some timed out
    (BENCHMARKS.md). Its server keeps gevent's own limit instead (100 a turn)."""
    from gevent.server import StreamServer
    from gunicorn.workers import ggevent

    class BurstAcceptingServer(StreamServer):
        max_accept = property(lambda self: StreamServer.max_accept, lambda self, value: None)

    ggevent.StreamServer = BurstAcceptingServer


def post_worker_init(worker):
    _route_app_logs(worker.log)
    # The worker's half of Ctrl-C (see _interrupt_stops_gracefully): finish in-flight requests, then exit.
    signal.signal(signal.SIGINT, worker.handle_exit)
    signal.siginterrupt(signal.SIGINT, False)
    if _settings.operations.metrics and worker.age > worker.cfg.workers:
        import metrics  # the app has imported it already, in multiprocess mode

        metrics.WORKER_RESTARTS.inc()
    if worker.cfg.worker_class_str == "gevent":
        concurrency = f"gevent, up to {worker.cfg.worker_connections} clients, a pool of {_settings.db_pool_size} database connections"
    else:
        concurrency = f"{worker.cfg.threads} threads, a database connection per thread"
    worker.log.info(
        "worker %s ready: %s opened on first use, statement timeout %s ms", worker.pid, concurrency, _settings.statement_timeout_ms
    )
