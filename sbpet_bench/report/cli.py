"""`sbpet report RUN_DIR... --out reports/NAME [--force] [--privacy-by NAME]` (registered by the CLI as app.command("report"))."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer

# The report's modules (matplotlib, scipy) load when the command runs, not when `sbpet` starts.


def _copy_samples(merged: dict, out: Path) -> None:
    """Copy sample images under OUT/samples/<run>/ and make their paths relative to OUT."""
    from .merge import sections

    roots = [(Path(run["dir"]).resolve(), run["label"]) for run in merged["runs"]]
    for sample in (s for part in sections(merged) for s in part.get("samples") or []):
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
    force: Annotated[bool, typer.Option("--force", help="Merge runs on the same data even when they differ in protocol "
                                  "(runs on different data sets always merge, a section each).")] = False,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Include the sample faces; leave them out to publish a "
                                         "report on data that must not be redistributed (e.g. LFW).")] = True,
    privacy_by: Annotated[Optional[str], typer.Option("--privacy-by", metavar="NAME", help="Classifier whose privacy AUC the "
                          "privacy-utility plot and the equal-privacy table use [default: the run's config privacy_by, else the "
                          "worst case over classifiers and tiers].")] = None,
) -> None:
    """Merge runs into one leaderboard: markdown, CSV, JSON and a self-contained HTML page."""
    from .merge import MergeError, merge_runs, sections
    from .tradeoff import check_privacy_by
    from .writers import json_safe, write_reports

    out = Path(out)
    if any(out.resolve() == Path(d).resolve() for d in run_dirs):
        typer.echo(f"error: --out {out} is one of the run directories; choose a new folder, e.g. reports/NAME", err=True)
        raise typer.Exit(2)
    try:
        merged = merge_runs([Path(d) for d in run_dirs], force=force)
        chosen = privacy_by if privacy_by is not None else (merged.get("config") or {}).get("privacy_by")
        for part in sections(merged):
            check_privacy_by(part, chosen, f" in the runs on {(part.get('dataset') or {}).get('path', 'one data set')}")
    except (MergeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if privacy_by is not None:  # the published results.json re-renders with the same choice
        merged.setdefault("config", {})["privacy_by"] = privacy_by
    out.mkdir(parents=True, exist_ok=True)
    if images:
        _copy_samples(merged, out)
    else:
        for part in sections(merged):
            for sample in part.get("samples") or []:
                sample["images"] = {}
    (out / "results.json").write_text(json.dumps(json_safe(merged), indent=1, ensure_ascii=False), encoding="utf-8")
    for path in write_reports(merged, out, privacy_by=chosen):
        typer.echo(str(path))
    for warning in merged["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
