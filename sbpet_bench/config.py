"""A run's configuration: command-line flags merged over a benchmark definition (TOML), checked before any work.

Every field has one rule (type, range, choices) in :data:`RULES`. A value is checked
where it enters: ``load_benchmark`` names the file and the TOML key, ``build_config``
names the command-line flag, so an error always says which input is wrong.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

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
    # None = every labelled image ("all"). 500: a dev and a test sample of 500 + 500 each still leave LFW3D
    # enough women for the training split and the pool.
    per_class: int | None = 500
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
    align: str = "none"  # face-alignment plugin applied to every image before the PETs; "none" = as stored
    train_data: str | None = None  # a separate data set for the training and pool splits; None = split --data
    plugin_timeout: float = 1800.0  # seconds one plugin call may take before it is reported as failed
    dry_run: bool = False  # check and print the plan, read no images
    executor: str = "local"  # where batches run: "local" or "ray"
    ray_address: str | None = None  # ray cluster address for executor "ray"; None = start or join a local one
    shard_size: int | None = None  # images per work unit; None = the executor's choice
    privacy_by: str | None = None  # the classifier whose privacy AUC the plot and equal-privacy table use; None = worst case
    split: str = "test"  # the evaluation split: "test", or "dev" to tune without touching the test faces
    informed: bool = True  # also train informed attackers' classifiers on protected training faces
    # Training images per gender that every PET protects for the informed tier (None = the whole training
    # split). 500 keeps the tier's cost near one more evaluation set; probes need no more to find a cue.
    informed_per_class: int | None = 500
    informed_classifiers: list[str] | None = None  # trainable classifiers of the informed tier; None = the defaults
    ray_workers: int | None = None  # Ray actors (one per CPU by default)

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


LIST_FIELDS = {"pets", "attackers", "classifiers", "verifiers", "featurizers", "metrics", "plugins", "informed_classifiers"}


# --------------------------------------------------------------------------- value rules


@dataclass(frozen=True)
class Rule:
    """What one field accepts. ``kind``: str, int, float, bool, names, options or per_class."""

    kind: str
    optional: bool = False  # None allowed (the field's "use the default behaviour" value)
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    hint: str = ""  # appended to the message, e.g. what None means


SEED_MAX = 2**32 - 1  # numpy's legacy seeding and many plugins take 32-bit seeds

RULES: dict[str, Rule] = {
    "data": Rule("str", hint="a data folder or manifest, e.g. ../shared/data/lfw3d"),
    "source": Rule("str", optional=True),
    "pets": Rule("names"),
    "attackers": Rule("names"),
    "classifiers": Rule("names", optional=True),
    "verifiers": Rule("names", optional=True),
    "featurizers": Rule("names", optional=True),
    "metrics": Rule("names", optional=True),
    "options": Rule("options"),
    "per_class": Rule("per_class", optional=True),
    "seed": Rule("int", min=0, max=SEED_MAX),
    "max_per_identity": Rule("int", min=0, max=10**9, hint="0 = no limit"),
    "train_per_class": Rule("int", min=0, max=10**9),
    "pool_per_class": Rule("int", min=0, max=10**9),
    "batch_size": Rule("int", min=1, max=65536),
    "image_size": Rule("int", optional=True, min=16, max=4096, hint="leave it out to use the data's own size"),
    "device": Rule("str", hint="auto, cpu, cuda or cuda:N"),  # the value itself: _check_device
    "bootstrap": Rule("int", min=0, max=10**6, hint="0 = no confidence intervals"),
    "samples": Rule("int", min=0, max=10**4),
    "out": Rule("str"),
    "cache_dir": Rule("str", optional=True),
    "refresh": Rule("bool"),
    "quiet": Rule("bool"),
    "plugins": Rule("names"),
    "align": Rule("str"),
    "train_data": Rule("str", optional=True),
    "plugin_timeout": Rule("float", min=1e-3, max=10**7, hint="seconds"),
    "dry_run": Rule("bool"),
    "executor": Rule("str", choices=("local", "ray")),
    "ray_address": Rule("str", optional=True),
    "shard_size": Rule("int", optional=True, min=1, max=10**9),
    "privacy_by": Rule("str", optional=True),
    "split": Rule("str", choices=("test", "dev")),
    "informed": Rule("bool"),
    "informed_per_class": Rule("int", optional=True, min=1, max=10**9),
    "informed_classifiers": Rule("names", optional=True),
    "ray_workers": Rule("int", optional=True, min=1, max=4096),
}
assert set(RULES) == {f.name for f in fields(RunConfig)}, "every RunConfig field needs a rule"

FLAG_NAMES = {"plugins": "--plugin", "options": "--option"}


def flag_label(key: str) -> str:
    return FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def _type_name(rule: Rule) -> str:
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "names": "a list of names (or one comma-separated string)",
            "options": 'a table of "plugin.option" = value', "per_class": "a positive integer or \"all\""}[rule.kind]


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _range_text(rule: Rule) -> str:
    if rule.min is not None and rule.max is not None:
        return f" from {_number(rule.min)} to {_number(rule.max)}"
    if rule.min is not None:
        return f" of at least {_number(rule.min)}"
    return f" of at most {_number(rule.max)}" if rule.max is not None else ""


def check_value(key: str, value: Any, label: str) -> Any:
    """The value of field ``key`` converted to its type, or a ConfigError naming ``label``."""
    rule = RULES.get(key)
    if rule is None:
        raise ConfigError(f"{label}: unknown setting; valid ones: {', '.join(sorted(RULES))}")
    if value is None:
        if rule.optional:
            return None
        raise ConfigError(f"{label} needs a value ({_type_name(rule)})")

    def bad(expected: str) -> ConfigError:
        hint = f" ({rule.hint})" if rule.hint else ""
        return ConfigError(f"{label} must be {expected}{hint}, got {value!r}")

    kind = rule.kind
    if kind == "per_class":
        return parse_per_class(value, label)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false (unquoted in TOML)")
        return value
    if kind in ("int", "float"):
        number_types = (int,) if kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number_types):
            raise bad(f"{_type_name(rule)}{_range_text(rule)} (unquoted in TOML)")
        if kind == "float":
            value = float(value)
            if not math.isfinite(value):
                raise bad(f"a finite number{_range_text(rule)}")
        if (rule.min is not None and value < rule.min) or (rule.max is not None and value > rule.max):
            raise bad(f"{_type_name(rule)}{_range_text(rule)}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        if rule.choices is not None and value not in rule.choices:
            raise bad(f"one of {', '.join(rule.choices)}")
        return value
    if kind == "names":
        if isinstance(value, str):
            return split_names(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise bad(_type_name(rule))
        return split_names(list(value))
    if kind == "options":
        return _check_options(value, label)
    raise AssertionError(f"rule kind {kind!r}")  # pragma: no cover - RULES uses the kinds above


def _check_options(value: Any, label: str) -> dict[str, Any]:
    """``{"blur.sigma": 3}`` or TOML's nested ``{"blur": {"sigma": 3}}`` -> flat ``{"blur.sigma": 3}``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{label} must be a table of \"plugin.option\" = value, e.g. \"blur.sigma\" = 3, got {value!r}")
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict) and "." not in key:  # [options.blur] sigma = 3
            flat.update({f"{key}.{option}": sub for option, sub in item.items()})
        else:
            flat[key] = item
    for key, item in flat.items():
        plugin, sep, option = str(key).partition(".")
        if not (sep and plugin and option):
            raise ConfigError(f"{label}: option {key!r} must look like PLUGIN.OPTION, e.g. blur.sigma")
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{label}: option {key} must be a finite number, got {item!r}")
        if not isinstance(item, (str, int, float, bool)):
            raise ConfigError(f"{label}: option {key} must be a string, number or true/false, got {item!r}")
    return flat


