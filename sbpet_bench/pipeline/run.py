"""``sbpet run``: set up, plan, execute, measure, write — the phases of one evaluation run.

1. set-up: read the data set, sample and split it (cached), optionally align the faces;
2. plan: create the plugins (fitting them once, cached) and compute the key of every task;
   ``--dry-run`` stops here and prints the plan;
3. informed tier: protect the training subset with every PET and train gender classifiers on it;
4. execute: every shard through every condition (:mod:`.stages`), streamed by the local executor
   or spread over Ray workers (:mod:`.executors`), writing diagnostics and the report's samples;
5. measure: metrics per condition (:mod:`.measure`), then results.json and the reports.
"""

from __future__ import annotations

import json
import math
import platform
import re
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from .. import __version__
from ..allocator import keep_freed_memory
from ..api import NO_ATTACK, FaceRecord, ORIGINAL, TIER_OFF_THE_SHELF, TIER_RECOVERY, condition_label
from ..cache import Cache, stable_hash
from ..config import ConfigError, RunConfig
from ..data import (DiskFaceSet, SplitSpec, Splits, check_evaluation_size, check_training_split, dataset_fingerprint, split,
                    working_size)
from ..images import save_png
from ..plugins import PluginEntry, PluginLoadError, Registry, load_registry
from ..progress import Reporter
from ..results import json_text
from .checks import StageError, parse_spec
from .host import PluginHost, standalone_context
from .informed import DEFAULT_INFORMED_CLASSIFIERS, InformedTier, build_informed_tier, informed_subset
from .measure import Condition, compute_metrics, metric_inputs, plain
from .plan import Plan, conditions_of, make_shards, summarise
from .stages import ShardResult, ShardRunner


