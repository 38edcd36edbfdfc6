"""The HTML report in headless Chromium: the script runs under its CSP, the tables sort, plots render, names stay inert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from sbpet_bench.report import build_leaderboard, write_reports
from sbpet_bench.report.plots import det_plots, roc_plots
from test_report import make_results, make_table2_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium chromium-driver)")
EVIL = "<script>document.title='pwned'</script>"


def _chromium(tmp: Path, *args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}"]
    done = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rows(dom: str, table_id: str) -> list[str]:
    start = dom.index(f'id="{table_id}"')
    return re.findall(r"<tr[ >].*?</tr>", dom[start:dom.index("</table>", start)], flags=re.S)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("browser")
    results = make_results(run, pets=("blur", "pridss", EVIL), n_samples=2)
    write_reports(results, run, formats=("html",))
    return run, results


@pytest.fixture(scope="module")
def table2(tmp_path_factory) -> tuple[Path, dict]:
    """A Table-2-sized report: 7 PETs x (none + 3 attacks) + the originals = 32 conditions, with the tiered metrics."""
    run = tmp_path_factory.mktemp("table2")
    results = make_table2_results(run, n_samples=2)
    write_reports(results, run, formats=("html",))
    return run, results


def test_dom_after_scripts_has_sorted_table_plots_and_inert_names(report):
    run, results = report
    board = build_leaderboard(results)
    col = 2 + [c.key for c in board.columns].index("eer@ver[protected-vs-original]")
    dom = _chromium(run, "--dump-dom", f"file://{run / 'report.html'}#sort={col}")
    assert 'data-ready="1"' in dom  # the inline script ran under the page's CSP
    assert "<title>pwned</title>" not in dom and "<title>sbpet report" in dom  # the PET name did not run
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    rows = _rows(dom, "leaderboard")
    assert len(rows) == 1 + len(board.rows)
    # sorted ascending by EER: the first body row is the condition with the lowest EER, empty cells last
    eers = {r.label: r.cells["eer@ver[protected-vs-original]"].value for r in board.rows if "eer@ver[protected-vs-original]" in r.cells}
    first = re.search(r'<td class="name" data-v="([^"]*)"', rows[1]).group(1)
    assert first.replace("&gt;", ">") == min(eers, key=eers.get)
    assert 'aria-sort="ascending"' in rows[0]
    plots = re.findall(r'<img alt="(ROC curves|DET curves|Privacy-utility)[^"]*" title="[^"]*" src="data:image/png;base64,', dom)
    n_pu = len(re.findall(r'<img alt="Privacy-utility', dom))
    assert len(plots) == len(roc_plots(results)) + len(det_plots(results)) + n_pu and n_pu >= 2


def test_headline_table_sorts_by_the_worst_case(table2):
    run, results = table2
    board = build_leaderboard(results)
    col = 2 + board.headline.index("worst_privacy_auc")
    dom = _chromium(run, "--dump-dom", f"file://{run / 'report.html'}#sort-headline=-{col}")
    rows = _rows(dom, "headline")
    assert len(rows) == 1 + 32 and 'data-ready="1"' in dom
    worst = {r.label: r.cells["worst_privacy_auc"].value for r in board.rows}
    first = re.search(r'<td class="name" data-v="([^"]*)"', rows[1]).group(1).replace("&gt;", ">")
    assert first == max(worst, key=worst.get)  # descending: the leakiest condition first
    assert 'aria-sort="descending"' in rows[0]


@pytest.mark.parametrize("which", ["report", "table2"])
def test_screenshot_renders(which, request):
    run, _ = request.getfixturevalue(which)
    shot = run / "shot.png"
    _chromium(run, "--window-size=1400,2400", f"--screenshot={shot}", f"file://{run / 'report.html'}")
    with Image.open(shot) as im:
        assert im.size == (1400, 2400)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, plots and faces, not a blank page
