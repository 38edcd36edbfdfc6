"""The set-up phase of ``sbpet run``: read the data set, sample and split it (cached), align the faces.

:class:`DataPhase` is the part of :class:`.run.Run` that turns ``--data`` (and ``--train-data``,
``--align``) into the evaluation sample, the training split and the candidate pool, the working
size and the data fingerprint that every later key folds in. It needs from the run its ``cfg``,
``registry``, ``reporter``, ``warnings`` and ``timings``, and its ``make_cache`` and ``model_store``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..cache import Cache, stable_hash
from ..config import ConfigError, RunConfig
from ..data import (DiskFaceSet, SplitSpec, Splits, check_evaluation_size, check_training_split, dataset_fingerprint, split,
                    working_size)
from ..plugins import PluginEntry, Registry
from ..progress import Reporter
from .checks import parse_spec
from .host import PluginHost, standalone_context

ALIGNED_SIZE = 112  # the canonical crop size of an aligned run without --image-size
MIN_PER_CLASS = 10  # fewer evaluation faces per gender than this make AUCs and EERs meaningless


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


class DataPhase:
    """Set-up: the run's data, splits, working size and plugin host (mixed into :class:`.run.Run`)."""

    cfg: RunConfig
    registry: Registry
    reporter: Reporter
    warnings: list[str]
    timings: dict[str, float]
    cache: Cache | None

    def make_cache(self) -> Cache:  # provided by Run
        raise NotImplementedError

    def model_store(self) -> Any:  # provided by Run
        raise NotImplementedError

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
        size_and_notice = self.split_record(stable_hash("working-size", self.data_fp),
                                            lambda: dict(zip(("size", "notice"), working_size(self.records))))
        return int(size_and_notice["size"]), size_and_notice["notice"]

    def cached_split(self, key: str, make) -> Splits:
        return Splits.from_json(json.dumps(self.split_record(key, lambda: json.loads(make().to_json()))))

    def split_record(self, key: str, make) -> dict:
        """The JSON record under `key` in the cache's split namespace, made and stored on a miss.

        Never refreshed, not even by --refresh: split lists and the working size are pure functions of the
        data's contents and the spec, so a stored record is always right for its key."""
        cached = Cache(self.cache.root).get_json("split", key)
        if cached:
            return cached
        record = make()
        self.cache.put_json("split", key, record)
        return record

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


def has_repeated_identities(records) -> bool:
    seen: set[str] = set()
    for r in records:
        if r.identity in seen:
            return True
        seen.add(r.identity)
    return False
