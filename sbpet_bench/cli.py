"""The ``sbpet`` command line: run, list, train, report, models."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .api import PluginError
from .config import (ConfigError, build_config, check_plugin_files, load_benchmark, parse_option_flags, parse_per_class,
                     split_names)
from .plugins import PluginLoadError, load_registry

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="sbpet: benchmark soft-biometric privacy-enhancing techniques (SB-PETs).")
console = Console(stderr=True)
USER_ERRORS = (ConfigError, PluginLoadError, PluginError)


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _overrides(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _load_registry(plugins: List[str]):
    """The registry with the run's --plugin files; a plugin file that fails while importing is named, not a traceback."""
    check_plugin_files(plugins)
    try:
        return load_registry(plugins)
    except USER_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - code in a user's plugin file raised while being imported
        if not plugins:
            raise
        raise ConfigError(f"--plugin {', '.join(plugins)}: importing it raised {type(exc).__name__}: {exc}") from exc


@app.command()
def run(
    benchmark: Optional[Path] = typer.Argument(None, help="A benchmark definition (TOML); flags override it."),
    pets: Optional[str] = typer.Option(None, help="Comma-separated PETs, e.g. pridss,privacynet."),
    attackers: Optional[str] = typer.Option(None, help="Comma-separated recovery attacks, e.g. pp-a,pp-d,pp-i."),
    classifiers: Optional[str] = typer.Option(None, help="Gender classifiers (default: faceapi-gender if present, else weight-free)."),
    verifiers: Optional[str] = typer.Option(None, help="Face verifiers (default: faceapi-resnet if present, else weight-free)."),
    featurizers: Optional[str] = typer.Option(None, help="Realism feature extractors (default: those whose weights are present)."),
    metrics: Optional[str] = typer.Option(None, help="Metrics (default: all installed)."),
    data: Optional[str] = typer.Option(None, help="Data folder or manifest, e.g. ../shared/data/lfw3d."),
    source: Optional[str] = typer.Option(None, help="Dataset source (default: detected from the layout)."),
    per_class: Optional[str] = typer.Option(None, "--per-class", help="Evaluation images per gender, or 'all' [default: 500]."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling, splits, pairs and plugins [default: 0]."),
    max_per_identity: Optional[int] = typer.Option(None, help="Evaluation images per identity, 0 = no limit [default: 2]."),
    train_per_class: Optional[int] = typer.Option(None, help="Training images per gender [default: 1000]."),
    pool_per_class: Optional[int] = typer.Option(None, help="Candidate-pool images per gender [default: 500]."),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch [default: 64]."),
    image_size: Optional[int] = typer.Option(None, help="Working image size (default: the data's own)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda [default: auto]."),
    bootstrap: Optional[int] = typer.Option(None, help="Bootstrap resamples for confidence intervals [default: 1000]."),
    samples: Optional[int] = typer.Option(None, help="Images kept for the report's grid [default: 8]."),
    out: Optional[str] = typer.Option(None, help="Output folder [default: runs/latest]."),
    cache_dir: Optional[str] = typer.Option(None, help="Cache folder [default: <out>/../.sbpet-cache]."),
    option: List[str] = typer.Option([], "--option", "-o", help="PLUGIN.OPTION=VALUE, repeatable (e.g. blur.sigma=3)."),
    plugin: List[str] = typer.Option([], "--plugin", help="Extra plugin file or module, repeatable."),
    refresh: bool = typer.Option(False, help="Recompute everything instead of reusing the cache."),
    quiet: bool = typer.Option(False, help="No progress bars or summary."),
    align: Optional[str] = typer.Option(None, help="Face alignment before the PETs, e.g. dlib; none = as stored [default: none]."),
    train_data: Optional[str] = typer.Option(None, help="A separate data set for the training and pool splits (default: split --data)."),
    plugin_timeout: Optional[float] = typer.Option(None, help="Seconds one plugin call may take before it counts as failed [default: 1800]."),
    dry_run: bool = typer.Option(False, help="Check everything and print the plan; read no images."),
    executor: Optional[str] = typer.Option(None, help="Where batches run: local or ray [default: local]."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for --executor ray (default: a local one)."),
    shard_size: Optional[int] = typer.Option(None, help="Images per work unit (default: the executor's choice)."),
    privacy_by: Optional[str] = typer.Option(None, help="Also report privacy per group of this record attribute."),
    split: Optional[str] = typer.Option(None, help="Evaluation split: test, or dev for tuning [default: test]."),
    informed: Optional[bool] = typer.Option(None, "--informed/--no-informed",
                                            help="Train informed attackers' classifiers on protected faces [default: on]."),
    informed_per_class: Optional[int] = typer.Option(None, help="Training images per gender for informed classifiers "
                                                              "that every PET protects [default: 500]."),
    informed_classifiers: Optional[str] = typer.Option(None, help="Classifiers trained for the informed tier (default: built-in)."),
    ray_workers: Optional[int] = typer.Option(None, help="Ray worker processes for --executor ray (default: ray's choice)."),
) -> None:
    """Protect, recover and score faces, then write results.json and the leaderboards."""
    try:
        bench = load_benchmark(benchmark) if benchmark else None
        overrides = _overrides(
            data=data, source=source, pets=split_names(pets), attackers=split_names(attackers),
            classifiers=split_names(classifiers), verifiers=split_names(verifiers), featurizers=split_names(featurizers),
            metrics=split_names(metrics), seed=seed, max_per_identity=max_per_identity, train_per_class=train_per_class,
            pool_per_class=pool_per_class, batch_size=batch_size, image_size=image_size, device=device,
            bootstrap=bootstrap, samples=samples, out=out, cache_dir=cache_dir,
            options=parse_option_flags(option) or None, plugins=list(plugin) or None, align=align, train_data=train_data,
            plugin_timeout=plugin_timeout, executor=executor, ray_address=ray_address, shard_size=shard_size,
            privacy_by=privacy_by, split=split, informed=informed, informed_per_class=informed_per_class,
            informed_classifiers=split_names(informed_classifiers), ray_workers=ray_workers)
        if per_class is not None:
            overrides["per_class"] = parse_per_class(per_class)
        for flag, given in (("refresh", refresh), ("quiet", quiet), ("dry_run", dry_run)):
            if given:  # an unset switch must not override the benchmark file
                overrides[flag] = True
        cfg = build_config(bench, overrides)
        from . import pipeline

        pipeline.run(cfg, argv=["sbpet", *sys.argv[1:]], registry=_load_registry(cfg.plugins))
    except USER_ERRORS as exc:
        _fail(exc)


@app.command("list")
def list_plugins(
    kind: Optional[str] = typer.Argument(None, help="pet, attacker, classifier, verifier, featurizer, metric or dataset."),
    plugin: List[str] = typer.Option([], "--plugin", help="Extra plugin file or module, repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every installed plugin with its kind, version, origin and options."""
    try:
        registry = _load_registry(list(plugin))
        if kind is not None and kind not in registry.kinds():
            raise ConfigError(f"unknown kind {kind!r}; kinds: {', '.join(registry.kinds())}")
    except USER_ERRORS as exc:
        _fail(exc)
    entries = list(registry.all_entries(kind))
    if as_json:
        print(json.dumps([{"kind": e.kind, "name": e.name, "version": e.version, "origin": e.origin,
                           "description": e.cls.description,
                           "options": {k: {"default": o.default, "help": o.help, "choices": o.choices,
                                       "min": getattr(o, "min", None), "max": getattr(o, "max", None)}
                                   for k, o in e.options.items()}}
                          for e in entries], indent=1, default=str))
        return
    table = Table(show_lines=False)
    for column in ("kind", "name", "version", "options", "origin"):
        table.add_column(column, overflow="fold")
    for e in entries:
        opts = ", ".join(f"{k}={o.default!r}" for k, o in e.options.items()) or "–"
        table.add_row(e.kind, e.name, e.version, opts, e.origin)
    Console().print(table)
    for broken in registry.broken:
        console.print(f"[yellow]plugin module failed to load[/yellow]: {broken.origin}: {broken.error}")


@app.command()
def train(
    name: str = typer.Argument(..., help="A plugin that fits, e.g. privacynet, pp-a, hog-logreg."),
    data: str = typer.Option(..., help="Data folder, e.g. ../shared/data/lfw3d."),
    per_class: Optional[str] = typer.Option(None, "--per-class", help="As in `sbpet run`: decides the split [default: 500]."),
    seed: Optional[int] = typer.Option(None, help="[default: 0]"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda [default: auto]."),
    option: List[str] = typer.Option([], "--option", "-o", help="PLUGIN.OPTION=VALUE, repeatable."),
    plugin: List[str] = typer.Option([], "--plugin", help="Extra plugin file or module, repeatable."),
    out: Optional[str] = typer.Option(None, help="As in `sbpet run`: the cache lives beside it [default: runs/latest]."),
    cache_dir: Optional[str] = typer.Option(None),
    refresh: bool = typer.Option(False, help="Train again even if a matching checkpoint exists."),
) -> None:
    """Fit one plugin on the training split and cache it; `sbpet run` with the same data and options reuses it."""
    from .training import train_plugin

    try:
        overrides = _overrides(data=data, seed=seed, device=device, out=out, cache_dir=cache_dir,
                               options=parse_option_flags(option) or None, plugins=list(plugin) or None)
        if per_class is not None:
            overrides["per_class"] = parse_per_class(per_class)
        overrides["refresh"] = refresh
        overrides["pets"] = []
        path = train_plugin(name, build_config(None, overrides))
        console.print(f"trained {name}: {path}")
    except USER_ERRORS as exc:
        _fail(exc)


def _mount_optional() -> None:
    """Sub-commands whose modules may be absent in a partial install."""
    try:
        from .report.cli import report_command

        app.command("report")(report_command)
    except ImportError:
        pass
    try:
        from .models_cli import app as models_app

        app.add_typer(models_app, name="models", help="List, fetch, verify and add model files.")
    except ImportError:
        pass


_mount_optional()

if __name__ == "__main__":
    app()
