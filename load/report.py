"""The load lab's own report of one Taurus run: one self-contained HTML file and PNG charts, offline.

    python -m load.report RUN_DIR          # RUN_DIR: a Taurus artifacts folder, e.g. load/results/latest

bzt-config.yml runs this after every run (a shellexec post-process step), so it normally needs no
calling by hand. It reads only the run's own files:

  * locust's statistics, which bzt-config.yml asks locust to write (LOCUST_CSV): locust_stats.csv
    (per label), locust_stats_history.csv (per second), locust_failures.csv (the real status of every
    failure: bzt's kpi.jtl records each one as 500);
  * bzt's kpi.jtl (every request: time, label, response time) for percentiles over time and the
    distribution, effective.json (users, ramp-up, hold, pass/fail criteria) and the JUnit file of the
    pass/fail verdicts;
  * context.json, when `python -m load.run` or `python -m load.capacity` started the server: workers,
    database, and the CPU the server and PostgreSQL spent during the run.

Writes RUN_DIR/report.html (charts embedded, nothing fetched when opened), RUN_DIR/report-*.png,
RUN_DIR/summary.json (the figures `python -m load.compare` reads), and points load/results/latest at
RUN_DIR.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from load.process_cpu import tree_cpu, tree_cpu_of_pid  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "load" / "results"
CONTEXT_ENV = "LOAD_RUN_CONTEXT"  # a JSON file the lab writes before starting bzt (see capture_context)
CHARTS = {
    "throughput": "Requests/s, failures/s and active users",
    "latency": "Response time percentiles over time",
    "distribution": "Response time distribution",
}


@dataclass
class Run:
    folder: Path
    config: dict
    context: dict
    started: float  # epoch seconds of the first request
    seconds: np.ndarray  # per request: seconds since `started`
    elapsed_ms: np.ndarray
    history: list[dict]  # locust's per-second aggregated rows
    labels: list[dict]  # locust's per-label rows, the aggregate last
    failures: list[dict]
    criteria: list[dict] = field(default_factory=list)


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


def run_config(folder: Path) -> dict:
    effective = json.loads((folder / "effective.json").read_text())
    execution = effective.get("execution") or [{}]
    execution = execution[0] if isinstance(execution, list) else execution
    users = execution.get("concurrency", 0)
    if isinstance(users, dict):
        users = sum(value for value in users.values() if isinstance(value, (int, float)))
    env = effective.get("settings", {}).get("env", {})
    return {
        "users": users,
        "ramp-up": execution.get("ramp-up", "0"),
        "hold-for": execution.get("hold-for", "0"),
        "script": shown_path(Path(effective.get("scenarios", {}).get(execution.get("scenario", ""), {}).get("script", ""))),
        "rate per user (req/s)": env.get("LOAD_RATE_PER_USER") or "closed loop (think time)",
        "reporting": effective.get("reporting", []),
    }


def pass_fail(config: dict) -> list[dict]:
    """Each criterion with its verdict, from the JUnit file bzt's pass-fail data source wrote."""
    modules = config["reporting"]
    junit = next((m.get("filename") for m in modules if m.get("module") == "junit-xml" and m.get("data-source") == "pass-fail"), None)
    path = PROJECT_ROOT / junit if junit else None
    if path is None or not path.exists():
        criteria = [c for m in modules if m.get("module") == "passfail" for c in m.get("criteria", [])]
        return [{"criterion": str(c), "verdict": "not evaluated", "detail": ""} for c in criteria]
    results = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        detail = "" if problem is None else (problem.get("message") or problem.text or "").strip()
        results.append({"criterion": case.get("name", ""), "verdict": "held" if problem is None else "FAILED", "detail": detail})
    return results


def load_run(folder: Path) -> Run:
    config = run_config(folder)
    rows = read_csv(folder / "kpi.jtl")
    stamps = np.array([float(row["timeStamp"]) / 1000 for row in rows if row["label"]])
    elapsed = np.array([float(row["elapsed"]) for row in rows if row["label"]])
    started = float(stamps.min()) if stamps.size else 0.0
    context_file = folder / "context.json"
    return Run(
        folder=folder,
        config=config,
        context=json.loads(context_file.read_text()) if context_file.exists() else {},
        started=started,
        seconds=stamps - started,
        elapsed_ms=elapsed,
        history=[row for row in read_csv(folder / "locust_stats_history.csv") if row["Name"] == "Aggregated"],
        labels=read_csv(folder / "locust_stats.csv"),
        failures=read_csv(folder / "locust_failures.csv"),
        criteria=pass_fail(config),
    )


