"""``sbpet models``: list, fetch, verify and add the model files that plugins declare."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .modelstore import ModelStore, ModelStoreError

app = typer.Typer(help="Manage model files (weights) in the model store ($SBPET_HOME/models).", no_args_is_help=True)


def _store() -> ModelStore:
    from .plugins import load_registry  # late: loading plugins is the slow part

    return ModelStore(None, load_registry().assets)


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def _console() -> Console:
    """Made per command, so the width follows the terminal (or COLUMNS) at the time it runs."""
    return Console(highlight=False)


@app.command("list")
def list_models() -> None:
    """Every model file plugins declare, and whether it is present.
    \f
    (Kept out of --help by the form feed.) A header line and indented, wrapped details per model instead of a
    six-column table: the table squeezed names and paths into unreadable slivers at 80 columns.
    """
    store, out = _store(), _console()
    width = max(out.width, 40)

    def say(text: str, style: str = "", indent: int = 0) -> None:
        pad = " " * indent
        for line in textwrap.wrap(text, width, initial_indent=pad, subsequent_indent=pad, break_on_hyphens=False) or [""]:
            out.print(line, style=style or None, markup=False, soft_wrap=True)

    say(f"Model store: {store.home}", "bold")
    for row in store.status():
        state = "present" if row.present else "missing (official download)" if row.official_only else "missing"
        colour = "green" if row.present else "red" if row.official_only else "yellow"
        out.print()
        out.print(Text.assemble((row.name, "bold"), "  ", (state, colour), f"  {_mib(row.size)}" if row.size else "",
                                "  default" if row.default else ""), soft_wrap=False, overflow="fold")
        path = Path(row.path)
        say(f"file: {path.relative_to(store.home) if path.is_relative_to(store.home) else path}", indent=4)
        say(f"licence: {row.licence}", indent=4)
        if row.description:
            say(row.description, "dim", indent=4)
        if row.note:
            say(row.note, "yellow", indent=4)


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
        _console().print(f"[green]ok[/green] {name}: {path}", highlight=False, soft_wrap=True)


@app.command()
def verify() -> None:
    """Check the SHA-256 of every model file present in the store."""
    store = _store()
    table = Table(title=f"Model store: {store.home}")
    table.add_column("name", overflow="fold")
    table.add_column("state", overflow="fold")
    bad = False
    for name, state in store.verify():
        colour = "green" if state == "ok" else "yellow" if state == "missing" else "red"
        bad |= state.startswith("corrupt")
        table.add_row(name, f"[{colour}]{state}[/{colour}]")
    _console().print(table)
    if bad:
        _fail("some model files are corrupt: run `sbpet models fetch NAME --force` for each (or `sbpet models add NAME FILE` "
              "for official-only ones)")


@app.command()
def add(name: str = typer.Argument(..., help="model name"),
        file: Path = typer.Argument(..., help="the file you downloaded")) -> None:
    """Register a file you downloaded by hand (for official-only weights); its checksum must match."""
    store = _store()
    try:
        path = store.add(name, file)
    except ModelStoreError as exc:
        _fail(str(exc))
    _console().print(f"[green]ok[/green] {name}: {path}", highlight=False, soft_wrap=True)
    recorded = store.recorded_sha256(name)
    if recorded and not store.asset(name).sha256:
        _console().print(f"no sha256 is pinned for {name}; recorded {recorded} — compare it with the official source's",
                      highlight=False, soft_wrap=True)
