"""The HTML report in headless Chromium: the script runs under its CSP, the table sorts, plots render, names stay inert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from sbpet_bench.report import build_leaderboard, write_reports
from test_report import make_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium chromium-driver)")
EVIL = "<script>document.title='pwned'</script>"


def _chromium(tmp: Path, *args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}"]
    done = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("browser")
    results = make_results(run, pets=("blur", "pridss", EVIL), n_samples=2)
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
    table = dom[dom.index('id="leaderboard"'):dom.index("</table>", dom.index('id="leaderboard"'))]
    rows = re.findall(r"<tr[ >].*?</tr>", table, flags=re.S)
    assert len(rows) == 1 + len(board.rows)
    # sorted ascending by EER: the first body row is the condition with the lowest EER, empty cells last
    eers = {r.label: r.cells["eer@ver[protected-vs-original]"].value for r in board.rows if "eer@ver[protected-vs-original]" in r.cells}
    first = re.search(r'<td class="name" data-v="([^"]*)"', rows[1]).group(1)
    assert first.replace("&gt;", ">") == min(eers, key=eers.get)
    assert 'aria-sort="ascending"' in table
    plots = re.findall(r'<img alt="(ROC curves|DET curves|Privacy-utility)[^"]*" title="[^"]*" src="data:image/png;base64,', dom)
    # ROC per classifier, DET per verifier x protocol, privacy-utility per protocol + one with the attacks
    assert len(plots) == 1 + 2 + 2 + 1


def test_screenshot_renders(report):
    run, _ = report
    shot = run / "shot.png"
    _chromium(run, "--window-size=1200,1800", f"--screenshot={shot}", f"file://{run / 'report.html'}")
    with Image.open(shot) as im:
        assert im.size == (1200, 1800)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, plots and faces, not a blank page
