"""``sbpet run``: protect, recover, score and measure, streaming over batches with a resumable cache.

For each batch of evaluation images: every PET protects it, every attacker
recovers the originals and each PET's output, and every classifier, verifier
and featurizer scores each of those image sets. Only the scores stay in
memory; images and scores go to the cache batch by batch, so a killed run
resumes at the batch in flight. Metrics are computed at the end.
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
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from rich.markup import escape

from . import __version__
from .api import FaceBatch, MetricInput, MetricValue, Plugin, PluginContext, ProtectResult
from .cache import Cache, atomic_write_text, stable_hash
from .config import ConfigError, RunConfig
from .data import DiskFaceSet, SplitSpec, Splits, dataset_fingerprint, split
from .images import ImageDecodeError, load_image, resize, save_png, tensor_to_uint8, uint8_to_tensor
from .plugins import PluginEntry, PluginLoadError, Registry, load_registry
from .progress import Reporter

ORIGINAL = "original"
NONE = "none"
TOLERANCE = 1e-3  # how far outside [0, 1] an output may stray before it counts as wrong


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


class StageError(Exception):
    """A plugin failed on a batch: raised, or returned the wrong shape, dtype, range or NaN."""


@dataclass
class Condition:
    pet: str
    attacker: str
    failed: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    p_male: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    embeddings: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    features: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))

    @property
    def key(self) -> str:
        return f"{self.pet}/{self.attacker}"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _package_versions() -> dict[str, str]:
    names = ["sbpet", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image", "pillow", "pluggy", "dlib-bin", "pytorch-fid"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


# --------------------------------------------------------------------------- plugins in a run


class PluginHost:
    """Creates plugins for a run with their options and context, fitting them once (cached)."""

    def __init__(self, registry: Registry, cfg: RunConfig, cache: Cache, splits: Splits, image_size: int,
                 device: torch.device, reporter: Reporter, data_fp: str, model_store: Any):
        self.registry, self.cfg, self.cache, self.reporter = registry, cfg, cache, reporter
        self.device, self.image_size, self.model_store = device, image_size, model_store
        self.train = DiskFaceSet(splits.train, image_size, device)
        self.pool = DiskFaceSet(splits.pool, image_size, device)
        self.split_fp = stable_hash(data_fp, [r.id for r in splits.train], [r.id for r in splits.pool])
        self.user_options = cfg.plugin_options()
        self.instances: dict[tuple[str, str, str], tuple[Plugin, str]] = {}
        self.timings: dict[str, float] = defaultdict(float)

    def model_hashes(self, entry: PluginEntry) -> dict[str, str]:
        return {name: (self.registry.assets[name].sha256 if name in self.registry.assets else "unregistered")
                for name in entry.cls.models}

    def model_path(self, name: str) -> str:
        if self.model_store is None:
            raise FileNotFoundError(f"model {name!r} is needed, but no model store is available")
        return self.model_store.path(name)

    def options_for(self, entry: PluginEntry, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return entry.parse_options({**self.user_options.get(entry.name, {}), **(extra or {})})

    def plugin_key(self, entry: PluginEntry, options: dict[str, Any]) -> str:
        """Everything that determines this plugin's behaviour, hashed."""
        fit_part = self.split_fp if entry.cls.fits else None
        return stable_hash(entry.kind, entry.name, entry.version, options, self.model_hashes(entry), fit_part,
                           self.cfg.seed, self.image_size)

    def fit_key(self, entry: PluginEntry, options: dict[str, Any]) -> str:
        """What determines the fitted state: the key over the options that ``fit`` uses only."""
        names = entry.cls.fit_options
        relevant = options if names is None else {k: options[k] for k in names if k in options}
        return stable_hash("fit", self.plugin_key(entry, relevant))

    def get(self, kind: str, name: str, extra_options: dict[str, Any] | None = None) -> tuple[Plugin, str]:
        """A ready (fitted) plugin instance and its key."""
        entry = self.registry.get(kind, name)
        options = self.options_for(entry, extra_options)
        memo = (kind, name, json.dumps(options, sort_keys=True, default=str))
        if memo in self.instances:
            return self.instances[memo]
        key = self.plugin_key(entry, options)
        fit_key = self.fit_key(entry, options) if entry.cls.fits else key
        context = PluginContext(
            device=self.device, seed=self.cfg.seed, work_dir=str(self.cache.work_dir(fit_key)), model_path=self.model_path,
            get_classifier=lambda n, **o: self.get("classifier", n, o)[0],
            get_verifier=lambda n, **o: self.get("verifier", n, o)[0],
            log=self.reporter.log, progress=self.reporter.track, train=self.train, trust_pickle=self.cfg.trust_pickle)
        plugin = entry.create(options, context)
        if entry.cls.fits:
            self._fit(plugin, entry, fit_key)
        self.instances[memo] = (plugin, key)
        return plugin, key

    def _fit(self, plugin: Plugin, entry: PluginEntry, key: str) -> None:
        state = self.cache.get_state("fit", key)
        if state is not None:
            plugin.load_state_dict(state)
            return
        if len(self.train) == 0:
            raise PluginLoadError(f"{entry.kind} {entry.name!r} needs a training split, but it is empty; "
                                  "use a data set with more identities or lower --per-class")
        self.reporter.log(escape(f"fitting {entry.kind} {entry.name} on {len(self.train)} training images"))
        start = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        if entry.kind == "pet":
            plugin.fit(self.train, self.pool)
        else:
            plugin.fit(self.train)
        self.timings[f"fit:{entry.name}"] += time.perf_counter() - start
        self.cache.put_state("fit", key, plugin.state_dict())


