"""The topology fixture: the same code as `make cluster`, torn down after the tests."""

from __future__ import annotations

import os
import shutil

import pytest

from cluster.topology import APP_PORT, PROJECT_ROOT, Topology
from harness.processes import SERVER_TOKENS

ENGINES = ("haproxy", "pgbouncer", "etcd", "setpriv")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    absent = [name for name in ENGINES if shutil.which(name) is None]
    if not (PROJECT_ROOT / ".venv-patroni" / "bin" / "patroni").exists():
        absent.append("patroni (.venv-patroni)")
    return f"missing {', '.join(absent)}: run make install-cluster" if absent else None


@pytest.fixture(scope="session")
def topology():
    reason = _missing()
    if reason:
        pytest.fail(reason) if os.environ.get("CLUSTER_TESTS_REQUIRED") else pytest.skip(reason)
    # A high rate limit: every test client comes from this machine's one bridge address.
    with Topology(app_hosts=2, access_log=True, rate_limit=100_000) as running:
        # harness.load's send() presents it to the front (80) and to app hosts (8000).
        token = running.issue_token()
        SERVER_TOKENS.update({80: token, APP_PORT: token})
        try:
            yield running
        finally:
            SERVER_TOKENS.pop(80, None)
            SERVER_TOKENS.pop(APP_PORT, None)


@pytest.fixture
def front(topology):
    """(address, port) of the front."""
    return topology.address("front"), 80