ALIGNED_SIZE = 112  # the canonical crop size of an aligned run without --image-size
MIN_PER_CLASS = 10  # fewer evaluation faces per gender than this make AUCs and EERs meaningless


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    names = ["sbpet", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image", "pillow", "pluggy",
             "dlib-bin", "pytorch-fid", "ray"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class Run:
    def __init__(self, cfg: RunConfig, registry: Registry | None = None, argv: list[str] | None = None):
        self.cfg = cfg
        self.argv = argv if argv is not None else sys.argv
        self.registry = registry or load_registry(cfg.plugins)
        self.out = Path(cfg.out)
        self.reporter = Reporter(quiet=cfg.quiet)
        self.warnings: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.timings: dict[str, float] = defaultdict(float)
        self.stage_images: dict[str, int] = defaultdict(int)  # images per timed plugin stage: the rates' divisor
        self.samples: list[dict[str, Any]] = []
        self.cache: Cache | None = None  # made by make_cache: detecting the data's layout already needs a work folder

    # ---------------------------------------------------------------- set-up

    def check_names(self) -> None:
        cfg = self.cfg
        for kind, names in (("pet", cfg.pets), ("attacker", cfg.attackers), ("classifier", cfg.classifiers),
                            ("verifier", cfg.verifiers), ("featurizer", cfg.featurizers), ("metric", cfg.metrics),
                            ("classifier", self.informed_specs())):
            for spec in names or []:
                name, inline = parse_spec(spec)
                self.registry.get(kind, name).parse_options(inline)  # unknown name or option: error listing the valid ones
        if not cfg.pets:
            raise ConfigError(f"no PETs: pass --pets, e.g. --pets {','.join(self.registry.names('pet')[:4])}")
        in_run = {parse_spec(s)[0] for s in [*cfg.pets, *cfg.attackers, *(cfg.classifiers or []), *(cfg.verifiers or []),
                                             *(cfg.featurizers or []), *(cfg.metrics or []), *self.informed_specs()]}
        for plugin, opts in cfg.plugin_options().items():
            entries = [e for k in self.registry.kinds() for e in [self.registry.entries[k].get(plugin)] if e is not None]
            if not entries:
                raise ConfigError(f"--option {plugin}.*: there is no plugin named {plugin!r}")
            for entry in entries:
                entry.parse_options(opts)
            if plugin not in in_run:
                self.warnings.append(f"options for {plugin!r} are set, but it is not named in this run")

    def informed_specs(self) -> list[str]:
        if not self.cfg.informed:
            return []
        specs = self.cfg.informed_classifiers
        if specs is None:
            return [s for s in DEFAULT_INFORMED_CLASSIFIERS if s in self.registry.entries["classifier"]]
        return list(specs)

    def model_store(self) -> Any:
        try:
            from ..modelstore import ModelStore
        except ImportError:
            return None
        return ModelStore(None, self.registry.assets)

    def models_present(self, entry: PluginEntry, store: Any) -> bool:
        if store is None:
            return not entry.cls.models
        for name in entry.cls.models:
            try:
                store.path(name, fetch=False)
            except Exception as exc:  # noqa: BLE001 - absent, unregistered or unverifiable: not usable by default
                if name in self.registry.assets and store.is_present(name):  # there, but it failed its checksum
                    message = f"default {entry.kind} {entry.name} left out: {exc}"
                    if message not in self.warnings:
                        self.warnings.append(message)
                return False
        return not entry.missing_requirements()

    def default_evaluators(self, kind: str, store: Any) -> list[str]:
        """Primary evaluators whose models are present, plus 'when-present' ones; else the fallbacks."""
        entries = list(self.registry.all_entries(kind))
        chosen = [e.name for e in entries if getattr(e.cls, "evaluator_role", "") in ("primary", "when-present")
                  and self.models_present(e, store)]
        primaries = [e.name for e in entries if getattr(e.cls, "evaluator_role", "") == "primary"]
        if not any(n in primaries for n in chosen):
            fallbacks = [e.name for e in entries if getattr(e.cls, "evaluator_role", "") == "fallback"]
            if primaries:
                self.warnings.append(
                    f"default {kind} {', '.join(primaries)} unavailable (models absent: run `sbpet models fetch --default`); "
                    f"using the weight-free {', '.join(fallbacks)} instead")
            chosen = fallbacks + chosen
        return chosen

    def make_cache(self) -> Cache:
        if self.cache is None:
            self.cache = Cache(self.cfg.cache_dir or (self.out.parent / ".sbpet-cache"), refresh=self.cfg.refresh,
                               warn=lambda m: self.warnings.append(m) if m not in self.warnings else None)
        return self.cache

    def source_context(self, entry: PluginEntry, options: dict[str, Any]):
        def model_path(name: str) -> str:
            store = self.model_store()
            if store is None:
                raise FileNotFoundError(f"model {name!r} is needed, but no model store is available")
            return store.path(name)

        return standalone_context(self.make_cache(), stable_hash("dataset", entry.name, entry.version, options), self.cfg.seed,
                                  self.reporter.log, model_path)

    def detect_source(self, path: str, flag: str = "--data") -> PluginEntry:
        """The dataset source that reads ``path`` (--source, or the first that recognises the layout); no image is read."""
        if not Path(path).exists():
            raise ConfigError(f"{flag} {path}: no such folder or file")
        if self.cfg.source:
            return self.registry.get("dataset", self.cfg.source)
        detected = [e for e in self.registry.all_entries("dataset") if e.create({}, self.source_context(e, {})).detect(path)]
        if not detected:
            raise ConfigError(f"{flag} {path}: no dataset source recognises this layout; available sources: "
                              f"{', '.join(self.registry.names('dataset'))} (pick one with --source)")
        return detected[0]

    def read_data(self, path: str, flag: str = "--data") -> tuple[str, list, list]:
        entry = self.detect_source(path, flag)
        options = entry.parse_options(self.cfg.plugin_options().get(entry.name, {}))
        source = entry.create(options, self.source_context(entry, options))
        records, skipped = source.read(path)
        self.warnings += [n for n in getattr(source, "notices", []) if n not in self.warnings]
        if not records:
            raise ConfigError(f"{flag} {path}: the {entry.name} source found no labelled face images")
        return entry.name, records, skipped

    def setup(self, dry: bool = False) -> PluginHost:
        """Read the data, sample and split it (cached), and make the plugin host.

        ``dry``: for a dry run, which aligns no face (the plan's keys then assume every face is found).
        """
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        self.make_cache()
        t0 = time.perf_counter()
        self.source_name, self.records, self.read_skipped = self.read_data(cfg.data)
        self.data_fp = dataset_fingerprint(self.records)
        spec = SplitSpec(per_class=cfg.per_class, seed=cfg.seed, max_per_identity=cfg.max_per_identity,
                         train_per_class=cfg.train_per_class, pool_per_class=cfg.pool_per_class, split=cfg.split)
        self.train_info: dict[str, Any] | None = None
        if cfg.train_data:
            self.splits = self.cross_dataset_split(spec)
        else:
            split_key = stable_hash("split", self.data_fp, asdict(spec))
            self.splits = self.cached_split(split_key, lambda: split(self.records, spec))
        self.warnings += self.splits.warnings
        check_evaluation_size(self.splits, min_per_class=MIN_PER_CLASS)
        check_training_split(self.splits, spec, "--train-data" if cfg.train_data else "--data")
        # The working size is the run's, never the first image's: declared, or the data's most common size.
        if cfg.image_size is None and cfg.align and cfg.align != "none":
            # Aligned crops are made, not found: a canonical size, since in-the-wild sizes have no common one.
            self.image_size, notice = ALIGNED_SIZE, (f"--align {cfg.align}: faces are aligned to {ALIGNED_SIZE} x {ALIGNED_SIZE} "
                                                     "(declare --image-size to choose)")
        else:
            self.image_size, notice = self.cached_working_size()
        if notice:
            self.warnings.append(notice)
        self.store = self.model_store()
        self.alignment: dict[str, Any] | None = None
        if cfg.align and cfg.align != "none" and dry:
            self.plan_alignment()
        elif cfg.align and cfg.align != "none":
            self.align_splits()
        self.timings["data"] = time.perf_counter() - t0
        split_fp = stable_hash(self.data_fp, [r.id for r in self.splits.train], [r.id for r in self.splits.pool])
        if self.train_info:  # fitted on another data set: its content, not only the ids, decides the fits
            split_fp = stable_hash(split_fp, self.train_info["fingerprint"])
        self.host = self.make_host(self.splits, split_fp)
        return self.host

    def make_host(self, splits: Splits, split_fp: str) -> PluginHost:
        return PluginHost(self.registry, self.cfg, self.cache, train=DiskFaceSet(splits.train, self.image_size, self.device),
                          pool=DiskFaceSet(splits.pool, self.image_size, self.device), split_fp=split_fp,
                          image_size=self.image_size, device=self.device, reporter=self.reporter, model_store=self.store)

    def align_splits(self) -> None:
        """Detect, landmark and warp every sampled face to the canonical crop (cached; see :mod:`sbpet_bench.align`).

        Faces the aligner cannot find are listed with the reason and counted, never dropped silently; the
        aligner's key joins the data fingerprint, so every downstream key follows the alignment.
        """
        from ..align import align_records
        from ..api import CROP_TIGHT

        cfg = self.cfg
        host = self.make_host(Splits([], [], []), "alignment")
        aligner, key = host.get("aligner", cfg.align)
        crops = {getattr(e.cls, "crop", CROP_TIGHT) for k in ("pet", "attacker", "classifier", "verifier", "featurizer")
                 for e in self.registry.all_entries(k) if e.name in {parse_spec(n)[0] for n in self.named_plugins()}}
        if crops - {CROP_TIGHT}:
            self.warnings.append(f"--align {cfg.align}: plugins of this run expect the crop(s) {sorted(crops - {CROP_TIGHT})}; "
                                 "the run aligns to the tight crop, and a PET's output has one geometry for every evaluator")
        aligned: dict[str, list] = {}
        not_found: list[dict[str, str]] = []
        for part in ("eval", "train", "pool"):
            records, skipped = align_records(getattr(self.splits, part), aligner, self.cache, self.image_size, CROP_TIGHT,
                                             batch_size=cfg.batch_size, aligner_key=key, progress=self.reporter.track)
            aligned[part] = records
            not_found += [{**s, "split": part} for s in skipped]
        self.splits = Splits(aligned["eval"], aligned["train"], aligned["pool"], skipped=self.splits.skipped + not_found,
                             warnings=self.splits.warnings)
        check_evaluation_size(self.splits, min_per_class=MIN_PER_CLASS)
        self.data_fp = stable_hash(self.data_fp, "aligned", key, self.image_size, CROP_TIGHT)
        n = sum(len(v) for v in aligned.values()) + len(not_found)
        self.alignment = {"aligner": cfg.align, "key": key, "crop": CROP_TIGHT, "size": self.image_size, "n_images": n,
                          "n_not_found": len(not_found), "n_not_found_eval": sum(s["split"] == "eval" for s in not_found),
                          "not_found": not_found}
        if not_found:
            self.warnings.append(f"--align {cfg.align}: no face found in {len(not_found)} of {n} images "
                                 f"({self.alignment['n_not_found_eval']} of them evaluation images); listed under alignment.not_found")

    def plan_alignment(self) -> None:
        """A dry run's stand-in for :meth:`align_splits`: the aligned data's fingerprint, without aligning a face."""
        from ..api import CROP_TIGHT

        key = self.make_host(Splits([], [], []), "alignment").key("aligner", self.cfg.align)
        self.data_fp = stable_hash(self.data_fp, "aligned", key, self.image_size, CROP_TIGHT)
        self.alignment = {"aligner": self.cfg.align, "key": key, "crop": CROP_TIGHT, "size": self.image_size, "planned": True}
        self.warnings.append(f"dry run: --align {self.cfg.align} aligns no face here; the plan assumes every face is found "
                             "(faces the aligner misses leave the real run's shards, and so change their keys)")

    def named_plugins(self) -> list[str]:
        cfg = self.cfg
        return [*cfg.pets, *cfg.attackers, *(cfg.classifiers or []), *(cfg.verifiers or []), *(cfg.featurizers or [])]

    def cached_working_size(self) -> tuple[int, str | None]:
        """working_size, remembered under the data's content fingerprint: reading 512 image headers was a
        visible part of a fully cached re-run, and the answer is a function of the files' contents."""
        if self.cfg.image_size:
            return working_size(self.records, self.cfg.image_size)
        key = stable_hash("working-size", self.data_fp)
        cached = Cache(self.cache.root).get_json("split", key)  # like the split lists: never refreshed
        if cached:
            return int(cached["size"]), cached["notice"]
        size, notice = working_size(self.records)
        self.cache.put_json("split", key, {"size": size, "notice": notice})
        return size, notice

    def cached_split(self, key: str, make) -> Splits:
        # Split lists never depend on --refresh: they are a pure function of the data and the spec.
        cached = Cache(self.cache.root).get_json("split", key)
        if cached:
            return Splits.from_json(json.dumps(cached))
        splits = make()
        self.cache.put_json("split", key, json.loads(splits.to_json()))
        return splits

    def cross_dataset_split(self, spec: SplitSpec) -> Splits:
        """Evaluate on --data, fit PETs, attackers and trained evaluators on --train-data.

        When both data sets carry real identity labels (some identity has two images), identities of
        the evaluation sample are removed from the training data, so no person is in both.
        """
        cfg = self.cfg
        source, train_records, train_skipped = self.read_data(cfg.train_data, "--train-data")
        train_fp = dataset_fingerprint(train_records)
        eval_spec = SplitSpec(per_class=spec.per_class, seed=spec.seed, max_per_identity=spec.max_per_identity,
                              train_per_class=0, pool_per_class=0, split=spec.split)
        evaluation = self.cached_split(stable_hash("split", self.data_fp, asdict(eval_spec)), lambda: split(self.records, eval_spec))
        comparable = has_repeated_identities(self.records) and has_repeated_identities(train_records)
        eval_ids = {r.identity for r in evaluation.eval}
        kept = [r for r in train_records if not (comparable and r.identity in eval_ids)]
        # One image per class goes to a throw-away evaluation sample: split() then puts the rest into training and pool.
        train_spec = SplitSpec(per_class=1, seed=spec.seed, max_per_identity=1, train_per_class=spec.train_per_class,
                               pool_per_class=spec.pool_per_class)
        training = self.cached_split(stable_hash("split", train_fp, asdict(train_spec), sorted(eval_ids) if comparable else None),
                                     lambda: split(kept, train_spec))
        self.train_info = {"path": cfg.train_data, "source": source, "fingerprint": train_fp, "n_records": len(train_records),
                           "skipped": train_skipped + training.skipped, "identities_comparable": comparable,
                           "n_removed_shared_identities": len(train_records) - len(kept)}
        if comparable and len(kept) < len(train_records):
            self.warnings.append(f"--train-data: {len(train_records) - len(kept)} images of {len(eval_ids & {r.identity for r in train_records})} "
                                 "identities that are also in the evaluation sample were left out of training")
        elif not comparable:
            self.warnings.append("--train-data: the data sets' identity labels are not comparable (one has an image per identity), "
                                 "so identity-disjointness across them cannot be checked")
        return Splits(evaluation.eval, training.train, training.pool, skipped=evaluation.skipped,
                      warnings=[w for w in evaluation.warnings if "usable" in w])

    # ---------------------------------------------------------------- plan

    def load_plugins(self, host: PluginHost, fit: bool = True) -> None:
        """Create (and fit) every PET, attacker and evaluator; one that fails is reported and left out."""
        cfg = self.cfg
        store = self.store
        self.evaluator_specs = {
            "classifier": cfg.classifiers if cfg.classifiers is not None else self.default_evaluators("classifier", store),
            "verifier": cfg.verifiers if cfg.verifiers is not None else self.default_evaluators("verifier", store),
            "featurizer": cfg.featurizers if cfg.featurizers is not None else self.default_evaluators("featurizer", store),
        }
        self.conditions_spec = conditions_of(cfg.pets, cfg.attackers)
        self.conditions = {c.key: Condition(c.pet, c.attacker) for c in self.conditions_spec}
        self.transforms: dict[tuple[str, str], tuple[Any, str]] = {}
        for kind, names in (("pet", cfg.pets), ("attacker", cfg.attackers)):
            for name in names:
                try:
                    self.transforms[(kind, name)] = host.get(kind, name, fit=fit)
                except Exception as exc:  # noqa: BLE001 - it fails its own conditions only
                    err = self.error(name, kind, "load", None, exc)
                    for cond in self.conditions.values():
                        if (kind == "pet" and cond.pet == name) or (kind == "attacker" and cond.attacker == name):
                            cond.failed = True
                            cond.errors.append(err)
        self.evaluators: dict[tuple[str, str], tuple[Any, str]] = {}
        for kind, names in self.evaluator_specs.items():
            for name in names:
                try:
                    self.evaluators[(kind, name)] = host.get(kind, name, fit=fit)
                except Exception as exc:  # noqa: BLE001 - one broken evaluator must not stop the others
                    self.error(name, kind, "load", None, exc)
        self.ready = {k: [n for (kk, n) in self.evaluators if kk == k] for k in self.evaluator_specs}

    def in_sample(self, host: PluginHost) -> dict[str, list[str]]:
        """Evaluator name -> the PETs of this run that use it internally (declared dependencies, recursively)."""
        used: dict[str, list[str]] = defaultdict(list)
        for (kind, spec) in self.transforms:
            if kind != "pet":
                continue
            for _, name in sorted(host.internal_evaluators("pet", spec)):
                if spec not in used[name]:
                    used[name].append(spec)
        return dict(used)

    def make_plan(self, informed: InformedTier) -> Plan:
        return Plan(self.conditions_spec, self.shards,
                    transform_keys={k: key for k, (_, key) in self.transforms.items()},
                    evaluator_keys={k: key for k, (_, key) in self.evaluators.items()},
                    informed_keys=informed.keys, fits=self.fit_list(self.host, [*self.transforms, *self.evaluators]))

    @staticmethod
    def fit_list(host: PluginHost, specs) -> list[dict[str, Any]]:
        """Every fit that the (kind, spec) pairs need, dependencies included, once each, with its fit key."""
        seen: dict[str, dict[str, Any]] = {}
        for kind, spec in specs:
            for fit in host.fits(kind, spec):
                seen.setdefault(fit["key"], fit)
        return list(seen.values())

    # ---------------------------------------------------------------- main

    def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        keep_freed_memory()  # batches reuse the memory the previous batch freed (allocator.py says why)
        self.check_names()  # names and every plugin option, then the paths and their layouts: all before any data is read
        for flag, path in (("--data", cfg.data), ("--train-data", cfg.train_data)):
            if path:
                self.detect_source(path, flag)
        if cfg.dry_run:
            return self.dry_run()
        from ..locks import out_lock

        with out_lock(self.out, command=list(self.argv)):
            return self._execute(started)

    def upfront_tasks(self, host: PluginHost, dry: bool = False) -> list[dict[str, Any]]:
        """Every fit and task of the run, cached or to run, from specs, declared dependencies and fingerprints alone.

        Nothing is created or fitted: this is what a run prints before its first fit (PrivacyNet's training is
        most of a main job) and all that a dry run does. ``dry`` also warns of plugins whose models are missing.
        """
        cfg, store = self.cfg, self.store
        self.evaluator_specs = {kind: (given if given is not None else self.default_evaluators(kind, store))
                                for kind, given in (("classifier", cfg.classifiers), ("verifier", cfg.verifiers),
                                                    ("featurizer", cfg.featurizers))}
        self.conditions_spec = conditions_of(cfg.pets, cfg.attackers)
        specs = [("pet", n) for n in cfg.pets] + [("attacker", n) for n in cfg.attackers] + \
                [(kind, n) for kind, names in self.evaluator_specs.items() for n in names]
        for kind, spec in specs:
            entry = self.registry.get(kind, parse_spec(spec)[0])
            if dry and not self.models_present(entry, store):
                self.warnings.append(f"dry run: {kind} {spec} lacks model files or modules "
                                     f"({', '.join(entry.missing_requirements() or entry.cls.models)}); the run would fail to load it")
        keys = {(kind, spec): host.key(kind, spec) for kind, spec in specs}
        self.shards = make_shards(self.splits.eval, self.shard_size(), self.data_fp, self.image_size)
        plan = Plan(self.conditions_spec, self.shards,
                    transform_keys={k: v for k, v in keys.items() if k[0] in ("pet", "attacker")},
                    evaluator_keys={k: v for k, v in keys.items() if k[0] not in ("pet", "attacker")},
                    fits=self.fit_list(host, specs))
        return plan.tasks(self.cache)

    def dry_run(self) -> dict[str, Any]:
        """Print the plan without running anything: stages, tasks, which are cached, which will run.

        No plugin is created, fitted or run, and no image is decoded except by the split's usability check when
        the split is not cached yet (that split is cached for the run). Every key, fits included, is computed from
        plugin specs, declared dependencies and data fingerprints alone, exactly as the run computes them.
        """
        host = self.setup(dry=True)
        tasks = self.upfront_tasks(host, dry=True)
        summary, estimate = summarise(tasks), self.estimate(tasks)
        self.reporter.plan(summary, estimate, tasks if not cfg_quiet(self.cfg) else [])
        for warning in self.warnings:
            self.reporter.log(f"[yellow]warning[/yellow]: {escape(warning)}")
        return {"plan": summary, "tasks": tasks, "warnings": self.warnings, "estimate_s": estimate}

    def prefit(self) -> list[dict[str, Any]]:
        """Fit every plugin of the run into the cache (the split too) and run nothing else; the fits with their keys.

        What a dry run did before it stopped fitting: benchmarks use it to time later runs without their fits.
        """
        self.check_names()
        host = self.setup()
        with self.reporter:
            self.load_plugins(host)
        return self.fit_list(host, [*self.transforms, *self.evaluators])

    def shard_size(self) -> int:
        return int(self.cfg.shard_size or self.cfg.batch_size)

    def estimate(self, tasks: list[dict[str, Any]]) -> float | None:
        """Seconds the uncached tasks will take, from the per-image rates that earlier runs left in the cache."""
        rates = self.cache.get_json("timing", "rates") or {}
        total, known = 0.0, False
        for t in tasks:
            if t["cached"]:
                continue
            if t["stage"] == "fit":  # a fit's seconds scale with its training images (the informed tier's are not planned)
                rate = rates.get(f"fit:{t['what']}")
                if rate is not None:
                    total += rate * len(self.splits.train)
                    known = True
                continue
            what = t["what"].split(" ", 1)
            plugin = what[1].split(":", 1)[1] if t["stage"] == "score" and len(what) > 1 else what[0].split("/")[0 if t["stage"] == "protect" else 1]
            rate = rates.get(f"{ {'protect': 'pet', 'recover': 'attacker', 'score': 'score'}[t['stage']] }:{plugin}".replace(" ", ""))
            if rate is not None:
                total += rate * t.get("images", 0)
                known = True
        return total if known else None

    def _execute(self, started: float) -> dict[str, Any]:
        cfg = self.cfg
        host = self.setup()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "samples").mkdir(exist_ok=True)
        self.shards = make_shards(self.splits.eval, self.shard_size(), self.data_fp, self.image_size)
        eval_set = DiskFaceSet(self.splits.eval, self.image_size, host.device)
        self.samples = [{"id": r.id, "identity": r.identity, "gender": r.gender, "images": {}, "p_male": {}, "similarity": {},
                         "diagnostics": {}} for r in self.splits.eval[: cfg.samples]]
        with self.reporter:
            upfront = self.upfront_tasks(host)  # printed before the first fit: fits are most of a main job's work
            self.plan_summary = summarise(upfront)
            self.reporter.plan(self.plan_summary, self.estimate(upfront), [])
            self.load_plugins(host)
            t0 = time.perf_counter()
            informed = self.informed_tier(host, eval_set)
            self.timings["informed tier"] += time.perf_counter() - t0
            plan = self.make_plan(informed)
            runner = ShardRunner(plan, transforms={k: p for k, (p, _) in self.transforms.items()},
                                 evaluators={k: p for k, (p, _) in self.evaluators.items()}, informed=informed.classifiers,
                                 cache=self.cache, device=host.device, load_originals=eval_set.load_uint8, seed=cfg.seed,
                                 timeout=host.timeout, n_samples=cfg.samples)
            t0 = time.perf_counter()
            self.stream(plan, runner, informed, host)
            self.timings["execute"] += time.perf_counter() - t0
        for key, seconds in host.timings.items():
            self.timings[key] += seconds

        t0 = time.perf_counter()
        conditions = self.measure(host, informed)
        self.timings["metrics"] = time.perf_counter() - t0
        self.timings["total"] = time.perf_counter() - started
        self.save_rates()
        results = self.results(host, conditions, informed)
        from ..results import write_results

        write_results(self.out / "results.json", results)
        results = json.loads((self.out / "results.json").read_text())
        self.report_files = self.write_reports(results)
        self.reporter.summary(results)
        return results

    def informed_tier(self, host: PluginHost, eval_set: DiskFaceSet) -> InformedTier:
        if not self.cfg.informed:
            return InformedTier()
        records = informed_subset(self.splits.train, self.cfg.informed_per_class, self.cfg.seed)
        train_set = DiskFaceSet(records, self.image_size, host.device)
        verifiers = {n: v for (k, n), v in self.evaluators.items() if k == "verifier"}
        return build_informed_tier(
            host, pets=[p for (k, p) in self.transforms if k == "pet"], transforms=self.transforms, verifiers=verifiers,
            classifier_specs=self.informed_specs(), records=records, shard_size=self.shard_size(), data_fp=self.data_fp,
            image_size=self.image_size, cache=self.cache, device=host.device, seed=self.cfg.seed, timeout=host.timeout,
            loader=train_set.load_uint8, error=self.errors.append)

    # ---------------------------------------------------------------- execute (local streaming)

    def stream(self, plan: Plan, runner: ShardRunner, informed: InformedTier, host: PluginHost | None = None) -> None:
        """Every shard through the executor (local: one after another), merged in shard order as results arrive."""
        from .executors import executor_for

        n = len(self.splits.eval)
        tasks = {c.key: self.reporter.add_task(self.stage_label(c.pet, c.attacker), total=n) for c in plan.conditions}
        diag_path = self.out / "diagnostics.jsonl"
        diag_path.write_text("")
        executor = executor_for(self.cfg, log=self.reporter.log)
        for result in executor.map_shards(plan, runner, self.skip_set, informed_refs=informed.fit_refs, host=host):
            self.merge(result, plan, diag_path)
            for c in plan.conditions:
                self.reporter.advance(tasks[c.key], len(plan.shards[result.shard].records))
        for key, seconds in executor.timings.items():  # its own overheads, e.g. starting Ray workers
            self.timings[key] += seconds

    def skip_set(self) -> set[str]:
        return {k for k, c in self.conditions.items() if c.failed}

    def merge(self, result: ShardResult, plan: Plan, diag_path: Path) -> None:
        shard = plan.shards[result.shard]
        for key, seconds in result.timings.items():
            self.timings[key] += seconds
        for key, n in result.images.items():
            self.stage_images[key] += n
        lines = []
        for cond_spec in plan.conditions:
            cond = self.conditions[cond_spec.key]
            part = result.conditions.get(cond_spec.key)
            if cond.failed or part is None:
                continue
            for err in part.evaluator_errors:
                if err["label"] not in cond.dropped:
                    self.log_error({**err, "stage": f"score {cond.key}"})
            if part.error:
                cond.failed = True
                cond.errors.append(self.log_error(part.error))
                if cond.attacker == NO_ATTACK:  # the PET failed: its recovered conditions fail too
                    for other in self.conditions.values():
                        if other.pet == cond.pet and other is not cond and not other.failed:
                            other.failed = True
                            other.errors.append(cond.errors[-1])
                continue
            cond.add(part)
            if part.diagnostics:
                for rec, diag in zip(shard.records, part.diagnostics):
                    lines.append(json_text({"id": rec.id, "pet": cond.pet, "attacker": cond.attacker, **diag}) + "\n")
                    if shard.start + shard.records.index(rec) < len(self.samples):
                        self.samples[shard.start + shard.records.index(rec)]["diagnostics"][cond.key] = diag
            if part.samples is not None:
                slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{cond.pet}__{cond.attacker}")
                for i, image in enumerate(part.samples):
                    rel = f"samples/{slug}__{shard.start + i}.png"
                    save_png(image, self.out / rel)
                    self.samples[shard.start + i]["images"][cond.key] = rel
        if lines:
            with open(diag_path, "a") as fh:
                fh.write("".join(lines))

    @staticmethod
    def stage_label(pet: str, attacker: str) -> str:
        if pet == ORIGINAL and attacker == NO_ATTACK:
            return "score originals"
        return f"{pet} → {attacker}" if attacker != NO_ATTACK else f"protect {pet}"

    # ---------------------------------------------------------------- measure

    def measure(self, host: PluginHost, informed: InformedTier) -> list[dict[str, Any]]:
        metrics = self.cfg.metrics if self.cfg.metrics is not None else self.registry.names("metric")
        self.metric_specs = metrics
        metric_plugins = []
        for name in metrics:
            try:
                metric_plugins.append((name, *host.get("metric", name)))
            except Exception as exc:  # noqa: BLE001
                self.error(name, "metric", "load", None, exc)
        self.in_sample_map = self.in_sample(host)
        inputs = metric_inputs(self.conditions, self.splits.eval, informed, self.in_sample_map, self.cfg.seed, self.cfg.bootstrap)
        out = []
        n_eval = len(self.splits.eval)
        for key, cond in self.conditions.items():
            row: dict[str, Any] = {"pet": cond.pet, "attacker": cond.attacker, "status": "failed" if cond.failed else "ok",
                                   "n_images": len(cond.ids), "n_failed_images": n_eval - len(cond.ids) if cond.failed else 0,
                                   "errors": cond.errors, "metrics": [],
                                   "dropped_evaluators": sorted(cond.dropped)}
            out.append(row)
            data = inputs.get(key)
            if data is None:
                continue
            row["metrics"] = compute_metrics(
                data, metric_plugins, host.cache, warn=lambda w: self.warnings.append(w) if w not in self.warnings else None,
                error=lambda name, exc: row["errors"].append(self.error(name, "metric", f"compute {key}", None, exc)))
            self.sample_scores(cond, data)
        return out

    def sample_scores(self, cond: Condition, data) -> None:
        index = {i: k for k, i in enumerate(cond.ids)}
        for sample in self.samples:
            k = index.get(sample["id"])
            if k is None:
                continue
            sample["p_male"][cond.key] = {c: float(v[k]) for c, v in data.p_male.items()}
            sample["similarity"][cond.key] = {v: float(e[k] @ data.embeddings_original[v][k]) for v, e in data.embeddings.items()}

    def save_rates(self) -> None:
        """Seconds per image of each plugin stage, kept in the cache for the next run's estimate.

        The divisor is the images that stage computed in this run: an evaluator scores every condition, so
        dividing by the evaluation set's size would over-estimate the next run by the number of conditions.
        """
        rates = self.cache.get_json("timing", "rates") or {}
        for key, seconds in self.timings.items():
            n = self.stage_images.get(key, 0)
            if key.startswith(("pet:", "attacker:", "score:")) and seconds > 0 and n:
                rates[key] = seconds / n
        rates.update(self.host.fit_rates)
        self.cache.put_json("timing", "rates", rates)

    # ---------------------------------------------------------------- results

    def results(self, host: PluginHost, conditions: list[dict[str, Any]], informed: InformedTier) -> dict[str, Any]:
        cfg = self.cfg
        tiers = {TIER_OFF_THE_SHELF: [c for c in self.ready["classifier"]],
                 TIER_RECOVERY: [f"{a}→{c}" for a in cfg.attackers for c in self.ready["classifier"]]}
        for label, tier in sorted(informed.tiers().items()):
            tiers.setdefault(tier, []).append(label)
        return {
            "schema": "sbpet-results/1",
            "sbpet_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": list(self.argv),
            "git_commit": git_commit(),
            "packages": package_versions(),
            "config": {**plain(cfg.to_dict()), "classifiers": self.ready["classifier"], "verifiers": self.ready["verifier"],
                       "featurizers": self.ready["featurizer"], "metrics": self.metric_specs, "image_size": self.image_size,
                       "device": str(self.device), "informed_classifiers": self.informed_specs()},
            "dataset": {"path": cfg.data, "split": cfg.split, "source": self.source_name, "fingerprint": self.data_fp, "n_records": len(self.records),
                        "n_eval": len(self.splits.eval), "n_train": len(self.splits.train), "n_pool": len(self.splits.pool),
                        "image_size": self.image_size, "skipped": self.read_skipped + self.splits.skipped},
            **({"alignment": self.alignment} if self.alignment else {"alignment": {"aligner": "none"}}),
            **({"train_dataset": {**self.train_info, "n_train": len(self.splits.train), "n_pool": len(self.splits.pool)}}
               if self.train_info else {}),
            "plugins": self.plugin_table(host),
            "tiers": {"classifiers": tiers, "informed_train_images": informed.n_train, "in_sample": self.in_sample_map},
            "plan": self.plan_summary,
            "conditions": conditions,
            "samples": self.samples,
            "diagnostics_file": "diagnostics.jsonl",
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "cache": self.cache.stats(),
            "errors": self.errors,
            "warnings": self.warnings,
        }

    def plugin_table(self, host: PluginHost) -> list[dict[str, Any]]:
        table = []
        for (kind, name, opts, train_fp), (plugin, key) in host.instances.items():
            entry = self.registry.get(kind, name)
            table.append({"kind": kind, "name": name, "version": entry.version, "origin": entry.origin,
                          "options": json.loads(opts), "models": host.model_hashes(entry), "key": key,
                          **({"trained_on": "informed-tier images"} if train_fp else {})})
        return table

    def write_reports(self, results: dict[str, Any]) -> list[Path]:
        try:
            from ..report import write_reports
        except ImportError as exc:
            self.warnings.append(f"reports not written: {exc}")
            return []
        return write_reports(results, self.out, cache=self.cache)  # the cache keeps the plots of an unchanged run

    # ---------------------------------------------------------------- errors

    def error(self, plugin: str, kind: str, stage: str, batch: int | None, exc: BaseException) -> dict[str, Any]:
        known = (StageError, PluginLoadError, ConfigError)
        message = str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
        err = {"plugin": plugin, "kind": kind, "stage": stage, "batch": batch, "message": message}
        if not isinstance(exc, known):
            err["traceback"] = traceback.format_exc(limit=8)
        return self.log_error(err)

    def log_error(self, err: dict[str, Any]) -> dict[str, Any]:
        self.errors.append(err)
        where = f" on batch {err['batch']}" if err.get("batch") is not None else ""
        text = f"{err['kind']} {err['plugin']} failed at {err['stage']}{where}: {err['message']}"
        self.reporter.log(f"[red]error[/red]: {escape(text)}")
        return err


