"""The ``sbpet`` command line: run, list, train, report, models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import (ConfigError, build_config, check_plugin_files, load_benchmark, parse_option_flags, parse_per_class,
                     split_names)

# The plugin API and registry (numpy, pluggy) load only when a command needs them: `sbpet run` checks its
# flags and paths first, so a mistyped --data is answered before any of that (or torch) is imported.

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="sbpet: benchmark soft-biometric privacy-enhancing techniques (SB-PETs).")
console = Console(stderr=True)


def is_user_error(exc: BaseException) -> bool:
    """A ConfigError, PluginLoadError or PluginError: a message for the user, not a traceback.

    Without importing their modules: an exception cannot be a PluginError before the API has been imported.
    """
    if isinstance(exc, ConfigError):
        return True
    api, plugins = sys.modules.get("sbpet_bench.api"), sys.modules.get("sbpet_bench.plugins")
    return (api is not None and isinstance(exc, api.PluginError)) or (plugins is not None and isinstance(exc, plugins.PluginLoadError))


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _overrides(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def check_data_path(path: str, flag: str) -> None:
    """--data (or --train-data) exists, can be read, and holds something: checked before torch or any plugin loads.

    Which dataset source recognises the layout is the sources' call, asked right after the plugins load
    (:meth:`sbpet_bench.pipeline.Run.detect_source`); this check needs neither, so a mistyped path fails at once.
    """
    target = Path(path).expanduser()
    if not target.exists():
        hint = "" if target.parent.exists() else f" ({target.parent} does not exist either)"
        raise ConfigError(f"{flag} {path}: no such folder or file{hint}")
    try:
        if target.is_dir():
            with os.scandir(target) as entries:
                if next(entries, None) is None:
                    raise ConfigError(f"{flag} {path}: the folder is empty; it needs face images in a layout a dataset "
                                      "source reads (see `sbpet list dataset`)")
        else:
            with open(target, "rb") as fh:
                if not fh.read(1):
                    raise ConfigError(f"{flag} {path}: the file is empty; a manifest needs a header and one row per image")
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None


def _load_registry(plugins: List[str]):
    """The registry with the run's --plugin files; a plugin file that fails while importing is named, not a traceback."""
    from .plugins import load_registry

    check_plugin_files(plugins)
    try:
        return load_registry(plugins)
    except Exception as exc:  # noqa: BLE001 - code in a user's plugin file raised while being imported
        if is_user_error(exc) or not plugins:
            raise
        raise ConfigError(f"--plugin {', '.join(plugins)}: importing it raised {type(exc).__name__}: {exc}") from exc


