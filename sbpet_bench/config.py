"""A run's configuration: command-line flags merged over a benchmark definition (TOML)."""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(Exception):
    """A bad option or benchmark file; the message names it and says what to do."""


@dataclass
class RunConfig:
    data: str = ""
    source: str | None = None  # dataset-source plugin; None = detect from the folder layout
    pets: list[str] = field(default_factory=list)
    attackers: list[str] = field(default_factory=list)
    classifiers: list[str] | None = None  # None = the default evaluators
    verifiers: list[str] | None = None
    featurizers: list[str] | None = None
    metrics: list[str] | None = None  # None = every registered metric
    options: dict[str, Any] = field(default_factory=dict)  # "plugin.option" -> value
    per_class: int | None = 1000  # None = every labelled image ("all")
    seed: int = 0
    max_per_identity: int = 2
    train_per_class: int = 1000
    pool_per_class: int = 500
    batch_size: int = 64
    image_size: int | None = None  # None = the first image's size
    device: str = "auto"
    bootstrap: int = 1000
    samples: int = 8  # images kept for the report's grid
    out: str = "runs/latest"
    cache_dir: str | None = None  # None = <out>/../.cache shared by runs
    refresh: bool = False
    quiet: bool = False
    plugins: list[str] = field(default_factory=list)  # extra --plugin files or modules
    trust_pickle: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plugin_options(self) -> dict[str, dict[str, Any]]:
        """``{"blur.sigma": 3}`` -> ``{"blur": {"sigma": 3}}``."""
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in self.options.items():
            plugin, sep, option = key.partition(".")
            if not sep or not plugin or not option:
                raise ConfigError(f"option {key!r} must look like PLUGIN.OPTION=VALUE, e.g. blur.sigma=3")
            grouped.setdefault(plugin, {})[option] = value
        return grouped


LIST_FIELDS = {"pets", "attackers", "classifiers", "verifiers", "featurizers", "metrics", "plugins"}


def split_names(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    # Split on commas outside brackets, so "pridss[m=5,poisson=0],blur" is two plugins.
    items = value if isinstance(value, list) else re.split(r",(?![^\[]*\])", value)
    return [item.strip() for item in items if str(item).strip()]


def parse_per_class(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--per-class must be a positive integer or 'all', got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"--per-class must be a positive integer or 'all', got {value!r}")
    return number


def parse_option_flags(flags: list[str]) -> dict[str, str]:
    options = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        if not sep:
            raise ConfigError(f"--option {flag!r} must look like PLUGIN.OPTION=VALUE, e.g. blur.sigma=3")
        options[key.strip()] = value
    return options


def load_benchmark(path: str | Path) -> dict[str, Any]:
    """Read a benchmark definition; relative data paths resolve against the working directory."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"benchmark file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"benchmark file {path} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(RunConfig)} | {"name", "description"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"benchmark file {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    raw.pop("name", None)
    raw.pop("description", None)
    if "per_class" in raw:
        raw["per_class"] = parse_per_class(raw["per_class"])
    for key in LIST_FIELDS & set(raw):
        raw[key] = split_names(raw[key])
    if "options" in raw and not isinstance(raw["options"], dict):
        raise ConfigError(f"benchmark file {path}: [options] must be a table of \"plugin.option\" = value")
    return raw


def build_config(benchmark: dict[str, Any] | None, overrides: dict[str, Any]) -> RunConfig:
    """Benchmark values first, then every command-line value the user actually gave."""
    values: dict[str, Any] = {}
    for source in (benchmark or {}, overrides):
        for key, value in source.items():  # None is meaningful here (per_class=None means "all")
            if key == "options":
                values.setdefault("options", {}).update(value)
            else:
                values[key] = value
    if not values.get("data"):
        raise ConfigError("no data: pass --data PATH (e.g. --data ../shared/data/lfw3d) or name data in the benchmark file")
    cfg = RunConfig(**values)
    if cfg.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {cfg.batch_size}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    return cfg
