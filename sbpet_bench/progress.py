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

    def summary(self, results: dict[str, Any]) -> None:
        if self.quiet:
            return
        table = Table(title=f"sbpet run · {results['dataset']['n_eval']} images · {results['config']['out']}")
        table.add_column("PET")
        table.add_column("attacker")
        table.add_column("status")
        headline = [("privacy_auc", "classifier"), ("eer", "verifier")]
        for metric, _ in headline:
            table.add_column(metric, justify="right")
        for cond in results["conditions"]:
            cells = []
            for metric, _ in headline:
                values = [m for m in cond["metrics"] if m["metric"] == metric]
                cells.append(", ".join(f"{m['value']:.3f}" for m in values[:2]) if values else "–")
            status = "[green]ok[/green]" if cond["status"] == "ok" else "[red]failed[/red]"
            table.add_row(escape(cond["pet"]), escape(cond["attacker"]), status, *cells)
        self.console.print(table)
        for warning in results.get("warnings", []):
            self.console.print(f"[yellow]warning[/yellow]: {escape(warning)}")
        if results.get("errors"):
            self.console.print(f"[red]{len(results['errors'])} error(s)[/red]; see errors in results.json")
        skipped = results["dataset"].get("skipped", [])
        if skipped:
            self.console.print(f"[yellow]{len(skipped)} file(s) skipped[/yellow] (listed in results.json under dataset.skipped):")
            for item in skipped[:10]:
                self.console.print(f"  {escape(item['path'])}: {escape(item['reason'])}")
        self.console.print(f"results: {results['config']['out']}/results.json")
