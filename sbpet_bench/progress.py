"""Progress bars, log lines and the end-of-run summary (rich); silent with --quiet."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.markup import escape
from rich.table import Table


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, disable=quiet, transient=False)
        self._live = False

    def __enter__(self) -> "Reporter":
        if not self.quiet:
            self.progress.start()
            self._live = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live:
            self.progress.stop()
            self._live = False

    def add_task(self, description: str, total: int | None) -> int:
        return self.progress.add_task(escape(description), total=total)

    def advance(self, task: int, amount: int) -> None:
        self.progress.advance(task, amount)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    def track(self, iterable: Iterable[Any], description: str = "working", total: int | None = None) -> Iterator[Any]:
        """Progress for plugin work (training loops); plugins reach it as ``context.progress``."""
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        task = self.progress.add_task(escape(description), total=total)
        try:
            for item in iterable:
                yield item
                self.progress.advance(task, 1)
        finally:
            self.progress.update(task, visible=self._live)

    def plan(self, stages: list[dict[str, Any]], estimate_s: float | None, tasks: list[dict[str, Any]]) -> None:
        """What the run will compute and what is cached, before any work starts."""
        if self.quiet:
            return
        table = Table(title="plan")
        for col in ("stage", "tasks", "cached", "to run", "images to compute"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for s in stages:
            table.add_row(s["stage"], str(s["tasks"]), str(s["cached"]), str(s["to_run"]), str(s["images_to_compute"]))
        self.console.print(table)
        if not any(s["to_run"] for s in stages):
            self.console.print("everything planned is cached (the informed tier's own fits are checked when it starts)")
        elif estimate_s is not None:
            self.console.print(f"estimated time for the uncached work: about {estimate_s / 60:.1f} min "
                               "(from earlier runs' rates on this cache: per image, and per training image for fits; plugins "
                               "without a rate yet and the informed tier not included)")
        else:
            self.console.print("no time estimate yet: the cache holds no per-image rates of these plugins")
        for t in tasks:
            self.console.print(f"  {'cached' if t['cached'] else 'to run':7} {t['stage']:8} {escape(t['what'])}"
                               + (f" shard {t['shard']}" if "shard" in t else "") + f"  {t['key']}")

    def summary(self, results: dict[str, Any]) -> None:
        if self.quiet:
            return
        table = Table(title=f"sbpet run · {results['dataset']['n_eval']} images · {results['config']['out']}")
        table.add_column("PET")
        table.add_column("attacker")
        table.add_column("status")
        for column in ("worst privacy AUC (by)", "EER prot-vs-orig", "FNMR @ clean thr."):
            table.add_column(column, justify="right")

        def first(cond: dict[str, Any], metric: str, protocol: str | None = None) -> dict[str, Any] | None:
            return next((m for m in cond["metrics"] if m["metric"] == metric and m.get("value") is not None
                         and (protocol is None or m.get("protocol") == protocol)), None)

        for cond in results["conditions"]:
            worst = first(cond, "worst_privacy_auc")
            eer = first(cond, "eer", "protected-vs-original")
            fnmr = first(cond, "fnmr_at_clean_threshold", "protected-vs-original")
            cells = [f"{worst['value']:.3f} ({worst['evaluator']})" if worst else "–",
                     f"{eer['value']:.3f} ({eer['evaluator']})" if eer else "–",
                     f"{fnmr['value']:.3f}" if fnmr else "–"]
            status = "[green]ok[/green]" if cond["status"] == "ok" else "[red]failed[/red]"
            table.add_row(escape(cond["pet"]), escape(cond["attacker"]), status, *map(escape, cells))
        self.console.print(table)
        for warning in results.get("warnings", []):
            self.console.print(f"[yellow]warning[/yellow]: {escape(warning)}")
        if results.get("errors"):
            self.console.print(f"[red]{len(results['errors'])} error(s)[/red]; see errors in results.json")
        alignment = results.get("alignment") or {}
        if alignment.get("aligner", "none") != "none":
            self.console.print(f"alignment ({escape(alignment['aligner'])}): faces not found in {alignment['n_not_found']} of "
                               f"{alignment['n_images']} images ({alignment['n_not_found_eval']} evaluation images)")
        skipped = results["dataset"].get("skipped", [])
        if skipped:
            self.console.print(f"[yellow]{len(skipped)} file(s) skipped[/yellow] (listed in results.json under dataset.skipped):")
            for item in skipped[:10]:
                self.console.print(f"  {escape(item['path'])}: {escape(item['reason'])}")
        self.console.print(f"results: {results['config']['out']}/results.json")