# --------------------------------------------------------------------------- output checks


def _check_images(out: Any, like: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise StageError(f"{who} returned {type(out).__name__}, expected a torch.Tensor")
    if tuple(out.shape) != tuple(like.shape):
        raise StageError(f"{who} returned shape {tuple(out.shape)}, expected {tuple(like.shape)}")
    if not out.is_floating_point():
        raise StageError(f"{who} returned dtype {out.dtype}, expected a float tensor in [0, 1]")
    if not torch.isfinite(out).all():
        raise StageError(f"{who} returned NaN or infinite values")
    lo, hi = float(out.min()), float(out.max())
    if lo < -TOLERANCE or hi > 1 + TOLERANCE:
        raise StageError(f"{who} returned values in [{lo:.3g}, {hi:.3g}], expected [0, 1]")
    return out


def _check_scores(out: Any, n: int, who: str, *, probability: bool, unit_norm: bool = False) -> np.ndarray:
    if not isinstance(out, torch.Tensor):
        raise StageError(f"{who} returned {type(out).__name__}, expected a torch.Tensor")
    arr = out.detach().float().cpu().numpy()
    if probability and arr.shape != (n,):
        raise StageError(f"{who} returned shape {arr.shape}, expected ({n},)")
    if not probability and (arr.ndim != 2 or arr.shape[0] != n):
        raise StageError(f"{who} returned shape {arr.shape}, expected ({n}, D)")
    if not np.isfinite(arr).all():
        raise StageError(f"{who} returned NaN or infinite values")
    if probability and (arr.min() < -TOLERANCE or arr.max() > 1 + TOLERANCE):
        raise StageError(f"{who} returned probabilities outside [0, 1]")
    if unit_norm and not np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-2):
        raise StageError(f"{who} returned embeddings that are not L2-normalised")
    return np.clip(arr, 0, 1) if probability else arr


