"""`sbpet report RUN_DIR... --out reports/NAME [--force]` (registered by the CLI as app.command("report"))."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from .merge import MergeError, merge_runs
from .writers import json_safe, write_reports


def _copy_samples(merged: dict, run_dirs: list[Path], out: Path) -> None:
    """Copy sample images under OUT/samples/<run>/ and make their paths relative to OUT."""
    roots = [(d.resolve(), run["label"]) for d, run in zip(run_dirs, merged["runs"])]
    for sample in merged["samples"]:
        for key, src in list(sample["images"].items()):
            src_path = Path(src)
            root, label = next(((r, l) for r, l in roots if r in src_path.parents), (None, None))
            if root is None or not src_path.is_file():
                sample["images"][key] = ""  # shown as missing; never copy from outside a run directory
                continue
            dest = out / "samples" / label / src_path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_path, dest)
            sample["images"][key] = dest.relative_to(out).as_posix()


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (each with a results.json) to merge into one leaderboard.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory to write, e.g. reports/NAME.")],
    force: Annotated[bool, typer.Option("--force", help="Merge even when the runs differ in data or protocol.")] = False,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Include the sample faces; leave them out to publish a "
                                         "report on data that must not be redistributed (e.g. LFW).")] = True,
) -> None:
    """Merge runs into one leaderboard: markdown, CSV, JSON and a self-contained HTML page."""
    out = Path(out)
    if any(out.resolve() == Path(d).resolve() for d in run_dirs):
        typer.echo(f"error: --out {out} is one of the run directories; choose a new folder, e.g. reports/NAME", err=True)
        raise typer.Exit(2)
    try:
        merged = merge_runs([Path(d) for d in run_dirs], force=force)
    except MergeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    if images:
        _copy_samples(merged, [Path(d) for d in run_dirs], out)
    else:
        for sample in merged["samples"]:
            sample["images"] = {}
    (out / "results.json").write_text(json.dumps(json_safe(merged), indent=1, ensure_ascii=False), encoding="utf-8")
    for path in write_reports(merged, out):
        typer.echo(str(path))
    for warning in merged["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
