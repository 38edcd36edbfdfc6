"""Render a report folder's report.html in headless Chromium to PNG slices, to look at it as a reader would.

    uv run python benchmarks/report_screenshot.py reports/NAME [--out DIR] [--width 1400] [--slice 1800]

Writes DIR/page-01.png, page-02.png, ... (the whole page, top to bottom, ``--slice`` pixels each;
default DIR: a new temporary folder) and prints the page's size and a layout check measured in the
browser: tables wider than the page (they scroll sideways), plots shown smaller than drawn (their
text shrinks with them), and headings or table cells whose text overflows its box. Slices of
reports with sample faces show faces: keep them out of the repository.

The page is rendered from a copy in a temporary folder: for the layout check the copy's
Content-Security-Policy is dropped and a measuring script added; for each capture the body is
shifted up by the slice's offset (headless Chromium captures the window only).
Needs chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

CAPTURE_MAX = 15000  # pixels per capture: Chromium's window (and GPU texture) limit is about 16,384

MEASURE_JS = """
window.addEventListener('load', function(){
  var doc = document.documentElement, out = {height: doc.scrollHeight, width: doc.scrollWidth, wide_tables: [], shrunk_plots: [],
            overflowing_text: []};
  document.querySelectorAll('.wrap').forEach(function(w){
    if (w.scrollWidth > w.clientWidth + 1) {
      var t = w.querySelector('table'), h = w.previousElementSibling;
      out.wide_tables.push({id: t && t.id || '', near: h ? h.textContent.slice(0, 60) : '', table_px: w.scrollWidth, shown_px: w.clientWidth});
    }
  });
  document.querySelectorAll('.plots img').forEach(function(img){
    if (img.naturalWidth > img.clientWidth + 1)
      out.shrunk_plots.push({title: img.title, drawn_px: img.naturalWidth, shown_px: img.clientWidth});
  });
  document.querySelectorAll('th, td, h1, h2, h3, p').forEach(function(el){
    if (el.closest('.wrap') && el.tagName !== 'P') { if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).whiteSpace !== 'nowrap')
      out.overflowing_text.push(el.tagName + ': ' + el.textContent.slice(0, 60)); }
    else if (!el.closest('.wrap') && el.scrollWidth > el.clientWidth + 1) out.overflowing_text.push(el.tagName + ': ' + el.textContent.slice(0, 60));
  });
  var pre = document.createElement('pre'); pre.id = 'sbpet-layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        sys.exit("chromium not found: apt-get install chromium (Debian) or put chromium on PATH")
    return found


def _browser(work: Path, page: Path, *args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={work / 'profile'}"]
    done = subprocess.run([chromium(), *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        sys.exit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _copy_with(source: str, target: Path, head: str = "", drop_csp: bool = False) -> Path:
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", source, count=1) if drop_csp else source
    target.write_text(text.replace("</head>", head + "</head>", 1), encoding="utf-8")
    return target


def measure(report: str, work: Path, width: int) -> dict:
    """The page's height and the layout check, measured by a script in an unrestricted copy."""
    page = _copy_with(report, work / "measure.html", f"<script>{MEASURE_JS}</script>", drop_csp=True)
    dom = _browser(work, page, f"--window-size={width},1000", "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="sbpet-layout">(.*?)</pre>', dom, flags=re.S)
    if found is None:
        sys.exit("the measuring script did not run (no layout record in the DOM)")
    return json.loads(html.unescape(found.group(1)))


def capture(report: str, work: Path, width: int, height: int) -> Image.Image:
    """The whole page as one image, from captures of at most CAPTURE_MAX pixels."""
    full = Image.new("RGB", (width, height), "white")
    for i, top in enumerate(range(0, height, CAPTURE_MAX)):
        rows = min(CAPTURE_MAX, height - top)
        shift = f"<style>body{{position:relative;top:-{top}px}}</style>" if top else ""
        page = _copy_with(report, work / f"capture-{i}.html", shift)
        png = work / f"capture-{i}.png"
        _browser(work, page, f"--window-size={width},{rows}", f"--screenshot={png}")
        with Image.open(png) as shot:
            full.paste(shot.convert("RGB").crop((0, 0, width, rows)), (0, top))
    return full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a report folder (with report.html) or the HTML file itself")
    parser.add_argument("--out", type=Path, help="folder for the PNG slices (default: a new temporary folder)")
    parser.add_argument("--width", type=int, default=1400, help="window width in CSS pixels")
    parser.add_argument("--slice", type=int, default=1800, help="height of each PNG slice")
    args = parser.parse_args()
    page = args.report / "report.html" if args.report.is_dir() else args.report
    if not page.is_file():
        sys.exit(f"{page}: no such file")
    source = page.read_text(encoding="utf-8")
    out = args.out or Path(tempfile.mkdtemp(prefix="sbpet-screenshot-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sbpet-chromium-") as tmp:
        work = Path(tmp)
        layout = measure(source, work, args.width)
        full = capture(source, work, args.width, layout["height"])
    for old in out.glob("page-*.png"):
        old.unlink()
    paths = []
    for i, top in enumerate(range(0, layout["height"], args.slice)):
        path = out / f"page-{i + 1:02d}.png"
        full.crop((0, top, args.width, min(layout["height"], top + args.slice))).save(path, optimize=True)
        paths.append(path)
    print(f"{page}: {args.width} x {layout['height']} px (page scroll width {layout['width']} px), {len(paths)} slices in {out}")
    for t in layout["wide_tables"]:
        print(f"  wide table {t['id'] or '(no id)'} after {t['near']!r}: {t['table_px']} px in {t['shown_px']} px (scrolls sideways)")
    for p in layout["shrunk_plots"]:
        print(f"  plot shown smaller than drawn: {p['title']!r} {p['drawn_px']} -> {p['shown_px']} px")
    for text in layout["overflowing_text"][:20]:
        print(f"  text overflows its box: {text!r}")
    if not (layout["wide_tables"] or layout["shrunk_plots"] or layout["overflowing_text"]):
        print("  layout check: no wide tables, shrunk plots or overflowing text")


if __name__ == "__main__":
    main()
