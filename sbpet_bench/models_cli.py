"""``sbpet models``: list, fetch, verify and add the model files that plugins declare."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .modelstore import ModelStore, ModelStoreError

app = typer.Typer(help="Manage model files (weights) in the model store ($SBPET_HOME/models).", no_args_is_help=True)
console = Console()


def _store() -> ModelStore:
    from .plugins import load_registry  # late: loading plugins is the slow part

    return ModelStore(None, load_registry().assets)


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


@app.command("list")
def list_models() -> None:
    """Every model file plugins declare, and whether it is present."""
    store = _store()
    table = Table(title=f"Model store: {store.home}")
    for column in ("name", "licence", "size", "present", "default", "description / note"):
        table.add_column(column)
    for row in store.status():
        present = "[green]yes[/green]" if row.present else ("[yellow]no[/yellow]" if not row.official_only else "[red]no[/red]")
        text = row.description + (f"\n[yellow]{row.note}[/yellow]" if row.note else "")
        table.add_row(row.name, row.licence, _mib(row.size), present, "yes" if row.default else "", text)
    console.print(table)


@app.command()
def fetch(names: Optional[List[str]] = typer.Argument(None, help="model names (see `sbpet models list`)"),
          default: bool = typer.Option(False, "--default", help="fetch every model the default evaluators need"),
          force: bool = typer.Option(False, "--force", help="download again even if present")) -> None:
    """Download model files from their sources and check their SHA-256."""
    store = _store()
    wanted = list(names or []) + (store.default_names() if default else [])
    if not wanted:
        _fail("name at least one model, or pass --default")
    wanted = list(dict.fromkeys(wanted))
    try:
        paths = store.fetch_many(wanted, force=force)
    except ModelStoreError as exc:
        _fail(str(exc))
    for name, path in zip(wanted, paths):
        console.print(f"[green]ok[/green] {name}: {path}", highlight=False, soft_wrap=True)


@app.command()
def verify() -> None:
    """Check the SHA-256 of every model file present in the store."""
    store = _store()
    table = Table(title=f"Model store: {store.home}")
    table.add_column("name")
    table.add_column("state")
    bad = False
    for name, state in store.verify():
        colour = "green" if state == "ok" else "yellow" if state == "missing" else "red"
        bad |= state.startswith("corrupt")
        table.add_row(name, f"[{colour}]{state}[/{colour}]")
    console.print(table)
    if bad:
        _fail("some model files are corrupt: delete them and run `sbpet models fetch NAME` again")


@app.command()
def add(name: str = typer.Argument(..., help="model name"),
        file: Path = typer.Argument(..., help="the file you downloaded")) -> None:
    """Register a file you downloaded by hand (for official-only weights); its checksum must match."""
    store = _store()
    try:
        path = store.add(name, file)
    except ModelStoreError as exc:
        _fail(str(exc))
    console.print(f"[green]ok[/green] {name}: {path}", highlight=False, soft_wrap=True)
    recorded = store.recorded_sha256(name)
    if recorded and not store.asset(name).sha256:
        console.print(f"no sha256 is pinned for {name}; recorded {recorded} — compare it with the official source's",
                      highlight=False, soft_wrap=True)
