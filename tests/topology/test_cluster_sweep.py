"""The sweep through the front (make cluster-sweep), on a one-point grid per app-host count."""

from __future__ import annotations

import json

import pytest

from cluster import sweep
from tests.topology.conftest import _missing

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


def test_the_sweep_varies_app_hosts_and_reports_each_hosts_cpu(tmp_path):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    sweep.main(["--app-hosts", "1,2", "--connections", "8", "--seconds", "3", "--warmup", "1", "--users", "500", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert [row["app_hosts"] for row in rows] == [1, 2]
    for row in rows:
        assert row["rps"] > 0 and row["errors"] == 0, row
        apps = [key for key in row if key.startswith("app") and key.endswith("_cpu_ms_per_req") and key != "apps_cpu_ms_per_req"]
        assert len(apps) == row["app_hosts"], row  # each app host measured, and only those
        assert 0 < row["apps_cpu_ms_per_req"] < row["total_cpu_ms_per_req"], row
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert "| app_hosts |" in (tmp_path / "sweep.md").read_text()