def failure_status(error: str) -> str:
    """The real outcome behind one of locust's failure messages (see _judge in load/locustfile.py)."""
    match = re.search(r"HTTP (\d{3})", error)
    if match:
        return match.group(1)
    if "no response" in error:
        return "no response"
    if "slower than" in error:
        return "over 3 s"
    return error[:60]


def locust_cpu_warning(folder: Path) -> bool:
    """Whether locust said its own CPU was saturated: then the figures measure the generator too."""
    return any(
        path.exists() and "CPU usage above" in path.read_text(errors="replace") for path in (folder / "locust.log", folder / "locust.err")
    )


def label_table(run: Run) -> list[dict]:
    table = []
    for row in run.labels:
        failures: dict[str, int] = {}
        for failure in run.failures:
            if failure["Name"] == row["Name"] or row["Name"] == "Aggregated":
                status = failure_status(failure["Error"])
                failures[status] = failures.get(status, 0) + int(failure["Occurrences"])
        table.append(
            {
                "label": "all" if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}".replace("POST POST", "POST"),
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "failures by status": ", ".join(f"{status}: {count}" for status, count in sorted(failures.items())) or "none",
                "p50 ms": number(row["50%"]),
                "p95 ms": number(row["95%"]),
                "p99 ms": number(row["99%"]),
                "max ms": round(number(row["Max Response Time"]) or 0, 1),
                "req/s": round(number(row["Requests/s"]) or 0, 1),
            }
        )
    return table


