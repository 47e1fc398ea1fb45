"""Compare two load runs side by side (before and after a change): figures, per-label table, charts.

    python -m load.compare BEFORE AFTER [--out compare.html] [--threshold 10]

BEFORE and AFTER are run folders (load/results/artifacts/<time>) or their report.html files. Both
must have a report (`python -m load.report RUN_DIR` writes one for an older run). Prints the figures
with the change and writes one self-contained HTML page (default: load/results/compare-<before>-vs-<after>.html).
A change worse than --threshold percent is marked a regression: higher response times or failures,
lower requests/s. Exit code 1 when one is marked and --fail-on-regression is given.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

from load.report import CHARTS, RESULTS, STYLE, embedded_png, html_table, shown_path

FIGURES = ["requests", "failures", "failure %", "req/s", "steady req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "server CPU ms/request"]
LABEL_FIGURES = ["requests", "failures", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s"]
HIGHER_IS_BETTER = {"requests", "req/s", "steady req/s"}


def run_folder(path: Path) -> Path:
    folder = path.parent if path.suffix == ".html" else path
    if not (folder / "summary.json").exists():
        raise SystemExit(f"error: {path} has no report (run `python -m load.report {folder}` first)")
    return folder.resolve()


def change(name: str, before, after, threshold: float) -> tuple[str, bool]:
    """The change from `before` to `after` as text, and whether it is a regression."""
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return "", False
    if before == 0:
        worse = after > 0 and name not in HIGHER_IS_BETTER and name in ("failures", "failure %")
        return ("new" if after else "="), worse
    percent = 100 * (after - before) / before
    worse = percent < -threshold if name in HIGHER_IS_BETTER else percent > threshold
    return f"{percent:+.1f}%", worse


def rows(names: list[str], before: dict, after: dict, threshold: float) -> list[dict]:
    table = []
    for name in names:
        text, worse = change(name, before.get(name), after.get(name), threshold)
        table.append(
            {"figure": name, "before": before.get(name), "after": after.get(name), "change": text, "": "REGRESSION" if worse else ""}
        )
    return table


def compare(before_dir: Path, after_dir: Path, threshold: float) -> tuple[str, list[str]]:
    """The comparison page and the regressions found."""
    before, after = (json.loads((d / "summary.json").read_text()) for d in (before_dir, after_dir))
    overall = rows(FIGURES, before, after, threshold)
    regressions = [row["figure"] for row in overall if row[""]]
    sections = []
    after_labels = {row["label"]: row for row in after["labels"]}
    for label in before["labels"]:
        if label["label"] in after_labels:
            label_rows = rows(LABEL_FIGURES, label, after_labels[label["label"]], threshold)
            regressions += [f"{label['label']} {row['figure']}" for row in label_rows if row[""]]
            sections.append(f"<h3>{html.escape(label['label'])}</h3>{html_table(label_rows, {'REGRESSION': 'FAILED'})}")
    charts = "".join(
        f"<h3>{html.escape(title)}</h3><table class='pair'><tr><th>before</th><th>after</th></tr><tr>"
        + "".join(f"<td><img alt='{name}' src='{embedded_png(d / f'report-{name}.png')}'></td>" for d in (before_dir, after_dir))
        + "</tr></table>"
        for name, title in CHARTS.items()
    )
    verdict = f"<span class='FAILED'>{len(regressions)} regression(s)</span>" if regressions else "<span class='held'>no regression</span>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Load runs compared</title>
<style>{STYLE} body {{ max-width: 1400px; }} .pair td {{ width: 50%; vertical-align: top; }}</style></head><body>
<h1>Load runs compared</h1>
<p>before: <a href="{html.escape((before_dir / "report.html").as_uri())}">{html.escape(shown_path(before_dir))}</a><br>
after: <a href="{html.escape((after_dir / "report.html").as_uri())}">{html.escape(shown_path(after_dir))}</a></p>
<p class="verdict">{verdict} (threshold {threshold:g}%: higher response times or failures, lower requests/s)</p>
<h2>Whole run</h2>{html_table(overall, {"REGRESSION": "FAILED"})}
<h2>Per label</h2>{"".join(sections)}
<h2>Charts</h2>{charts}
</body></html>
"""
    return page, regressions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path, help="run folder or report.html of the run before the change")
    parser.add_argument("after", type=Path, help="run folder or report.html of the run after the change")
    parser.add_argument("--out", type=Path, help="the HTML page to write")
    parser.add_argument("--threshold", type=float, default=10.0, help="percent worse that counts as a regression (default: %(default)s)")
    parser.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is marked")
    args = parser.parse_args(argv)
    before_dir, after_dir = run_folder(args.before), run_folder(args.after)
    page, regressions = compare(before_dir, after_dir, args.threshold)
    out = args.out or RESULTS / f"compare-{before_dir.name}-vs-{after_dir.name}.html"
    out.write_text(page)
    before, after = (json.loads((d / "summary.json").read_text()) for d in (before_dir, after_dir))
    print(f"{'figure':<24} {'before':>10} {'after':>10} {'change':>9}")
    for row in rows(FIGURES, before, after, args.threshold):
        print(f"{row['figure']:<24} {row['before']!s:>10} {row['after']!s:>10} {row['change']:>9} {row['']}")
    print(f"{len(regressions)} regression(s){': ' + ', '.join(regressions) if regressions else ''}")
    print(f"comparison: {shown_path(out)}")
    return 1 if regressions and args.fail_on_regression else 0


if __name__ == "__main__":
    sys.exit(main())