def _check_device(device: str, label: str) -> None:
    if device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device):
        return
    raise ConfigError(f"{label} must be auto, cpu, cuda or cuda:N, got {device!r}")


# --------------------------------------------------------------------------- command-line helpers


def split_names(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    # Split on commas outside brackets, so "pridss[m=5,poisson=0],blur" is two plugins.
    items = value if isinstance(value, list) else re.split(r",(?![^\[]*\])", value)
    return [item.strip() for item in items if str(item).strip()]


def parse_per_class(value: Any, label: str = "--per-class") -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    message = f"{label} must be a positive integer or 'all', got {value!r}"
    if isinstance(value, bool) or isinstance(value, float):
        raise ConfigError(message)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(message) from None
    if number <= 0:
        raise ConfigError(message)
    return number


def parse_option_flags(flags: list[str]) -> dict[str, str]:
    options = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        if not sep:
            raise ConfigError(f"--option {flag!r} must look like PLUGIN.OPTION=VALUE, e.g. blur.sigma=3")
        options[key.strip()] = value
    return options


# --------------------------------------------------------------------------- files and folders


def _is_plugin_file(spec: str) -> bool:
    """The rule ``load_registry`` uses to tell a plugin file from a module name."""
    return spec.endswith(".py") or "/" in spec or Path(spec).is_file()


def check_plugin_files(specs: list[str], label: str = "--plugin") -> None:
    """Each plugin file exists and compiles, so a typo is reported by file and line, not as a traceback."""
    for spec in specs:
        if not _is_plugin_file(spec):
            continue  # a module name: load_registry reports import failures by name
        path = Path(spec).expanduser()
        if path.is_dir():
            raise ConfigError(f"{label} {spec}: is a folder; name a Python file (or an importable module)")
        try:
            source = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{label} {spec}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{label} {spec}: cannot read it ({exc.strerror or exc})") from None
        try:
            compile(source, str(path), "exec", dont_inherit=True)
        except SyntaxError as exc:
            where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
            raise ConfigError(f"{label} {spec}: Python syntax error at {where}: {exc.msg}; fix the file") from None
        except ValueError as exc:  # e.g. null bytes
            raise ConfigError(f"{label} {spec}: not a Python source file ({exc})") from None


def check_writable_folder(path: str, label: str) -> None:
    """``path`` is, or can be created as, a folder this process can write (checked by writing a probe file).

    A probe instead of ``os.access``: access() says yes to root on read-only mounts and
    cannot see ACLs, and the run would then fail late, after hours of work.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{label} {path}: is a file, not a folder; pass a folder for the results")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{label} {path}: {existing} is a file, so no folder can be made there; pass another path")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".sbpet-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{label} {path}: cannot write in {existing} ({exc.strerror or exc}); "
                          "pass a folder you can write to") from None


def _read_toml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"benchmark file {path}: is a folder; name a .toml file (see benchmarks/*.toml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"benchmark file {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"benchmark file {path} is not a text file (not UTF-8); a benchmark definition is TOML text") from None
    except OSError as exc:
        raise ConfigError(f"benchmark file {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"benchmark file {path} is not valid TOML: {exc}") from None


def load_benchmark(path: str | Path) -> dict[str, Any]:
    """Read and check a benchmark definition; relative data paths resolve against the working directory."""
    path = Path(path)
    raw = _read_toml(path)
    known = {f.name for f in fields(RunConfig)} | {"name", "description"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"benchmark file {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    for key in ("name", "description"):
        if key in raw and not isinstance(raw.pop(key), str):
            raise ConfigError(f"benchmark file {path}: key {key!r} must be a string")
    return {key: check_value(key, value, f"benchmark file {path}: key {key!r}") for key, value in raw.items()}


# --------------------------------------------------------------------------- merging


def build_config(benchmark: dict[str, Any] | None, overrides: dict[str, Any]) -> RunConfig:
    """Benchmark values first, then every command-line value the user actually gave; all checked.

    ``overrides`` are command-line values: errors name their flags (``--seed``);
    benchmark values are named by their TOML keys.
    """
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    sources: list[tuple[dict[str, Any], Callable[[str], str]]] = [
        (benchmark or {}, lambda key: f"benchmark key {key!r}"), (overrides, flag_label)]
    for source, label_of in sources:
        for key, value in source.items():  # None is meaningful here (per_class=None means "all")
            value = check_value(key, value, label_of(key))
            if key == "options":
                values.setdefault("options", {}).update(value)
            else:
                values[key] = value
            labels[key] = label_of(key)
    if not values.get("data"):
        raise ConfigError("no data: pass --data PATH (e.g. --data ../shared/data/lfw3d) or name data in the benchmark file")
    cfg = RunConfig(**values)
    _check_device(cfg.device, labels.get("device", "--device"))
    check_writable_folder(cfg.out, labels.get("out", f"--out (default {RunConfig.out})"))
    if cfg.cache_dir is not None:
        check_writable_folder(cfg.cache_dir, labels.get("cache_dir", "--cache-dir"))
    check_plugin_files(cfg.plugins, labels.get("plugins", "--plugin"))
    return cfg


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"pridss[m=5,backend=pixel]"`` -> ``("pridss", {"m": "5", "backend": "pixel"})``.

    Inline options let one run compare a plugin under several settings (an ablation), each
    variant a row of its own, labelled by its full spec.
    """
    match = re.fullmatch(r"\s*([^\[\]]+?)\s*(?:\[(.*)\])?\s*", spec)
    if not match:
        raise ConfigError(f"cannot read plugin spec {spec!r}; write NAME or NAME[option=value,...]")
    name, inner = match.group(1), match.group(2)
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (inner or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"plugin spec {spec!r}: {part!r} must look like option=value")
        options[key.strip()] = value.strip()
    return name, options