def seconds_of(duration: str | int | float) -> float:
    """Seconds in a Taurus duration: 90, "90s", "1m30s", "2h"."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "": 1}
    return float(sum(float(value) * units[unit] for value, unit in re.findall(r"([\d.]+)\s*([hms]?)", duration)))


def percentile(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values.size else None


def summary(run: Run) -> dict:
    """The run's headline figures (also what load.compare and load.capacity read).

    "steady" figures leave out the ramp-up: the load the hold phase offered, at full users."""
    total = next((row for row in label_table(run) if row["label"] == "all"), {})
    duration = float(run.seconds.max()) if run.seconds.size else 0.0
    requests = total.get("requests", 0)
    ramp_up = min(seconds_of(run.config["ramp-up"]), duration)
    steady = run.elapsed_ms[run.seconds >= ramp_up]
    figures = {
        "requests": requests,
        "failures": total.get("failures", 0),
        "failure %": round(100 * total.get("failures", 0) / max(requests, 1), 3),
        "req/s": round(requests / duration, 1) if duration else 0.0,
        "p50 ms": percentile(run.elapsed_ms, 50),
        "p95 ms": percentile(run.elapsed_ms, 95),
        "p99 ms": percentile(run.elapsed_ms, 99),
        "max ms": round(float(run.elapsed_ms.max()), 1) if run.elapsed_ms.size else None,
        "criteria held": all(c["verdict"] == "held" for c in run.criteria),
        "steady req/s": round(steady.size / (duration - ramp_up), 1) if duration > ramp_up else 0.0,
        "steady p50 ms": percentile(steady, 50),
        "steady p95 ms": percentile(steady, 95),
        "steady p99 ms": percentile(steady, 99),
        "locust CPU warning": locust_cpu_warning(run.folder),
    }
    for who in ("server", "database", "generator"):
        cpu = run.context.get(f"{who}_cpu_seconds")
        if cpu is not None and requests:
            figures[f"{who} CPU ms/request"] = round(1000 * cpu / requests, 3)
    return figures


def chart_throughput(run: Run, path: Path) -> None:
    times = [int(row["Timestamp"]) for row in run.history]
    start = times[0] if times else 0
    seconds = [t - start for t in times]
    figure, axis = plt.subplots(figsize=(9, 3.6))
    axis.plot(seconds, [number(row["Requests/s"]) or 0 for row in run.history], label="requests/s", color="tab:blue")
    axis.plot(seconds, [number(row["Failures/s"]) or 0 for row in run.history], label="failures/s", color="tab:red")
    axis.set_xlabel("seconds since start")
    axis.set_ylabel("per second (locust)")
    axis.set_ylim(bottom=0)
    users_axis = axis.twinx()
    users_axis.plot(seconds, [int(row["User Count"]) for row in run.history], label="active users", color="tab:gray", linestyle="--")
    users_axis.set_ylabel("active users")
    users_axis.set_ylim(bottom=0)
    lines = axis.get_legend_handles_labels()[0] + users_axis.get_legend_handles_labels()[0]
    axis.legend(lines, [line.get_label() for line in lines], loc="upper left", fontsize="small")
    axis.set_title(CHARTS["throughput"])
    axis.grid(alpha=0.3)
    save(figure, path)


def chart_latency(run: Run, path: Path) -> None:
    duration = float(run.seconds.max()) if run.seconds.size else 1.0
    window = max(1.0, round(duration / 60))
    edges = np.arange(0, duration + window, window)
    middles, series = [], {50: [], 95: [], 99: []}
    for left in edges:
        inside = run.elapsed_ms[(run.seconds >= left) & (run.seconds < left + window)]
        if inside.size:
            middles.append(left + window / 2)
            for q, value in zip(series, np.percentile(inside, list(series))):
                series[q].append(value)
    figure, axis = plt.subplots(figsize=(9, 3.6))
    for q, color in zip(series, ("tab:green", "tab:orange", "tab:red")):
        axis.plot(middles, series[q], label=f"p{q}", color=color, marker=".")
    axis.set_xlabel(f"seconds since start ({window:g} s windows)")
    axis.set_ylabel("response time, ms")
    axis.set_ylim(bottom=0)
    axis.legend(loc="upper left", fontsize="small")
    axis.set_title(CHARTS["latency"])
    axis.grid(alpha=0.3)
    save(figure, path)


def chart_distribution(run: Run, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(9, 3.6))
    values = np.maximum(run.elapsed_ms, 0.5)
    if values.size:
        bins = np.logspace(np.log10(values.min()), np.log10(values.max() * 1.01), 50)
        axis.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        axis.set_xscale("log")
        for q, color in ((50, "tab:green"), (95, "tab:orange"), (99, "tab:red")):
            value = float(np.percentile(values, q))
            axis.axvline(value, color=color, linestyle="--", label=f"p{q} {value:.0f} ms")
        axis.legend(fontsize="small")
    axis.set_xlabel("response time, ms (log scale)")
    axis.set_ylabel("requests")
    axis.set_title(CHARTS["distribution"])
    axis.grid(alpha=0.3)
    save(figure, path)


def save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def embedded_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def html_table(rows: list[dict], classes: dict[str, str] | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = ""
    for row in rows:
        cells = "".join(
            f"<td class='{(classes or {}).get(str(row[c]), '')}'>{html.escape('' if row[c] is None else str(row[c]))}</td>" for c in columns
        )
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.held { color: #1a7f37; font-weight: bold; } .FAILED { color: #c62828; font-weight: bold; }
.verdict { font-size: 1.3em; } img { max-width: 100%; border: 1px solid #ddd; margin-bottom: 1em; }
.small { color: #666; font-size: 0.85em; }
"""


def render(run: Run, charts: dict[str, Path]) -> str:
    figures = summary(run)
    held = figures["criteria held"]
    verdict = "held" if held else "FAILED"
    config = {key: value for key, value in run.config.items() if key != "reporting"}
    config.update({key: run.context[key] for key in ("workers", "database", "server") if key in run.context})
    config["commit"] = run.context.get("commit") or git_commit()
    cpu_rows = [
        {
            "process": who,
            "CPU seconds": run.context[f"{who}_cpu_seconds"],
            "ms per request": figures.get(f"{who} CPU ms/request"),
            "cores busy (average)": round(run.context[f"{who}_cpu_seconds"] / max(float(run.seconds.max() or 1), 1), 2),
        }
        for who in ("server", "database", "generator")
        if run.context.get(f"{who}_cpu_seconds") is not None
    ]
    cpu_note = (
        "server: gunicorn master and workers; database: the PostgreSQL cluster the server uses; generator: bzt and locust"
        if cpu_rows
        else "Not known: the lab did not start this server (run it through <code>make load</code> for CPU figures)."
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started)) if run.started else "?"
    images = "".join(f"<h3>{html.escape(CHARTS[name])}</h3><img alt='{name}' src='{embedded_png(path)}'>" for name, path in charts.items())
    headline = {key: value for key, value in figures.items() if key not in ("criteria held", "locust CPU warning")}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Load test {html.escape(run.folder.name)}</title>
