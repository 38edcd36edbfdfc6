"""Leaderboard writers: markdown, CSV (numbers as numbers), JSON and HTML.

A merged report may hold several data sets (``results["datasets"]``, see :mod:`.merge`):
each gets its own section (markdown heading, HTML section, JSON entry) and the CSV a
``dataset`` column. Every name in these files comes from a run (plugin names, options):
markdown escapes HTML and table syntax, and CSV text that a spreadsheet would run as a
formula is neutralised.
"""

from __future__ import annotations

import csv
import json
import math
from html import escape
from pathlib import Path
from typing import Any, Iterable

from .html import render_html
from .leaderboard import HEADLINE_NOTE, Column, Leaderboard, build_leaderboard, is_number
from .merge import dataset_label, sections
from .seeds import describe as describe_seeds
from .seeds import seed_groups
from .seeds import table as seed_table
from .tradeoff import check_privacy_by, describe, table, tradeoff

FILENAMES = {"md": "leaderboard.md", "csv": "leaderboard.csv", "json": "leaderboard.json", "html": "report.html"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

def _md(text: Any) -> str:
    """Text for a markdown table cell: HTML escaped (names come from plugins), table and code syntax inert."""
    out = escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("*", "\\*")
    return out.replace("](", "]\\(").replace("\r", " ").replace("\n", " ")


def _md_table(board: Leaderboard, columns: list[Column], headline: bool) -> list[str]:
    header = ["condition", "N"] + [_md(c.short_label if headline else c.label) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in board.rows:
        name = f"*{_md(r.label)}*" if r.is_reference else _md(r.label) + ("" if r.status == "ok" else f" ({_md(r.status)})")
        cells = []
        for c in columns:
            cell = r.cells.get(c.key)
            text = _md(c.headline_text(cell) if headline else cell.text()) if cell else ""
            cells.append(f"**{text}**" if cell and cell.best and text else text)
        lines.append("| " + " | ".join([name, str(r.n_images if r.n_images is not None else "")] + cells) + " |")
    return lines


def _md_seeds(results: dict[str, Any], board: Leaderboard, level: str) -> list[str]:
    """The spread-over-seeds table with its heading and a blank line after it; nothing when no PET ran with several seeds."""
    groups = seed_groups(results, board)
    if not groups:
        return []
    head, rows = seed_table(groups)
    lines = [f"{level} Spread over seeds", "", _md(describe_seeds(results)), "", "| " + " | ".join(_md(h) for h in head) + " |",
             "|" + "|".join([":---"] * 4 + ["---:"] * (len(head) - 4)) + "|"]
    return lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows] + [""]


def _markdown_body(results: dict[str, Any], board: Leaderboard, privacy_by: str | None, level: str) -> list[str]:
    ds, cfg = results.get("dataset") or {}, results.get("config") or {}
    lines = [f"Data: {_md(ds.get('path', ''))} (fingerprint {_md(ds.get('fingerprint', ''))}), {_md(ds.get('n_eval', '?'))} images evaluated; "
             f"per_class={_md(cfg.get('per_class'))}, seed={_md(cfg.get('seed'))}, bootstrap={_md(cfg.get('bootstrap'))}. "
             "↑ higher is better, ↓ lower is better; value ± half the 95% CI; **best** among protected conditions; the originals row is the reference.", ""]
    if board.headline:
        lines += [f"{level} Headline: the worst case", "", HEADLINE_NOTE, "",
                  *_md_table(board, board.headline_columns, headline=True), ""]
        lines += [f"- {_md(text)}" for text in board.legend] + ([""] if board.legend else [])
        lines += _md_seeds(results, board, level)
        lines += [f"{level} All metrics", ""]
    lines += _md_table(board, board.columns, headline=False)
    seeds = [] if board.headline else _md_seeds(results, board, level)
    lines += ["", *seeds[:-1]] if seeds else []
    t = tradeoff(results, privacy_by)
    if t is not None and t.comparisons:
        head, rows = table(t)
        lines += ["", f"{level} At equal privacy", "", _md(describe(t)), "",
                  "| " + " | ".join(head) + " |", "|" + "|".join([":---"] * 4 + ["---:"] * (len(head) - 5) + [":---"]) + "|"]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    lines += ["", f"{level} Conventions", ""]
    seen: set[str] = set()
    for c in board.columns:
        if c.metric not in seen:
            seen.add(c.metric)
            lines.append(f"- **{_md(c.metric)}**: {_md(c.convention)}")
    return lines


def to_markdown(results: dict[str, Any], board: Leaderboard | None = None, privacy_by: str | None = None) -> str:
    parts = sections(results)
    lines = ["# sbpet leaderboard", ""]
    if len(parts) == 1:
        lines += _markdown_body(parts[0], board or build_leaderboard(parts[0]), privacy_by, "##")
    else:
        lines += [f"{len(parts)} data sets, one section each: numbers are comparable within a section only.", ""]
        for part in parts:
            lines += [f"## Data set {_md(dataset_label(part))}", "", *_markdown_body(part, build_leaderboard(part), privacy_by, "###"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _num(x: Any) -> Any:
    return x if is_number(x) else ""  # empty for missing and NaN: readers parse the rest as numbers


def _is_numeric_text(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def csv_text(x: Any) -> Any:
    """A CSV cell a spreadsheet shows and never evaluates: text starting like a formula gets a leading quote;
    numbers (also ``-0.01`` as text) stay numbers."""
    if x is None:
        return ""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return x
    s = str(x)
    return "'" + s if s.startswith(FORMULA_STARTS) and not _is_numeric_text(s) else s


def _csv_fields(columns: list[Column], boards: list[Leaderboard]) -> list[tuple[str, str, str]]:
    """(header, column key, what) per CSV column: value, CI bounds, and where used who reached it, in-sample, chance."""
    out: list[tuple[str, str, str]] = []
    for c in columns:
        whats = ["value", "ci_low", "ci_high"]
        cells = [r.cells[c.key] for b in boards for r in b.rows if c.key in r.cells]
        if c.per_row_evaluator:
            whats.append("by")
        if any(cell.in_sample for cell in cells):
            whats.append("in_sample")
        if any(cell.distinguishable is not None for cell in cells):
            whats.append("distinguishable")
        out += [(c.key if what == "value" else f"{c.key}:{what}", c.key, what) for what in whats]
    return out


def _csv_value(cell: Any, what: str) -> Any:
    if cell is None:
        return ""
    if what in ("value", "ci_low", "ci_high"):
        return _num(getattr(cell, what))
    if what == "by":
        return csv_text(cell.by)
    flag = getattr(cell, what)
    return "" if flag is None else ("true" if flag else "false")


def write_csv(boards: list[tuple[str, Leaderboard]], path: Path) -> None:
    """One row per condition; with several data sets, a leading ``dataset`` column says whose."""
    columns = list({c.key: c for _, b in boards for c in b.columns}.values())
    fields = _csv_fields(columns, [b for _, b in boards])
    multi = len(boards) > 1
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([csv_text(h) for h in (["dataset"] if multi else []) + ["pet", "attacker", "run", "status", "n_images"] + [h for h, _, _ in fields]])
        for label, board in boards:
            for r in board.rows:
                row: list[Any] = ([csv_text(label)] if multi else []) + [csv_text(r.pet), csv_text(r.attacker), csv_text(r.run), csv_text(r.status), _num(r.n_images)]
                row += [_csv_value(r.cells.get(key), what) for _, key, what in fields]
                w.writerow(row)


def json_safe(x: Any) -> Any:
    """NaN and infinities become null so the file is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _board_json(part: dict[str, Any], board: Leaderboard) -> dict[str, Any]:
    """A leaderboard's JSON, with ``seed_spread`` (see :mod:`.seeds`) when some PET ran with several seeds."""
    groups = seed_groups(part, board)
    return {**board.to_dict(), **({"seed_spread": [g.to_dict() for g in groups]} if groups else {})}


def _json(parts: list[dict[str, Any]], boards: list[Leaderboard]) -> dict[str, Any]:
    if len(parts) == 1:
        return _board_json(parts[0], boards[0])
    return {"schema": "sbpet-leaderboard/1",
            "datasets": [{"label": dataset_label(p), "dataset": p.get("dataset"), **_board_json(p, b)} for p, b in zip(parts, boards)]}


def write_reports(results: dict, out_dir: Path, formats: Iterable[str] = ("md", "csv", "json", "html"), run_dir: Path | None = None,
                  privacy_by: str | None = None, cache: Any = None) -> list[Path]:
    """Write the leaderboard of ``results`` in each format into ``out_dir``; returns the files written.

    Sample image paths in ``results`` are relative to ``run_dir`` (default: ``out_dir``);
    the HTML embeds them, so it stands alone. ``privacy_by`` (default: the run's config
    ``privacy_by``, else the worst case) picks the privacy measure of the trade-off plot and table.
    ``cache`` (a run's :class:`sbpet_bench.cache.Cache`) keeps the drawn plots for the next unchanged run.
    """
    formats = list(formats)
    unknown = sorted(set(formats) - set(FILENAMES))
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {sorted(FILENAMES)}")
    if privacy_by is None:
        privacy_by = (results.get("config") or {}).get("privacy_by")
    parts = sections(results)
    for part in parts:
        check_privacy_by(part, privacy_by, f" in data set {dataset_label(part)}" if len(parts) > 1 else "")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    boards = [build_leaderboard(p) for p in parts]
    written = []
    for fmt_name in formats:
        path = out_dir / FILENAMES[fmt_name]
        if fmt_name == "md":
            path.write_text(to_markdown(results, boards[0] if len(parts) == 1 else None, privacy_by), encoding="utf-8")
        elif fmt_name == "csv":
            write_csv([(dataset_label(p), b) for p, b in zip(parts, boards)], path)
        elif fmt_name == "json":
            path.write_text(json.dumps(json_safe(_json(parts, boards)), indent=1, ensure_ascii=False), encoding="utf-8")
        else:
            path.write_text(render_html(results, boards, Path(run_dir) if run_dir is not None else out_dir, privacy_by, cache), encoding="utf-8")
        written.append(path)
    return written