@dataclass(frozen=True)
class TrainingSplit:
    """The part of a run's data that plugins fit on: the training split and the candidate pool.

    What ``sbpet run`` with the same configuration gives its plugins' ``fit(train, pool)``; the evaluation
    identities (dev and test) are never in either, so a benchmark that tunes on it never sees them.
    """

    train: list[FaceRecord]
    pool: list[FaceRecord]
    image_size: int
    eval_identities: frozenset[str]

    def by_identity(self, part: str = "train") -> dict[str, list[FaceRecord]]:
        """The records of ``part`` ("train" or "pool") grouped by identity, identities sorted by name."""
        groups: dict[str, list[FaceRecord]] = {}
        for rec in sorted(getattr(self, part), key=lambda r: r.identity):
            groups.setdefault(rec.identity, []).append(rec)
        return groups

    def face_set(self, records: list[FaceRecord], device: torch.device | str = "cpu") -> DiskFaceSet:
        return DiskFaceSet(records, self.image_size, device)


def training_split(cfg: RunConfig, registry: Registry | None = None) -> TrainingSplit:
    """The training split and pool of a run with ``cfg`` (read, sampled, split and cached as the run does; no
    plugin is created or fitted). Benchmarks that choose a PET's defaults draw from it, never from the
    evaluation sample."""
    runner = Run(cfg, registry)
    with runner.reporter:
        runner.setup()
    return TrainingSplit(list(runner.splits.train), list(runner.splits.pool), runner.image_size,
                         frozenset(r.identity for r in runner.splits.eval))


def has_repeated_identities(records) -> bool:
    seen: set[str] = set()
    for r in records:
        if r.identity in seen:
            return True
        seen.add(r.identity)
    return False


def cfg_quiet(cfg: RunConfig) -> bool:
    return bool(cfg.quiet)


def run(cfg: RunConfig, argv: list[str] | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """Run a benchmark and return the results dictionary (also written to ``<out>/results.json``)."""
    return Run(cfg, registry=registry, argv=argv).execute()


def prefit(cfg: RunConfig, registry: Registry | None = None) -> list[dict[str, Any]]:
    """Fit every plugin of ``cfg``'s run into its cache and return the fits; see :meth:`Run.prefit`."""
    return Run(cfg, registry=registry).prefit()
