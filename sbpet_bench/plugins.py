"""Finding plugins: entry points, ``--plugin`` files and modules, and the registry they fill.

The harness never imports a plugin package by name. Every plugin module, the
built-in ones included, is found through the ``sbpet`` entry-point group (or
named on the command line) and contributes classes through the hooks in
:mod:`sbpet_bench.hookspecs`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping

import pluggy

from . import hookspecs
from .api import PLUGIN_KINDS, Asset, Option, Plugin

ENTRY_POINT_GROUP = "sbpet"

# plugin kind -> the hook that registers it (from the one table of kinds in the API)
KIND_HOOKS = {kind: spec.hook for kind, spec in PLUGIN_KINDS.items()}


class PluginLoadError(Exception):
    """A plugin could not be found, loaded or configured; the message says what to do."""


@dataclass
class PluginEntry:
    """A registered plugin class and where it came from."""

    kind: str
    name: str
    cls: type[Plugin]
    origin: str  # e.g. "entry point sbpet_baselines (sbpet 0.1.0)" or "file my_pet.py"

    @property
    def version(self) -> str:
        return str(self.cls.version)

    @property
    def options(self) -> Mapping[str, Option]:
        return self.cls.options

    def missing_requirements(self) -> list[str]:
        missing = []
        for module in self.cls.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(module)
        return missing

    def parse_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Check user options against the declared ones and convert their types."""
        parsed: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in self.options:
                valid = ", ".join(sorted(self.options)) or "none"
                raise PluginLoadError(f"{self.kind} {self.name!r} has no option {key!r}; valid options: {valid}")
            try:
                parsed[key] = self.options[key].parse(value)
            except (TypeError, ValueError) as exc:
                raise PluginLoadError(f"option {self.name}.{key}: {exc}") from None
        return {**{k: o.default for k, o in self.options.items()}, **parsed}

    def create(self, options: Mapping[str, Any], context: Any) -> Plugin:
        """Instantiate with checked options; a missing dependency names the plugin and the module."""
        missing = self.missing_requirements()
        if missing:
            raise PluginLoadError(
                f"{self.kind} {self.name!r} ({self.origin}) needs the Python module(s) {', '.join(missing)}, "
                f"which are not installed; install them or leave {self.name!r} out of this run")
        try:
            return self.cls(self.parse_options(options), context)
        except ImportError as exc:
            raise PluginLoadError(f"{self.kind} {self.name!r} ({self.origin}) could not load a dependency: {exc}") from exc


@dataclass
class BrokenModule:
    """A plugin module that failed to import; runs that do not need it go on."""

    origin: str
    error: str


@dataclass
class Registry:
    """Every plugin class, by kind and name, plus model-store assets."""

    entries: dict[str, dict[str, PluginEntry]] = field(default_factory=lambda: {k: {} for k in PLUGIN_KINDS})
    assets: dict[str, Asset] = field(default_factory=dict)
    broken: list[BrokenModule] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return list(self.entries)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> PluginEntry:
        try:
            return self.entries[kind][name]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none"
            hint = ""
            if self.broken:
                hint = "; these plugin modules failed to load: " + "; ".join(f"{b.origin}: {b.error}" for b in self.broken)
            raise PluginLoadError(f"unknown {kind} {name!r}; available: {available}{hint}") from None

    def all_entries(self, kind: str | None = None) -> Iterable[PluginEntry]:
        for k in [kind] if kind else self.kinds():
            for name in self.names(k):
                yield self.entries[k][name]


def _origin_of(module: ModuleType, how: str) -> str:
    return f"{how} {module.__name__}"


def _import_plugin_file(path: Path) -> ModuleType:
    if not path.exists():
        raise PluginLoadError(f"--plugin {path}: no such file")
    name = f"sbpet_user_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"--plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _register(registry: Registry, module: ModuleType, origin: str) -> None:
    pm = pluggy.PluginManager("sbpet")
    pm.add_hookspecs(hookspecs)
    pm.register(module, name=origin)
    for kind, hook_name in KIND_HOOKS.items():
        for classes in getattr(pm.hook, hook_name)():
            for cls in classes or []:
                base = PLUGIN_KINDS[kind].base
                if not (inspect.isclass(cls) and issubclass(cls, base)):
                    raise PluginLoadError(f"{origin}: {hook_name} returned {cls!r}, which is not a subclass of {base.__name__}")
                if not cls.name:
                    raise PluginLoadError(f"{origin}: {cls.__name__} has no name")
                existing = registry.entries[kind].get(cls.name)
                if existing is not None and existing.cls is not cls:
                    raise PluginLoadError(
                        f"two {kind} plugins are named {cls.name!r}: one from {existing.origin}, one from {origin}; "
                        "uninstall or rename one of them")
                registry.entries[kind][cls.name] = PluginEntry(kind, cls.name, cls, origin)
    for assets in pm.hook.sbpet_register_assets():
        for asset in assets or []:
            registry.assets[asset.name] = asset


def load_registry(extra_plugins: Iterable[str] = ()) -> Registry:
    """Load every installed plugin module, plus ``--plugin`` files or modules.

    A module that fails to import is recorded in ``registry.broken`` instead of
    stopping everything: only runs that ask for its plugins fail.
    """
    registry = Registry()
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
        origin = f"{ep.value}{dist}"
        try:
            module = ep.load()
            _register(registry, module, origin)
        except PluginLoadError:
            raise  # e.g. two plugins with one name: the user must fix the installation
        except Exception as exc:  # noqa: BLE001 - a broken plugin module must not break the others
            registry.broken.append(BrokenModule(origin, f"{type(exc).__name__}: {exc}"))
    for spec in extra_plugins:
        if spec.endswith(".py") or "/" in spec or Path(spec).is_file():
            module = _import_plugin_file(Path(spec))
            origin = f"file {spec}"
        else:
            try:
                module = importlib.import_module(spec)
            except ImportError as exc:
                raise PluginLoadError(f"--plugin {spec}: cannot import module ({exc})") from exc
            origin = f"module {spec}"
        _register(registry, module, origin)
    return registry
