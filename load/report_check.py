"""Open a load report in headless Chromium, take a screenshot, and check the charts rendered.

    python -m load.report_check load/results/latest/report.html [--screenshot shot.png]

Chromium (Debian's package `chromium`) runs with a fresh profile, no network services and no
sandbox (CI runs as root). The check reads the screenshot, not the HTML: the page must show at
least as many chart-sized regions of coloured pixels (plot lines and bars; text and tables are
grey) as the report has charts, and each region must vary (not a blank or broken image).
Exit code 0 when it rendered, 1 when it did not, 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BROWSERS = ("chromium", "chromium-browser")
WINDOW = (1100, 3000)
COLOURED = 60  # max - min over RGB above this: a plot colour, not grey text or a table rule
MIN_CHART_HEIGHT = 150  # px: a chart is drawn 360 px high; a green "held" word is ~20
MAX_GAP = 40  # px of rows without colour that still belong to the same chart
MIN_STD = 20.0  # grey-level standard deviation of a chart region; a blank image is ~0


def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(page: Path, out: Path, timeout: float = 90.0) -> None:
    chromium = browser()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed (Debian/Ubuntu: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="report-check-") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ]
        subprocess.run(command, capture_output=True, timeout=timeout, check=True)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {page}")


def chart_regions(image: Path) -> list[tuple[int, int, float]]:
    """(top, bottom, grey-level std) of every tall band of rows holding plot colours."""
    pixels = np.asarray(Image.open(image).convert("RGB")).astype(int)
    coloured_rows = ((pixels.max(axis=2) - pixels.min(axis=2)) > COLOURED).sum(axis=1) >= 3
    bands, top, last = [], None, None
    for row in np.flatnonzero(coloured_rows):
        if top is None:
            top = last = row
        elif row - last > MAX_GAP:
            bands.append((top, last))
            top = row
        last = row
    if top is not None:
        bands.append((top, last))
    grey = pixels.mean(axis=2)
    return [(int(t), int(b), float(grey[t : b + 1].std())) for t, b in bands if b - t >= MIN_CHART_HEIGHT]


def check(page: Path, shot: Path, expected_charts: int = 3) -> list[str]:
    """Problems found in the rendered page (empty when it rendered)."""
    screenshot(page, shot)
    regions = chart_regions(shot)
    problems = []
    if len(regions) < expected_charts:
        problems.append(f"{len(regions)} chart regions on the screenshot, expected {expected_charts}: {regions}")
    problems += [f"rows {top}-{bottom} look blank (std {std:.1f})" for top, bottom, std in regions if std < MIN_STD]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.report_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("report", type=Path, help="a report.html written by load.report")
    parser.add_argument("--screenshot", type=Path, help="where to keep the screenshot (default: report-screenshot.png beside the report)")
    args = parser.parse_args(argv)
    shot = args.screenshot or args.report.parent / "report-screenshot.png"
    if browser() is None:
        print("chromium is not installed (Debian/Ubuntu: apt-get install chromium): report not checked")
        return 2
    problems = check(args.report, shot)
    for problem in problems:
        print(f"report check: {problem}")
    print(f"report check: {'FAILED' if problems else 'rendered'}, screenshot {shot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