<style>{STYLE}</style></head><body>
<h1>Load test {html.escape(run.folder.name)}</h1>
<p class="verdict">Pass/fail criteria: <span class="{verdict}">{verdict}</span>
&nbsp; {figures["requests"]} requests, {figures["failures"]} failed, {figures["req/s"]} req/s, p99 {figures["p99 ms"]} ms</p>
<p class="small">first request {started}; folder {html.escape(shown_path(run.folder))}</p>
{"<p class='FAILED'>locust reported its CPU above 90%: the load generator limited this run.</p>" if figures["locust CPU warning"] else ""}
<h2>Pass/fail criteria</h2>{html_table(run.criteria, {"held": "held", "FAILED": "FAILED"})}
<h2>Summary</h2>{html_table([headline])}
<h2>Per label</h2>
<p class="small">Percentiles, max and req/s are locust's; failures by status are locust's own failure messages
(the real status code; bzt's kpi.jtl records every failure as 500).</p>{html_table(label_table(run))}
<h2>Charts</h2>{images}
<h2>Configuration</h2>{html_table([{"setting": k, "value": v} for k, v in config.items()])}
<h2>CPU spent during the run</h2><p class="small">{cpu_note}</p>{html_table(cpu_rows) if cpu_rows else ""}
</body></html>
"""


def shown_path(path: Path) -> str:
    """`path` relative to the project when it is inside it (reports get shared and screenshotted)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def capture_context(folder: Path) -> None:
    """Finish the context the lab wrote before bzt started: CPU spent since then, commit; saved in the run's folder.

    This runs inside bzt's post-processing, while the server the lab started is still up.
    """
    source = os.environ.get(CONTEXT_ENV)
    if not source or not Path(source).exists() or (folder / "context.json").exists():
        return
    context = json.loads(Path(source).read_text())
    for who in ("server", "database"):
        pid, before = context.pop(f"{who}_pid", None), context.pop(f"{who}_cpu_start", None)
        now = tree_cpu_of_pid(pid) if pid else None
        if now is not None and before is not None:
            context[f"{who}_cpu_seconds"] = round(now - before, 2)
    bzt = bzt_process()
    generator_before = context.pop("generator_cpu_start", None)
    if bzt is not None and generator_before is not None:
        this_step = psutil.Process().cpu_times()  # this post-processing step is bzt's child, not load
        context["generator_cpu_seconds"] = round(tree_cpu(bzt) - generator_before - this_step.user - this_step.system, 2)
    context["commit"] = git_commit()
    (folder / "context.json").write_text(json.dumps(context, indent=2))


def bzt_process() -> psutil.Process | None:
    """The bzt process running this post-processing step (an ancestor of this one)."""
    for parent in psutil.Process().parents():
        try:
            if any("bzt" in Path(part).name for part in parent.cmdline()[:2]):
                return parent
        except psutil.Error:
            continue
    return None


def build(folder: Path) -> Path:
    run = load_run(folder)
    charts = {name: folder / f"report-{name}.png" for name in CHARTS}
    chart_throughput(run, charts["throughput"])
    chart_latency(run, charts["latency"])
    chart_distribution(run, charts["distribution"])
    report = folder / "report.html"
    report.write_text(render(run, charts))
    (folder / "summary.json").write_text(json.dumps({"run": folder.name, **summary(run), "labels": label_table(run)}, indent=2))
    point_latest_at(folder)
    return report


def point_latest_at(folder: Path) -> None:
    latest = RESULTS / "latest"
    if folder.resolve().parent.parent != RESULTS.resolve():
        return
    if latest.is_symlink():
        latest.unlink()
    if not latest.exists():
        latest.symlink_to(folder.resolve().relative_to(RESULTS.resolve()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a Taurus artifacts folder (load/results/artifacts/<time>)")
    args = parser.parse_args(argv)
    folder = args.run_dir.resolve()
    if not (folder / "effective.json").exists():
        raise SystemExit(f"error: {args.run_dir} is not a Taurus run folder (no effective.json)")
    capture_context(folder)
    report = build(folder)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
