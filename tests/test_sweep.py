"""`python -m load.sweep`: a tiny two-point sweep on real gunicorn + wrk writes a complete report folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.processes import PROJECT_ROOT

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not on PATH (Debian/Ubuntu: apt-get install wrk); the sweep drives the service with it"
)
def test_two_point_sweep_writes_the_report_folder(database_url, tmp_path):
    out = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "load.sweep",
        "--workers",
        "1,2",
        "--users",
        "10",
        "--seconds",
        "2",
        "--warmup",
        "0",
        "--seed-users",
        "200",
        "--out",
        str(out),
    ]
    env = {**os.environ, "DATABASE_URL": database_url, "MPLBACKEND": "Agg"}
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"

    for name in ("sweep.md", "sweep.json", "sweep.csv", "throughput.png", "p99.png"):
        assert (out / name).is_file(), name

    data = json.loads((out / "sweep.json").read_text())
    points = data["points"]
    assert [(point["workers"], point["users"]) for point in points] == [(1, 10), (2, 10)]
    for point in points:
        assert point["rps"] > 0, point
        assert point["errors"] == 0, point
        assert point["generator"].startswith("wrk")
        assert point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
    assert data["meta"]["cores"] == os.cpu_count()

    with open(out / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["workers"], row["users"]) for row in rows] == [("1", "10"), ("2", "10")]

    report = (out / "sweep.md").read_text()
    assert "| workers | users | requests/s |" in report
    assert "## Where scaling stops" in report
    assert "generator" in report and "wrk" in report

    for name in ("throughput.png", "p99.png"):
        content = (out / name).read_bytes()
        assert content[:8] == PNG_MAGIC, name
        assert 10_000 < len(content) < 2_000_000, (name, len(content))
