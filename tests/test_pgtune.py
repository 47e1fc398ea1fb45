"""Tests for scripts/pgtune.py against PgTune's published "web" rules.

Expected values are worked out by hand from the rules (all sizes in kB,
1GB = 1048576kB), not produced by running the code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.pgtune import format_kb, parse_size, tune

GB = 1024**3
MB = 1024**2
REPO_ROOT = Path(__file__).resolve().parent.parent


def test_two_cores_4gb_ssd() -> None:
    # RAM 4GB = 4194304kB, max_connections 18 (2 workers * 4 + 10)
    assert list(tune(4 * GB, 2, "ssd", 15, 18).items()) == [
        ("max_connections", "18"),
        ("shared_buffers", "1GB"),  # 4194304 / 4 = 1048576
        ("effective_cache_size", "3GB"),  # 4194304 * 3 / 4 = 3145728
        ("maintenance_work_mem", "256MB"),  # 4194304 / 16 = 262144, under the 2GB cap
        ("checkpoint_completion_target", "0.9"),
        ("wal_buffers", "16MB"),  # 3% of 1048576 = 31457 > 16384 -> capped at 16MB
        ("default_statistics_target", "100"),
        ("random_page_cost", "1.1"),
        ("effective_io_concurrency", "200"),
        # < 4 cores: no parallel settings, budget against the default 8 worker processes:
        # (4194304 - 1048576) / ((18 + 8) * 3) = 3145728 / 78 = 40329.8 -> 40329
        ("work_mem", "40329kB"),
        ("huge_pages", "off"),  # 4GB < 32GB
        ("min_wal_size", "1GB"),
        ("max_wal_size", "4GB"),
    ]


def test_eight_cores_32gb_hdd() -> None:
    settings = tune(32 * GB, 8, "hdd", 15, 18)
    # RAM 32GB = 33554432kB
    assert settings["shared_buffers"] == "8GB"  # 33554432 / 4 = 8388608
    assert settings["effective_cache_size"] == "24GB"  # 33554432 * 3 / 4 = 25165824
    assert settings["maintenance_work_mem"] == "2GB"  # 33554432 / 16 = 2097152 = exactly the cap
    assert settings["wal_buffers"] == "16MB"  # 3% of 8388608 = 251658 -> capped 16MB
    assert settings["random_page_cost"] == "4"
    assert settings["effective_io_concurrency"] == "2"
    # (33554432 - 8388608) / ((18 + 8 cores) * 3) = 25165824 / 78 = 322638.7 -> 322638
    assert settings["work_mem"] == "322638kB"
    assert settings["huge_pages"] == "try"  # RAM >= 32GB (inclusive)
    assert settings["max_worker_processes"] == "8"  # = cores
    assert settings["max_parallel_workers_per_gather"] == "4"  # ceil(8 / 2) = 4
    assert settings["max_parallel_workers"] == "8"  # = cores
    assert settings["max_parallel_maintenance_workers"] == "4"  # ceil(8 / 2) = 4
    # parallel settings come last, after the WAL sizes, as pgtune prints them
    assert list(settings)[-5:] == [
        "max_wal_size",
        "max_worker_processes",
        "max_parallel_workers_per_gather",
        "max_parallel_workers",
        "max_parallel_maintenance_workers",
    ]


def test_sixteen_cores_64gb_san() -> None:
    # RAM 64GB = 67108864kB, max_connections 50
    assert tune(64 * GB, 16, "san", 15, 50) == {
        "max_connections": "50",
        "shared_buffers": "16GB",  # 67108864 / 4 = 16777216
        "effective_cache_size": "48GB",  # 67108864 * 3 / 4 = 50331648
        "maintenance_work_mem": "2GB",  # 67108864 / 16 = 4GB -> capped at 2GB
        "checkpoint_completion_target": "0.9",
        "wal_buffers": "16MB",
        "default_statistics_target": "100",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "300",
        # (67108864 - 16777216) / ((50 + 16) * 3) = 50331648 / 198 = 254200.2 -> 254200
        "work_mem": "254200kB",
        "huge_pages": "try",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "max_worker_processes": "16",
        "max_parallel_workers_per_gather": "4",  # ceil(16 / 2) = 8 -> capped at 4
        "max_parallel_workers": "16",
        "max_parallel_maintenance_workers": "4",  # ceil(16 / 2) = 8 -> capped at 4
    }


def test_tiny_1gb_one_core() -> None:
    settings = tune(1 * GB, 1, "ssd", 15, 18)
    # RAM 1GB = 1048576kB
    assert settings["shared_buffers"] == "256MB"  # 1048576 / 4 = 262144
    assert settings["effective_cache_size"] == "768MB"  # 786432
    assert settings["maintenance_work_mem"] == "64MB"  # 1048576 / 16 = 65536
    assert settings["wal_buffers"] == "7864kB"  # 3 * 262144 / 100 = 7864.3 -> 7864, below 14MB
    # (1048576 - 262144) / ((18 + 8) * 3) = 786432 / 78 = 10082.5 -> 10082
    assert settings["work_mem"] == "10082kB"
    assert settings["huge_pages"] == "off"
    assert "max_worker_processes" not in settings


def test_wal_buffers_near_16mb_rounds_up() -> None:
    # 2GB: shared_buffers 524288kB, 3% = 15728kB, between 14MB (14336) and 16MB -> 16MB
    assert tune(2 * GB, 2, "ssd", 15, 18)["wal_buffers"] == "16MB"


def test_minimum_wal_buffers_and_work_mem() -> None:
    settings = tune(4 * MB, 1, "ssd", 15, 18)
    # 4096kB: shared_buffers 1024kB = 1MB, 3% = 30kB -> raised to the 32kB floor
    assert settings["shared_buffers"] == "1MB"
    assert settings["wal_buffers"] == "32kB"
    # (4096 - 1024) / ((18 + 8) * 3) = 39.4 -> raised to the 64kB floor
    assert settings["work_mem"] == "64kB"


def test_odd_cores_and_old_version() -> None:
    settings = tune(16 * GB, 5, "ssd", 10, 18)
    assert settings["max_worker_processes"] == "5"
    assert settings["max_parallel_workers_per_gather"] == "3"  # ceil(5 / 2) = 3
    assert settings["max_parallel_workers"] == "5"
    # max_parallel_maintenance_workers exists only from PostgreSQL 11
    assert "max_parallel_maintenance_workers" not in settings


def test_rejects_unknown_storage() -> None:
    with pytest.raises(ValueError):
        tune(4 * GB, 2, "nvme", 15, 18)


@pytest.mark.parametrize(
    ("kb", "text"),
    [(1048576, "1GB"), (1572864, "1536MB"), (241979, "241979kB"), (32, "32kB")],
)
def test_format_kb(kb: int, text: str) -> None:
    assert format_kb(kb) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [("24GB", 24 * GB), ("512MB", 512 * MB), ("512mb", 512 * MB), ("1.5G", 1536 * MB), ("64kB", 65536)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "24", "24XB", "-1GB", "0GB", ""])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.pgtune", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_line_output() -> None:
    result = _run("--memory", "8GB", "--cpus", "4", "--workers", "2", "--connections-per-worker", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# ")
    settings = dict(line.split(" = ", 1) for line in lines[1:])
    # RAM 8GB = 8388608kB; max_connections = 2 * 4 + 10 (default extra) = 18
    assert settings == {
        "max_connections": "18",
        "shared_buffers": "2GB",  # 8388608 / 4
        "effective_cache_size": "6GB",  # 8388608 * 3 / 4
        "maintenance_work_mem": "512MB",  # 8388608 / 16 = 524288
        "checkpoint_completion_target": "0.9",
        "wal_buffers": "16MB",
        "default_statistics_target": "100",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        # (8388608 - 2097152) / ((18 + 4) * 3) = 6291456 / 66 = 95325.1 -> 95325
        "work_mem": "95325kB",
        "huge_pages": "off",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "max_worker_processes": "4",
        "max_parallel_workers_per_gather": "2",  # ceil(4 / 2)
        "max_parallel_workers": "4",
        "max_parallel_maintenance_workers": "2",
    }


def test_command_line_rejects_bad_memory() -> None:
    result = _run("--memory", "lots")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "--memory" in result.stderr.splitlines()[-1]
