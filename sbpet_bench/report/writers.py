"""Leaderboard writers: markdown, CSV (numbers as numbers), JSON and HTML."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

from .html import render_html
from .leaderboard import Leaderboard, build_leaderboard, is_number
from .tradeoff import describe, table, tradeoff

FILENAMES = {"md": "leaderboard.md", "csv": "leaderboard.csv", "json": "leaderboard.json", "html": "report.html"}


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(results: dict[str, Any], board: Leaderboard) -> str:
    ds, cfg = results.get("dataset") or {}, results.get("config") or {}
    lines = ["# sbpet leaderboard", "",
             f"Data: `{_md(ds.get('path', ''))}` (fingerprint `{_md(ds.get('fingerprint', ''))}`), {ds.get('n_eval', '?')} images evaluated; "
             f"per_class={cfg.get('per_class')}, seed={cfg.get('seed')}, bootstrap={cfg.get('bootstrap')}. "
             "↑ higher is better, ↓ lower is better; value ± half the 95% CI; **best** among protected conditions; the originals row is the reference.", ""]
    header = ["condition", "N"] + [_md(c.label) for c in board.columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in board.rows:
        name = f"*{_md(r.label)}*" if r.is_reference else _md(r.label) + ("" if r.status == "ok" else f" ({_md(r.status)})")
        cells = []
        for c in board.columns:
            cell = r.cells.get(c.key)
            text = cell.text() if cell else ""
            cells.append(f"**{text}**" if cell and cell.best else text)
        lines.append("| " + " | ".join([name, str(r.n_images if r.n_images is not None else "")] + cells) + " |")
    t = tradeoff(results)
    if t is not None and t.comparisons:
        head, rows = table(t)
        lines += ["", "## At equal privacy", "", _md(describe(t)), "",
                  "| " + " | ".join(head) + " |", "|" + "|".join([":---"] * 4 + ["---:"] * (len(head) - 5) + [":---"]) + "|"]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    lines += ["", "## Conventions", ""]
    seen: set[str] = set()
    for c in board.columns:
        if c.metric not in seen:
            seen.add(c.metric)
            lines.append(f"- **{_md(c.metric)}**: {_md(c.convention)}")
    return "\n".join(lines) + "\n"


def _num(x: Any) -> Any:
    return x if is_number(x) else ""  # empty for missing and NaN: readers parse the rest as numbers


def write_csv(board: Leaderboard, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["pet", "attacker", "run", "status", "n_images"] + [k for c in board.columns for k in (c.key, c.key + ":ci_low", c.key + ":ci_high")])
        for r in board.rows:
            row: list[Any] = [r.pet, r.attacker, r.run, r.status, _num(r.n_images)]
            for c in board.columns:
                cell = r.cells.get(c.key)
                row += [_num(cell.value), _num(cell.ci_low), _num(cell.ci_high)] if cell else ["", "", ""]
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


def write_reports(results: dict, out_dir: Path, formats: Iterable[str] = ("md", "csv", "json", "html"), run_dir: Path | None = None) -> list[Path]:
    """Write the leaderboard of ``results`` in each format into ``out_dir``; returns the files written.

    Sample image paths in ``results`` are relative to ``run_dir`` (default: ``out_dir``);
    the HTML embeds them, so it stands alone.
    """
    formats = list(formats)
    unknown = sorted(set(formats) - set(FILENAMES))
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {sorted(FILENAMES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    board = build_leaderboard(results)
    written = []
    for fmt_name in formats:
        path = out_dir / FILENAMES[fmt_name]
        if fmt_name == "md":
            path.write_text(to_markdown(results, board), encoding="utf-8")
        elif fmt_name == "csv":
            write_csv(board, path)
        elif fmt_name == "json":
            path.write_text(json.dumps(json_safe(board.to_dict()), indent=1, ensure_ascii=False), encoding="utf-8")
        else:
            path.write_text(render_html(results, board, Path(run_dir) if run_dir is not None else out_dir), encoding="utf-8")
        written.append(path)
    return written