@app.command()
def run(
    benchmark: Optional[Path] = typer.Argument(None, help="A benchmark definition (TOML); flags override it."),
    pets: Optional[str] = typer.Option(None, help="Comma-separated PETs, e.g. pridss,privacynet; inline options as blur\\[sigma=3]."),
    attackers: Optional[str] = typer.Option(None, help="Comma-separated recovery attacks, e.g. pp-a,pp-d,pp-i."),
    classifiers: Optional[str] = typer.Option(None, help="Gender classifiers (default: the panel of every primary classifier whose models are present: faceapi-gender, "
                                                     "hm-faceres-gender and hm-gear with the built-in plugins; the weight-free hog-logreg when none is)."),
    verifiers: Optional[str] = typer.Option(None, help="Face verifiers (default: the panel of every primary verifier whose models are present: faceapi-resnet, "
                                                   "hm-faceres and hm-mobileface with the built-in plugins; the weight-free pca-pixels when none is)."),
    featurizers: Optional[str] = typer.Option(None, help="Realism feature extractors (default: those marked for default use whose models are present: "
                                                     "hm-antispoof with the built-in plugins; none when absent)."),
    metrics: Optional[str] = typer.Option(None, help="Metrics (default: every installed one)."),
    data: Optional[str] = typer.Option(None, help="Data folder or manifest, e.g. ../shared/data/lfw3d."),
    source: Optional[str] = typer.Option(None, help="Dataset source (default: detected from the layout)."),
    per_class: Optional[str] = typer.Option(None, "--per-class", help="Evaluation images per gender, or 'all'; a dev and a test sample of this size are drawn, and training and "
                                     "pool come from the identities left \\[default: 500]."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling, splits, pairs and plugins \\[default: 0]."),
    max_per_identity: Optional[int] = typer.Option(None, help="Evaluation images per identity, 0 = no limit \\[default: 2]."),
    train_per_class: Optional[int] = typer.Option(None, help="Training images per gender \\[default: 1000]."),
    pool_per_class: Optional[int] = typer.Option(None, help="Candidate-pool images per gender \\[default: 500]."),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch \\[default: 64]."),
    image_size: Optional[int] = typer.Option(None, help="Working image size (default: the most common square size of the data's images; 112 with --align)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N \\[default: auto: cuda when torch sees one]."),
    bootstrap: Optional[int] = typer.Option(None, help="Bootstrap resamples for confidence intervals \\[default: 1000]."),
    samples: Optional[int] = typer.Option(None, help="Images kept for the report's grid \\[default: 8]."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/latest]."),
    cache_dir: Optional[str] = typer.Option(None, help="Cache folder \\[default: <out>/../.sbpet-cache]."),
    option: List[str] = typer.Option([], "--option", "-o", help="PLUGIN.OPTION=VALUE, repeatable (e.g. blur.sigma=3)."),
    plugin: List[str] = typer.Option([], "--plugin", help="Extra plugin file or module, repeatable."),
    refresh: bool = typer.Option(False, help="Recompute every fit, image and score instead of reusing the cache (results are written to it again)."),
    quiet: bool = typer.Option(False, help="No progress bars or summary."),
    align: Optional[str] = typer.Option(None, help="Face alignment before the PETs, e.g. dlib; none = as stored \\[default: none]."),
    train_data: Optional[str] = typer.Option(None, help="A separate data set for the training and pool splits (default: split --data)."),
    plugin_timeout: Optional[float] = typer.Option(None, help="Seconds one plugin call may take before it counts as failed \\[default: 1800]."),
    dry_run: bool = typer.Option(False, help="Check names, options and data, then print the plan: every fit and task, cached or to run, by its key. "
                                               "Fits, protects and scores nothing."),
    executor: Optional[str] = typer.Option(None, help="Where batches run: local or ray \\[default: local]."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for --executor ray (default: a local one)."),
    shard_size: Optional[int] = typer.Option(None, help="Images per work unit (default: --batch-size)."),
    privacy_by: Optional[str] = typer.Option(None, help="The classifier whose privacy AUC the report's privacy-utility plot and "
                                                  "equal-privacy table use (default: the worst case over classifiers and tiers)."),
    split: Optional[str] = typer.Option(None, help="Evaluation split: test, or dev for tuning \\[default: test]."),
    informed: Optional[bool] = typer.Option(None, "--informed/--no-informed",
                                            help="Train informed attackers' classifiers on protected faces \\[default: on]."),
    informed_per_class: Optional[int] = typer.Option(None, help="Training images per gender for informed classifiers "
                                                              "that every PET protects \\[default: 500]."),
    informed_classifiers: Optional[str] = typer.Option(None, help="Classifiers trained on protected faces for the informed tier (default: cnn-gender and "
                                                                  "faceapi-gender-ft, those installed)."),
    ray_workers: Optional[int] = typer.Option(None, help="Ray worker processes for --executor ray, one CPU each (default: one per CPU of the Ray cluster)."),
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
        cfg = build_config(bench, overrides)  # every value checked
        for flag, path in (("--data", cfg.data), ("--train-data", cfg.train_data)):
            if path:
                check_data_path(path, flag)
        registry = _load_registry(cfg.plugins)  # imports the plugin modules, and with them torch: after the cheap checks
        from . import pipeline

        pipeline.run(cfg, argv=["sbpet", *sys.argv[1:]], registry=registry)
    except Exception as exc:  # noqa: BLE001 - user errors get a message, the rest their traceback
        if not is_user_error(exc):
            raise
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
    except Exception as exc:  # noqa: BLE001 - user errors get a message, the rest their traceback
        if not is_user_error(exc):
            raise
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
    per_class: Optional[str] = typer.Option(None, "--per-class", help="As in `sbpet run`: decides the split \\[default: 500]."),
    seed: Optional[int] = typer.Option(None, help="\\[default: 0]"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N \\[default: auto: cuda when torch sees one]."),
    option: List[str] = typer.Option([], "--option", "-o", help="PLUGIN.OPTION=VALUE, repeatable."),
    plugin: List[str] = typer.Option([], "--plugin", help="Extra plugin file or module, repeatable."),
    out: Optional[str] = typer.Option(None, help="As in `sbpet run`: the cache lives beside it \\[default: runs/latest]."),
    cache_dir: Optional[str] = typer.Option(None, help="As in `sbpet run` \\[default: <out>/../.sbpet-cache]."),
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
    except Exception as exc:  # noqa: BLE001 - user errors get a message, the rest their traceback
        if not is_user_error(exc):
            raise
        _fail(exc)


CORE_COMMANDS = ("run", "list", "train")


def _needs_optional_commands(argv: list[str]) -> bool:
    """False only when the ``sbpet`` script itself runs one of the core commands, which never need the others.

    Importing ``models`` and ``report`` costs numpy and the model store, about as long as the answer to a
    mistyped ``sbpet run --data``; every other use (help, those commands, ``app`` called from Python) mounts them.
    """
    script = Path(argv[0]).name if argv else ""
    return not (script == "sbpet" and len(argv) > 1 and argv[1] in CORE_COMMANDS)


def _mount_optional() -> None:
    """Sub-commands whose modules may be absent in a partial install."""
    if not _needs_optional_commands(sys.argv):
        return
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
