"""Plugins in a run: created with their options and context, keyed, fitted once (cached).

A plugin's key is everything that determines its behaviour: kind, name, version, options, model
hashes, the training data it fits on, the seed, the working size, and the keys of the plugins it
declares as dependencies (recursively). The last part matters: PriDSS chooses candidates with a
gender probe, so changing an option of the probe must change PriDSS's key, or the cache would serve
images chosen by the old probe. Dependencies are declared by the plugin
(:meth:`sbpet_bench.api.Plugin.dependencies`); the context refuses any plugin not declared, so the
declaration cannot drift from what the code uses.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import torch
from rich.markup import escape

from ..api import Dependency, FaceSet, Plugin, PluginContext, PluginUnavailable
from ..cache import Cache, stable_hash
from ..config import RunConfig
from ..plugins import PluginEntry, PluginLoadError, Registry
from ..progress import Reporter
from .checks import StageError, guarded, parse_spec


def keyed_options(entry: PluginEntry, options: dict[str, Any]) -> dict[str, Any]:
    """The options that enter a cache key: all but those declared ``keyed_at_default=False`` left at their default."""
    declared = entry.cls.options
    return {k: v for k, v in options.items()
            if k not in declared or declared[k].keyed_at_default or v != declared[k].default}


def standalone_context(cache: Cache, key: str, seed: int, log: Any, model_path: Any) -> PluginContext:
    """The context of a plugin that the harness uses outside a host, before the run has a split or a device:
    a dataset source detecting and reading the data. The CPU, the run's seed, a work folder of its own, and no
    classifiers or verifiers to obtain."""
    def refuse(kind: str):
        def getter(name: str, **_: Any) -> Plugin:
            raise PluginUnavailable(f"no {kind} ({name!r}) can be obtained while the data set is being read")
        return getter

    return PluginContext(device=torch.device("cpu"), seed=seed, work_dir=str(cache.work_dir(key)), model_path=model_path,
                         get_classifier=refuse("classifier"), get_verifier=refuse("verifier"), log=log)


class PluginHost:
    def __init__(self, registry: Registry, cfg: RunConfig, cache: Cache, *, train: FaceSet, pool: FaceSet, split_fp: str,
                 image_size: int, device: torch.device, reporter: Reporter, model_store: Any):
        self.registry, self.cfg, self.cache, self.reporter = registry, cfg, cache, reporter
        self.device, self.image_size, self.model_store = device, image_size, model_store
        self.train, self.pool, self.split_fp = train, pool, split_fp
        self.user_options = cfg.plugin_options()
        self.instances: dict[tuple[str, str, str, str], tuple[Plugin, str]] = {}
        self.timings: dict[str, float] = defaultdict(float)
        self.fit_rates: dict[str, float] = {}  # "fit:<plugin>" -> seconds per training image of its latest fit
        self.timeout = cfg.plugin_timeout

    # ---- identity of a plugin configuration

    def resolve(self, kind: str, name: str, extra: dict[str, Any] | None = None) -> tuple[PluginEntry, dict[str, Any]]:
        """Entry and parsed options of ``name`` (a spec such as ``blur[sigma=3]``), user options below inline ones."""
        base, inline = parse_spec(name)
        entry = self.registry.get(kind, base)
        return entry, entry.parse_options({**self.user_options.get(entry.name, {}), **inline, **(extra or {})})

    def model_hashes(self, entry: PluginEntry) -> dict[str, str]:
        return {name: (self.registry.assets[name].sha256 if name in self.registry.assets else "unregistered")
                for name in entry.cls.models}

    def dependencies(self, entry: PluginEntry, options: dict[str, Any]) -> list[Dependency]:
        return list(entry.cls.dependencies(options))

    def key(self, kind: str, name: str, extra: dict[str, Any] | None = None, train_fp: str | None = None) -> str:
        entry, options = self.resolve(kind, name, extra)
        return self._key(entry, options, train_fp)

    def _key(self, entry: PluginEntry, options: dict[str, Any], train_fp: str | None = None, _seen: tuple = (),
             hashed: dict[str, Any] | None = None) -> str:
        """``hashed``: the options that enter the hash (default all); dependencies follow all of them."""
        me = (entry.kind, entry.name)
        if me in _seen:
            raise PluginLoadError(f"{entry.kind} {entry.name!r} depends on itself through {' -> '.join(n for _, n in _seen)}")
        deps = [self._key(*self.resolve(d.kind, d.name, dict(d.options)), None, (*_seen, me))
                for d in self.dependencies(entry, options)]
        fit_part = (train_fp or self.split_fp) if entry.cls.fits else None
        parts: list[Any] = [entry.kind, entry.name, entry.version, keyed_options(entry, options if hashed is None else hashed),
                            self.model_hashes(entry), fit_part,
                            self.cfg.seed, self.image_size]
        if deps:  # appended only when present, so plugins without dependencies keep their keys
            parts.append(sorted(deps))
        return stable_hash(*parts)

    def fit_key(self, entry: PluginEntry, options: dict[str, Any], train_fp: str | None = None) -> str:
        """What determines the fitted state: the key over the options that ``fit`` uses only."""
        names = entry.cls.fit_options
        relevant = options if names is None else {k: options[k] for k in names if k in options}
        return stable_hash("fit", self._key(entry, options, train_fp, hashed=relevant))

    def fits(self, kind: str, name: str, extra: dict[str, Any] | None = None, _seen: tuple = ()) -> list[dict[str, Any]]:
        """The fits that creating ``name`` needs, dependencies first: ``{"plugin", "kind", "key"}`` with the fit key.

        Computed from the plugin spec, its declared dependencies and the training split's fingerprint alone
        (fit keys are content-addressed), so a dry run can tell which fits are cached without creating any plugin.
        """
        entry, options = self.resolve(kind, name, extra)
        me = (entry.kind, entry.name)
        if me in _seen:
            raise PluginLoadError(f"{entry.kind} {entry.name!r} depends on itself through {' -> '.join(n for _, n in _seen)}")
        found: list[dict[str, Any]] = []
        for dep in self.dependencies(entry, options):
            found += self.fits(dep.kind, dep.name, dict(dep.options), (*_seen, me))
        if entry.cls.fits:
            found.append({"plugin": name, "kind": kind, "key": self.fit_key(entry, options)})
        return found

    def internal_evaluators(self, kind: str, name: str) -> set[tuple[str, str]]:
        """Every (kind, name) that the plugin obtains through its context, recursively."""
        entry, options = self.resolve(kind, name)
        found: set[tuple[str, str]] = set()
        for dep in self.dependencies(entry, options):
            dep_entry, _ = self.resolve(dep.kind, dep.name, dict(dep.options))
            if (dep.kind, dep_entry.name) not in found:
                found.add((dep.kind, dep_entry.name))
                found |= self.internal_evaluators(dep.kind, dep.name)
        return found

    # ---- instances

    def get(self, kind: str, name: str, extra: dict[str, Any] | None = None, *, train: FaceSet | None = None,
            train_fp: str | None = None, fit: bool = True) -> tuple[Plugin, str]:
        """A ready (fitted) plugin instance and its key.

        ``train``/``train_fp`` fit it on another training set than the run's split (the informed
        attacker tier fits classifiers on protected images); ``fit=False`` only loads a cached state.
        """
        entry, options = self.resolve(kind, name, extra)
        memo = (kind, entry.name, json.dumps(options, sort_keys=True, default=str), train_fp or "")
        if memo in self.instances:
            return self.instances[memo]
        key = self._key(entry, options, train_fp)
        fit_key = self.fit_key(entry, options, train_fp) if entry.cls.fits else key
        declared = {(d.kind, self.resolve(d.kind, d.name, dict(d.options))[0].name): d for d in self.dependencies(entry, options)}

        def obtain(dep_kind: str):
            def getter(dep_name: str, **dep_options: Any) -> Plugin:
                base = parse_spec(dep_name)[0]
                if (dep_kind, base) not in declared:
                    raise PluginUnavailable(
                        f"{entry.kind} {entry.name!r} asked for {dep_kind} {dep_name!r} through its context, but its "
                        f"dependencies() does not declare it; declare Dependency({dep_kind!r}, {dep_name!r}) so that its "
                        "cache key follows that plugin")
                try:
                    return self.get(dep_kind, dep_name, {**dict(declared[(dep_kind, base)].options), **dep_options})[0]
                except (PluginLoadError, StageError) as exc:
                    raise PluginUnavailable(f"{dep_kind} {dep_name!r} (needed by {entry.name}) is unavailable: {exc}") from exc
            return getter

        fit_train = train if train is not None else self.train
        context = PluginContext(
            device=self.device, seed=self.cfg.seed, work_dir=str(self.cache.work_dir(fit_key)), model_path=self.model_path,
            get_classifier=obtain("classifier"), get_verifier=obtain("verifier"),
            log=self.reporter.log, progress=self.reporter.track, train=fit_train)
        plugin = guarded(lambda: entry.create(options, context), (entry.name, kind), self.timeout)
        if entry.cls.fits:
            self._fit(plugin, entry, fit_key, fit_train, fit)
        self.instances[memo] = (plugin, key)
        return plugin, key

    def model_path(self, name: str) -> str:
        if self.model_store is None:
            raise FileNotFoundError(f"model {name!r} is needed, but no model store is available")
        return self.model_store.path(name)

    def _fit(self, plugin: Plugin, entry: PluginEntry, key: str, train: FaceSet, fit: bool) -> None:
        state = self.cache.get_state("fit", key)
        if state is not None:
            guarded(lambda: plugin.load_state_dict(state), (entry.name, entry.kind), self.timeout)
            return
        if not fit:
            raise PluginLoadError(f"{entry.kind} {entry.name!r} has no fitted state in the cache (key {key}); "
                                  "the driver fits every plugin before workers start")
        if len(train) == 0:
            raise PluginLoadError(f"{entry.kind} {entry.name!r} needs a training split, but it is empty; "
                                  "use a data set with more identities or lower --per-class")
        self.reporter.log(escape(f"fitting {entry.kind} {entry.name} on {len(train)} training images"))
        start = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        if entry.kind == "pet":
            guarded(lambda: plugin.fit(train, self.pool), (entry.name, entry.kind), self.timeout, grad=True)
        else:
            guarded(lambda: plugin.fit(train), (entry.name, entry.kind), self.timeout, grad=True)
        seconds = time.perf_counter() - start
        self.timings[f"fit:{entry.name}"] += seconds
        self.fit_rates[f"fit:{entry.name}"] = seconds / len(train)  # per training image: the next plan's estimate
        self.cache.put_state("fit", key, plugin.state_dict())
