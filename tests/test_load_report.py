"""The load lab's report: `bzt bzt-config.yml -report` on real gunicorn writes it offline, and Chromium renders it.

The run goes against a server whose database is down, so every data request gets a real 503: the
report must show 503 where bzt's own kpi.jtl says 500, and the criteria's FAILED verdict.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from harness.checks import UNKNOWN_TOKEN
from harness.processes import PROJECT_ROOT, Gunicorn, free_port
from load import compare, report_check

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(report_check.browser() is None, reason="chromium is not installed (Debian/Ubuntu: apt-get install chromium)"),
]

BZT = PROJECT_ROOT / ".venv-load" / "bin" / "bzt"


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A short `bzt bzt-config.yml -report` run against gunicorn with its database down: the run's folder."""
    assert BZT.exists(), "Taurus is missing: `make install-load` (make test installs it)"
    folder = tmp_path_factory.mktemp("load-report")
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/orgapi"
    server = Gunicorn({"DATABASE_URL": nowhere, "DB_CONNECT_TIMEOUT": "1"}, "--workers", "1", log_path=folder / "gunicorn.log")
    server.start(ready_path="/healthz")
    command = [
        str(BZT),
        "bzt-config.yml",
        "load/bzt-smoke.yml",
        "-report",
        "-o",
        "execution.ramp-up=2s",
        "-o",
        "execution.hold-for=8s",
        "-o",
        f"settings.artifacts-dir={folder / 'run'}",
    ]
    # A well-formed token: checking it needs the database, so the data requests meet its outage (503).
    env = {**os.environ, "BASE_URL": f"http://127.0.0.1:{server.port}", "LOAD_MAX_USER_ID": "20", "AUTH_TOKEN": UNKNOWN_TOKEN}
    try:
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    finally:
        server.stop()
    assert done.returncode != 0, "every request failed, so the pass/fail criteria must fail the run"
    assert (folder / "run" / "report.html").exists(), f"no report; bzt said:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return folder / "run"


def test_report_shows_real_statuses_and_verdicts(failed_run):
    summary = json.loads((failed_run / "summary.json").read_text())
    assert summary["requests"] > 0 and summary["failures"] == summary["requests"]
    assert not summary["criteria held"]
    every_label = [row for row in summary["labels"] if row["label"] != "all"]
    # a request slower than 3 s on a busy machine would add "over 3 s: N"; the status seen must be 503
    assert every_label and all(row["failures by status"].startswith("503: ") for row in every_label), every_label
    with (failed_run / "kpi.jtl").open() as handle:
        assert {row["responseCode"] for row in csv.DictReader(handle) if row["label"]} == {"500"}, "bzt's own record differs"

    page = (failed_run / "report.html").read_text()
    assert "FAILED" in page and "503: " in page
    assert "http://" not in page and "https://" not in page, "the report must need no network"
    for name in ("throughput", "latency", "distribution"):
        assert (failed_run / f"report-{name}.png").read_bytes().startswith(b"\x89PNG")


def test_chromium_renders_the_charts(failed_run, tmp_path):
    shot = tmp_path / "shot.png"
    assert report_check.check(failed_run / "report.html", shot) == []
    assert len(report_check.chart_regions(shot)) >= 3


def test_the_check_sees_a_blank_chart(failed_run, tmp_path):
    """The same page with one chart replaced by a white image of the same size must fail the check."""
    page = (failed_run / "report.html").read_text()
    with Image.open(failed_run / "report-latency.png") as chart:
        blank = Image.new("RGB", chart.size, "white")
    buffer = io.BytesIO()
    blank.save(buffer, format="PNG")
    blank_uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    broken = re.sub(r"(alt='latency' src=')[^']+", lambda match: match.group(1) + blank_uri, page)
    assert broken != page
    (tmp_path / "report.html").write_text(broken)
    problems = report_check.check(tmp_path / "report.html", tmp_path / "shot.png")
    assert problems, "a blank chart went unnoticed"
    grey = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert grey.std() > 0  # the page itself did render


def test_compare_marks_a_slower_run(failed_run, tmp_path):
    """`load.compare` against the same run finds nothing; against a copy twice as slow it marks p99."""
    slower = tmp_path / "slower"
    shutil.copytree(failed_run, slower)
    summary = json.loads((slower / "summary.json").read_text())
    summary["p99 ms"] = 2 * summary["p99 ms"] + 1
    (slower / "summary.json").write_text(json.dumps(summary))

    page, regressions = compare.compare(failed_run, failed_run, threshold=10)
    assert regressions == [] and "no regression" in page
    page, regressions = compare.compare(failed_run, slower, threshold=10)
    assert regressions == ["p99 ms"] and "REGRESSION" in page
    assert compare.main([str(failed_run), str(slower / "report.html"), "--out", str(tmp_path / "c.html"), "--fail-on-regression"]) == 1
    assert (tmp_path / "c.html").read_text().count("data:image/png;base64,") == 6