# --------------------------------------------------------------------------- the run


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

    # ---- set-up

    def _check_names(self) -> None:
        for kind, names in (("pet", self.cfg.pets), ("attacker", self.cfg.attackers), ("classifier", self.cfg.classifiers),
                            ("verifier", self.cfg.verifiers), ("featurizer", self.cfg.featurizers), ("metric", self.cfg.metrics)):
            for spec in names or []:
                name, inline = parse_spec(spec)
                self.registry.get(kind, name).parse_options(inline)  # unknown name or option: error listing the valid ones
        if not self.cfg.pets:
            raise ConfigError(f"no PETs: pass --pets, e.g. --pets {','.join(self.registry.names('pet')[:4])}")
        in_run = {parse_spec(s)[0] for s in [*self.cfg.pets, *self.cfg.attackers, *(self.cfg.classifiers or []),
                                             *(self.cfg.verifiers or []), *(self.cfg.featurizers or []), *(self.cfg.metrics or [])]}
        for plugin, opts in self.cfg.plugin_options().items():
            entries = [e for k in self.registry.kinds() for e in [self.registry.entries[k].get(plugin)] if e is not None]
            if not entries:
                raise ConfigError(f"--option {plugin}.*: there is no plugin named {plugin!r}")
            for entry in entries:
                entry.parse_options(opts)  # unknown option -> error listing the valid ones
            if plugin not in in_run:
                self.warnings.append(f"options for {plugin!r} are set, but it is not named in this run")

    def _model_store(self) -> Any:
        try:
            from .modelstore import ModelStore
        except ImportError:
            return None
        return ModelStore(None, self.registry.assets)

    def _models_present(self, entry: PluginEntry, store: Any) -> bool:
        if store is None:
            return not entry.cls.models
        for name in entry.cls.models:
            try:
                store.path(name, fetch=False)
            except Exception:  # noqa: BLE001 - absent, unregistered or unverifiable: not usable by default
                return False
        return not entry.missing_requirements()

    def _default_evaluators(self, kind: str, store: Any) -> list[str]:
        """Primary evaluators whose models are present, plus 'when-present' ones; else the fallbacks."""
        entries = list(self.registry.all_entries(kind))
        chosen = [e.name for e in entries if getattr(e.cls, "evaluator_role", "") in ("primary", "when-present")
                  and self._models_present(e, store)]
        primaries = [e.name for e in entries if getattr(e.cls, "evaluator_role", "") == "primary"]
        if not any(n in primaries for n in chosen):
            fallbacks = [e.name for e in entries if getattr(e.cls, "evaluator_role", "") == "fallback"]
            if primaries:
                self.warnings.append(
                    f"default {kind} {', '.join(primaries)} unavailable (models absent: run `sbpet models fetch --default`); "
                    f"using the weight-free {', '.join(fallbacks)} instead")
            chosen = fallbacks + chosen
        return chosen

    def _read_data(self) -> tuple[str, list, list]:
        path = self.cfg.data
        if not Path(path).exists():
            raise ConfigError(f"--data {path}: no such folder or file")
        if self.cfg.source:
            entry = self.registry.get("dataset", self.cfg.source)
        else:
            detected = [e for e in self.registry.all_entries("dataset") if e.create({}, None).detect(path)]
            if not detected:
                raise ConfigError(f"--data {path}: no dataset source recognises this layout; available sources: "
                                  f"{', '.join(self.registry.names('dataset'))} (pick one with --source)")
            entry = detected[0]
        source = entry.create(self.user_options_for(entry), None)
        records, skipped = source.read(path)
        if not records:
            raise ConfigError(f"--data {path}: the {entry.name} source found no labelled face images")
        return entry.name, records, skipped

    def user_options_for(self, entry: PluginEntry) -> dict[str, Any]:
        return entry.parse_options(self.cfg.plugin_options().get(entry.name, {}))

    # ---- main

    def setup(self) -> "PluginHost":
        """Read the data, sample and split it (cached), and make the plugin host."""
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        self.cache = Cache(cfg.cache_dir or (self.out.parent / ".sbpet-cache"), refresh=cfg.refresh)
        t0 = time.perf_counter()
        self.source_name, self.records, self.read_skipped = self._read_data()
        self.data_fp = dataset_fingerprint(self.records)
        spec = SplitSpec(per_class=cfg.per_class, seed=cfg.seed, max_per_identity=cfg.max_per_identity,
                         train_per_class=cfg.train_per_class, pool_per_class=cfg.pool_per_class)
        split_key = stable_hash("split", self.data_fp, asdict(spec))
        # Split lists never depend on --refresh: they are a pure function of the data and the spec.
        cached_split = Cache(self.cache.root).get_json("split", split_key)
        self.splits = Splits.from_json(json.dumps(cached_split)) if cached_split else split(self.records, spec)
        if not cached_split:
            self.cache.put_json("split", split_key, json.loads(self.splits.to_json()))
        self.warnings += self.splits.warnings
        if not self.splits.eval:
            raise ConfigError(f"--data {cfg.data}: no usable labelled images to evaluate")
        self.image_size = cfg.image_size or int(load_image(self.splits.eval[0].path).shape[0])
        self.timings["data"] = time.perf_counter() - t0
        self.store = self._model_store()
        return PluginHost(self.registry, cfg, self.cache, self.splits, self.image_size, self.device, self.reporter,
                          self.data_fp, self.store)

    def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        self._check_names()
        host = self.setup()
        cache, splits, image_size, data_fp, store = self.cache, self.splits, self.image_size, self.data_fp, self.store
        device, source_name, records, read_skipped = self.device, self.source_name, self.records, self.read_skipped
        store = self._model_store()
        classifiers = cfg.classifiers if cfg.classifiers is not None else self._default_evaluators("classifier", store)
        verifiers = cfg.verifiers if cfg.verifiers is not None else self._default_evaluators("verifier", store)
        featurizers = cfg.featurizers if cfg.featurizers is not None else self._default_evaluators("featurizer", store)
        metrics = cfg.metrics if cfg.metrics is not None else self.registry.names("metric")

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "samples").mkdir(exist_ok=True)
        with self.reporter:
            evaluators = self._prepare_evaluators(host, classifiers, verifiers, featurizers)
            conditions = self._stream(host, cache, splits, image_size, data_fp, evaluators)
        for key, seconds in host.timings.items():
            self.timings[key] += seconds

        t0 = time.perf_counter()
        results_conditions = self._measure(host, conditions, splits, metrics, evaluators)
        self.timings["metrics"] = time.perf_counter() - t0
        self.timings["total"] = time.perf_counter() - started

        results = {
            "schema": "sbpet-results/1",
            "sbpet_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": list(self.argv),
            "git_commit": _git_commit(),
            "packages": _package_versions(),
            "config": {**cfg.to_dict(), "classifiers": evaluators["classifier"], "verifiers": evaluators["verifier"],
                       "featurizers": evaluators["featurizer"], "metrics": metrics, "image_size": image_size,
                       "device": str(device)},
            "dataset": {"path": cfg.data, "source": source_name, "fingerprint": data_fp, "n_records": len(records),
                        "n_eval": len(splits.eval), "n_train": len(splits.train), "n_pool": len(splits.pool),
                        "image_size": image_size, "skipped": read_skipped + splits.skipped},
            "plugins": self._plugin_table(host, evaluators),
            "conditions": results_conditions,
            "samples": self.samples,
            "diagnostics_file": "diagnostics.jsonl",
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "cache": {"hits": cache.hits, "misses": cache.misses},
            "errors": self.errors,
            "warnings": self.warnings,
        }
        # JSON has no NaN: undefined numbers (e.g. FNMR where FMR cannot be reached) are stored as null.
        results = _strict_json(_plain(results))
        atomic_write_text(self.out / "results.json", json.dumps(results, indent=1, allow_nan=False))
        self.report_files = self._write_reports(results)
        self.reporter.summary(results)
        return results

    def _prepare_evaluators(self, host: PluginHost, classifiers, verifiers, featurizers) -> dict[str, list[str]]:
        """Instantiate (and fit) evaluators; one that fails to load is reported and left out."""
        ready: dict[str, list[str]] = {"classifier": [], "verifier": [], "featurizer": []}
        self.evaluator_instances: dict[tuple[str, str], tuple[Plugin, str]] = {}
        for kind, names in (("classifier", classifiers), ("verifier", verifiers), ("featurizer", featurizers)):
            for name in names:
                try:
                    base, inline = parse_spec(name)
                    self.evaluator_instances[(kind, name)] = host.get(kind, base, inline)
                    ready[kind].append(name)
                except Exception as exc:  # noqa: BLE001 - one broken evaluator must not stop the others
                    self._error(name, kind, "load", None, exc)
        return ready

    def _error(self, plugin: str, kind: str, stage: str, batch: int | None, exc: BaseException) -> dict[str, Any]:
        message = str(exc) if isinstance(exc, (StageError, PluginLoadError, ConfigError)) else f"{type(exc).__name__}: {exc}"
        err = {"plugin": plugin, "kind": kind, "stage": stage, "batch": batch, "message": message}
        if not isinstance(exc, (StageError, PluginLoadError, ConfigError)):
            err["traceback"] = traceback.format_exc(limit=8)
        self.errors.append(err)
        where = f" on batch {batch}" if batch is not None else ""
        self.reporter.log(f"[red]error[/red]: {escape(f'{kind} {plugin} failed at {stage}{where}: {message}')}")
        return err

    # ---- streaming over batches

    def _stream(self, host: PluginHost, cache: Cache, splits: Splits, image_size: int, data_fp: str,
                evaluators: dict[str, list[str]]) -> dict[str, Condition]:
        cfg = self.cfg
        eval_set = DiskFaceSet(splits.eval, image_size, host.device)
        conditions: dict[str, Condition] = {}
        order = [(ORIGINAL, NONE)] + [(ORIGINAL, a) for a in cfg.attackers] + \
                [(p, NONE) for p in cfg.pets] + [(p, a) for p in cfg.pets for a in cfg.attackers]
        for pet, attacker in order:
            conditions[f"{pet}/{attacker}"] = Condition(pet, attacker)

        # Plugins load lazily; a PET or attacker that fails to load fails its conditions only.
        transforms: dict[tuple[str, str], tuple[Plugin, str] | None] = {}
        for kind, names in (("pet", cfg.pets), ("attacker", cfg.attackers)):
            for name in names:
                try:
                    base, inline = parse_spec(name)
                    transforms[(kind, name)] = host.get(kind, base, inline)
                except Exception as exc:  # noqa: BLE001
                    err = self._error(name, kind, "load", None, exc)
                    transforms[(kind, name)] = None
                    for cond in conditions.values():
                        if (kind == "pet" and cond.pet == name) or (kind == "attacker" and cond.attacker == name):
                            cond.failed = True
                            cond.errors.append(err)

        n = len(splits.eval)
        n_batches = math.ceil(n / cfg.batch_size)
        self.samples = [{"id": r.id, "identity": r.identity, "gender": r.gender, "images": {}, "p_male": {}, "similarity": {},
                         "diagnostics": {}} for r in splits.eval[: cfg.samples]]
        diag_path = self.out / "diagnostics.jsonl"
        diag_lines: list[str] = []
        tasks = {key: self.reporter.add_task(self._stage_label(c), total=n) for key, c in conditions.items()}

        for b in range(n_batches):
            recs = splits.eval[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            batch_fp = stable_hash("batch", data_fp, [r.id for r in recs], image_size)
            genders = torch.tensor([r.gender for r in recs], dtype=torch.int64, device=host.device)
            originals: dict[str, Any] = {}

            def original_u8() -> np.ndarray:
                if "u8" not in originals:
                    t0 = time.perf_counter()
                    originals["u8"] = eval_set.load_uint8(recs)
                    self.timings["decode"] += time.perf_counter() - t0
                return originals["u8"]

            # Image sets of this batch, computed on demand: (pet, attacker) -> (key, loader)
            image_keys: dict[str, str] = {}
            image_cache: dict[str, np.ndarray] = {}

            for key, cond in conditions.items():
                if cond.failed:
                    continue
                try:
                    img_key, loader = self._images_for(cond, batch_fp, recs, genders, host, cache, transforms,
                                                       image_keys, image_cache, original_u8, diag_lines)
                    image_keys[key] = img_key
                    self._score(cond, img_key, loader, host, cache, evaluators)
                    cond.ids += [r.id for r in recs]
                    self._keep_samples(cond, b, recs, loader)
                except StageError as exc:
                    who = exc.args[1] if len(exc.args) > 1 else (cond.pet, "pet")
                    cond.failed = True
                    cond.errors.append(self._error(who[0], who[1], "run", b, StageError(exc.args[0] if exc.args else "failed")))
                    if cond.attacker == NONE:  # the PET failed: its recovered conditions fail too
                        for other in conditions.values():
                            if other.pet == cond.pet and other is not cond and not other.failed:
                                other.failed = True
                                other.errors.append(cond.errors[-1])
                self.reporter.advance(tasks[key], len(recs))
            if diag_lines:
                with open(diag_path, "a" if b else "w") as fh:
                    fh.write("".join(diag_lines))
                diag_lines.clear()
            elif b == 0:
                diag_path.write_text("")
        return conditions

    def _stage_label(self, cond: Condition) -> str:
        if cond.pet == ORIGINAL and cond.attacker == NONE:
            return "score originals"
        return f"{cond.pet} → {cond.attacker}" if cond.attacker != NONE else f"protect {cond.pet}"

    def _images_for(self, cond, batch_fp, recs, genders, host, cache, transforms, image_keys, image_cache, original_u8,
                    diag_lines) -> tuple[str, Callable[[], np.ndarray]]:
        """The cache key of a condition's images for this batch, and a loader that computes them if needed."""
        if cond.pet == ORIGINAL and cond.attacker == NONE:
            return batch_fp, original_u8
        if cond.attacker == NONE:
            plugin, pkey = transforms[("pet", cond.pet)]
            key = stable_hash("protect", pkey, batch_fp)
            source_loader = original_u8
        else:
            plugin, pkey = transforms[("attacker", cond.attacker)]
            upstream = f"{cond.pet}/{NONE}"
            if cond.pet == ORIGINAL:
                upstream_loader = original_u8
            else:
                upstream_loader = lambda: image_cache[upstream] if upstream in image_cache else self._load_cached(cache, image_keys[upstream])  # noqa: E731
            if upstream not in image_keys:
                raise StageError(f"no images from {cond.pet} to recover", (cond.pet, "pet"))
            key = stable_hash("recover", pkey, image_keys[upstream])
            source_loader = upstream_loader

        def loader() -> np.ndarray:
            if cond.key in image_cache:
                return image_cache[cond.key]
            cached = cache.get_arrays("images", key)
            if cached is not None:
                image_cache[cond.key] = cached["images"]
                if "diagnostics" in cached and cached["diagnostics"].size:
                    self._diagnostics(cond, recs, [json.loads(s) for s in cached["diagnostics"]], diag_lines)
                return cached["images"]
            src = source_loader()
            x = uint8_to_tensor(src, host.device)
            torch.manual_seed(int(stable_hash(self.cfg.seed, key)[:8], 16))
            size = plugin.input_size
            t0 = time.perf_counter()
            kind = "pet" if cond.attacker == NONE else "attacker"
            who = (cond.pet, "pet") if kind == "pet" else (cond.attacker, "attacker")
            try:
                with torch.no_grad():
                    xin = resize(x, size)
                    if kind == "pet":
                        batch = FaceBatch(xin, genders, [r.identity for r in recs], [r.id for r in recs])
                        result = plugin.protect(batch)
                        if not isinstance(result, ProtectResult):
                            raise StageError(f"{cond.pet}.protect returned {type(result).__name__}, expected ProtectResult")
                        out, diags = result.images, result.diagnostics
                    else:
                        out, diags = plugin.recover(xin), []
                    out = _check_images(out, xin, f"{who[0]}.{'protect' if kind == 'pet' else 'recover'}")
                    out = resize(out.float(), x.shape[-1])
            except StageError as exc:
                raise StageError(str(exc), who) from None
            except Exception as exc:  # noqa: BLE001 - any plugin failure is reported by name and batch
                raise StageError(f"{type(exc).__name__}: {exc}", who) from exc
            self.timings[f"{kind}:{who[0]}"] += time.perf_counter() - t0
            if diags and len(diags) != len(recs):
                raise StageError(f"{who[0]} returned {len(diags)} diagnostics for {len(recs)} images", who)
            u8 = tensor_to_uint8(out)
            arrays = {"images": u8}
            if diags:
                arrays["diagnostics"] = np.array([json.dumps(d, default=_json_default) for d in diags])
                self._diagnostics(cond, recs, diags, diag_lines)
            cache.put_arrays("images", key, arrays)
            image_cache[cond.key] = u8
            return u8

        return key, loader

    @staticmethod
    def _load_cached(cache: Cache, key: str) -> np.ndarray:
        arrays = cache.get_arrays("images", key)
        if arrays is None:
            raise StageError("an upstream image set vanished from the cache; re-run with --refresh")
        return arrays["images"]

    def _diagnostics(self, cond: Condition, recs, diags: list[dict], diag_lines: list[str]) -> None:
        sample_index = {s["id"]: s for s in self.samples}
        for rec, diag in zip(recs, diags):
            diag_lines.append(json.dumps({"id": rec.id, "pet": cond.pet, "attacker": cond.attacker, **diag},
                                         default=_json_default) + "\n")
            if rec.id in sample_index:
                sample_index[rec.id]["diagnostics"][cond.key] = diag

    def _score(self, cond: Condition, img_key: str, loader, host: PluginHost, cache: Cache,
               evaluators: dict[str, list[str]]) -> None:
        for kind, store_name, target in (("classifier", "p_male", cond.p_male), ("verifier", "embedding", cond.embeddings),
                                         ("featurizer", "features", cond.features)):
            for name in evaluators[kind]:
                plugin, ekey = self.evaluator_instances[(kind, name)]
                key = stable_hash("score", ekey, img_key)
                cached = cache.get_arrays("scores", key)
                if cached is None:
                    u8 = loader()
                    t0 = time.perf_counter()
                    try:
                        with torch.no_grad():
                            x = resize(uint8_to_tensor(u8, host.device), plugin.input_size)
                            if kind == "classifier":
                                arr = _check_scores(plugin.predict_male(x), len(u8), f"{name}.predict_male", probability=True)
                            elif kind == "verifier":
                                arr = _check_scores(plugin.embed(x), len(u8), f"{name}.embed", probability=False, unit_norm=True)
                            else:
                                arr = _check_scores(plugin.features(x), len(u8), f"{name}.features", probability=False)
                    except StageError as exc:
                        raise StageError(str(exc), (name, kind)) from None
                    except Exception as exc:  # noqa: BLE001
                        raise StageError(f"{type(exc).__name__}: {exc}", (name, kind)) from exc
                    self.timings[f"score:{name}"] += time.perf_counter() - t0
                    cache.put_arrays("scores", key, {store_name: arr})
                else:
                    arr = cached[store_name]
                target[name].append(arr)
        if not any(evaluators.values()):
            loader()  # no evaluator asked for the images: still protect/recover them for the cache and samples

    def _keep_samples(self, cond: Condition, b: int, recs, loader) -> None:
        """Write the first few images of every condition for the report's grid."""
        start = b * self.cfg.batch_size
        if start >= len(self.samples):
            return
        u8 = loader()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{cond.pet}__{cond.attacker}")
        for i in range(min(len(recs), len(self.samples) - start)):
            rel = f"samples/{slug}__{start + i}.png"
            save_png(u8[i], self.out / rel)
            self.samples[start + i]["images"][cond.key] = rel

    # ---- metrics

    def _measure(self, host: PluginHost, conditions: dict[str, Condition], splits: Splits, metrics: list[str],
                 evaluators: dict[str, list[str]]) -> list[dict[str, Any]]:
        by_id = {r.id: r for r in splits.eval}
        original = conditions[f"{ORIGINAL}/{NONE}"]
        orig_index = {i: k for k, i in enumerate(original.ids)}

        def cat(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
            return {k: np.concatenate(v) for k, v in parts.items() if v}

        orig_p, orig_e, orig_f = cat(original.p_male), cat(original.embeddings), cat(original.features)
        metric_plugins = []
        for name in metrics:
            try:
                metric_plugins.append((name, *host.get("metric", *parse_spec(name))))
            except Exception as exc:  # noqa: BLE001
                self._error(name, "metric", "load", None, exc)

        out = []
        for key, cond in conditions.items():
            row: dict[str, Any] = {"pet": cond.pet, "attacker": cond.attacker, "status": "failed" if cond.failed else "ok",
                                   "n_images": len(cond.ids), "n_failed_images": len(splits.eval) - len(cond.ids) if cond.failed else 0,
                                   "errors": cond.errors, "metrics": []}
            out.append(row)
            if cond.failed or not cond.ids:
                continue
            rows = np.array([orig_index[i] for i in cond.ids])
            before = conditions.get(f"{cond.pet}/{NONE}")
            orig_rec = conditions.get(f"{ORIGINAL}/{cond.attacker}")
            data = MetricInput(
                pet=cond.pet, attacker=cond.attacker,
                genders=np.array([by_id[i].gender for i in cond.ids]),
                identities=np.array([by_id[i].identity for i in cond.ids]), ids=np.array(cond.ids),
                p_male=cat(cond.p_male), p_male_original={k: v[rows] for k, v in orig_p.items()},
                embeddings=cat(cond.embeddings), embeddings_original={k: v[rows] for k, v in orig_e.items()},
                features=cat(cond.features), features_original={k: v[rows] for k, v in orig_f.items()},
                p_male_before_recovery=cat(before.p_male) if cond.attacker != NONE and before and not before.failed else {},
                p_male_original_recovered=cat(orig_rec.p_male) if cond.attacker != NONE and orig_rec and not orig_rec.failed else {},
                seed=self.cfg.seed, bootstrap=self.cfg.bootstrap)
            digest = _digest_input(data)
            for name, plugin, mkey in metric_plugins:
                cache_key = stable_hash("metric", mkey, digest)
                cached = host.cache.get_json("metrics", cache_key)
                if cached is not None:
                    row["metrics"] += cached
                    continue
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        values = [_plain(asdict(v) if isinstance(v, MetricValue) else v) for v in plugin.compute(data)]
                except Exception as exc:  # noqa: BLE001
                    row["errors"].append(self._error(name, "metric", f"compute {key}", None, exc))
                    continue
                self.warnings += [f"{name}: {w.message}" for w in caught if str(w.message) not in self.warnings]
                host.cache.put_json("metrics", cache_key, values)
                row["metrics"] += values
            self._sample_scores(cond, data)
        return out

    def _sample_scores(self, cond: Condition, data: MetricInput) -> None:
        index = {i: k for k, i in enumerate(cond.ids)}
        for sample in self.samples:
            k = index.get(sample["id"])
            if k is None:
                continue
            sample["p_male"][cond.key] = {c: float(v[k]) for c, v in data.p_male.items()}
            sample["similarity"][cond.key] = {v: float(e[k] @ data.embeddings_original[v][k]) for v, e in data.embeddings.items()}

    def _plugin_table(self, host: PluginHost, evaluators: dict[str, list[str]]) -> list[dict[str, Any]]:
        table = []
        for (kind, name, opts), (plugin, key) in host.instances.items():
            entry = self.registry.get(kind, name)
            table.append({"kind": kind, "name": name, "version": entry.version, "origin": entry.origin,
                          "options": json.loads(opts), "models": host.model_hashes(entry), "key": key})
        return table

    def _write_reports(self, results: dict[str, Any]) -> list[Path]:
        try:
            from .report import write_reports
        except ImportError as exc:
            self.warnings.append(f"reports not written: {exc}")
            return []
        return write_reports(results, self.out)


def _digest_input(data: MetricInput) -> str:
    """A hash of everything a metric sees, so that unchanged conditions reuse their metrics."""
    import hashlib

    h = hashlib.sha256()
    for name, value in sorted(vars(data).items()):
        h.update(name.encode())
        items = sorted(value.items()) if isinstance(value, dict) else [("", value)]
        for key, item in items:
            h.update(str(key).encode())
            if isinstance(item, np.ndarray):
                h.update(str(item.dtype).encode() + str(item.shape).encode())
                h.update(np.ascontiguousarray(item).tobytes() if item.dtype != object else str(item.tolist()).encode())
            else:
                h.update(repr(item).encode())
    return h.hexdigest()[:24]


def _strict_json(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_json(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars and arrays become Python numbers and lists."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def run(cfg: RunConfig, argv: list[str] | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """Run a benchmark and return the results dictionary (also written to ``<out>/results.json``)."""
    return Run(cfg, registry=registry, argv=argv).execute()
