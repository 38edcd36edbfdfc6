"""``sbpet run``: set up, plan, execute, measure, write — the phases of one evaluation run.

1. set-up: read the data set, sample and split it (cached), optionally align the faces (:mod:`.data_phase`);
2. plan: create the plugins (fitting them once, cached) and compute the key of every task;
   ``--dry-run`` stops here and prints the plan;
3. informed tier: protect the training subset with every PET and train gender classifiers on it;
4. execute: every shard through every condition (:mod:`.stages`), streamed by the local executor
   or spread over Ray workers (:mod:`.executors`), writing diagnostics and the report's samples;
5. measure: metrics per condition (:mod:`.measure`), then results.json and the reports.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from .. import __version__
from ..allocator import keep_freed_memory
from ..api import NO_ATTACK, FaceRecord, ORIGINAL, TIER_OFF_THE_SHELF, TIER_RECOVERY
from ..cache import Cache
from ..config import ConfigError, RunConfig
from ..data import DiskFaceSet
from ..images import save_png
from ..plugins import PluginEntry, PluginLoadError, Registry, load_registry
from ..progress import Reporter
from ..results import json_text
from .checks import StageError, parse_spec
from .data_phase import DataPhase
from .host import PluginHost
from .informed import DEFAULT_INFORMED_CLASSIFIERS, InformedTier, build_informed_tier, informed_subset
from .measure import Condition, compute_metrics, metric_inputs, plain
from .plan import Plan, conditions_of, make_shards, summarise
from .stages import ShardResult, ShardRunner




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


class Run(DataPhase):
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


def cfg_quiet(cfg: RunConfig) -> bool:
    return bool(cfg.quiet)


def run(cfg: RunConfig, argv: list[str] | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """Run a benchmark and return the results dictionary (also written to ``<out>/results.json``)."""
    return Run(cfg, registry=registry, argv=argv).execute()


def prefit(cfg: RunConfig, registry: Registry | None = None) -> list[dict[str, Any]]:
    """Fit every plugin of ``cfg``'s run into its cache and return the fits; see :meth:`Run.prefit`."""
    return Run(cfg, registry=registry).prefit()
