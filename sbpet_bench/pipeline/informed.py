"""The informed attacker tier: gender classifiers trained on protected images.

Kerckhoffs's principle: the attacker knows the PET. For each PET the harness protects a
gender-balanced subset of the training split (identity-disjoint from the evaluation set; cached
like any stage, so it resumes), then trains gender classifiers on those protected images with their
labels and scores them on the protected evaluation images:

- ``informed:probe:<verifier>``: a standardised logistic regression on each verifier's embeddings of
  the protected training images (the embeddings are cached scores, shared with nothing else);
- ``informed:<classifier>``: every trainable classifier plugin named in ``--informed-classifiers``
  (default ``cnn-gender``, trained from scratch, and a fine-tuned deep network), fitted through the
  plugin host on the protected images, so its fitted state is cached under the protected set's key;
- ``mixed:...``: the same, trained on the clean and the protected images together.

On the originals row the informed classifiers are trained on clean images only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..api import MALE, NO_ATTACK, ORIGINAL, TIER_INFORMED, TIER_MIXED, FaceBatch, FaceRecord, condition_label
from ..cache import stable_hash
from ..images import resize, uint8_to_tensor
from .checks import parse_spec
from .plan import ConditionSpec, Plan, make_shards
from .stages import ShardRunner

DEFAULT_INFORMED_CLASSIFIERS = ("cnn-gender", "faceapi-gender-ft")


class ArrayFaceSet:
    """A FaceSet over decoded uint8 images (the protected training images), in one or more parts.

    Batches never straddle two parts: the mixed set (clean part, then protected part) then yields the
    very batches that the clean and the protected sets yield alone, so a classifier that caches work per
    batch (faceapi-gender-ft's frozen body) finds it there.
    """

    def __init__(self, parts: Sequence[np.ndarray], records: Sequence[FaceRecord], device: torch.device):
        self.parts, self.records, self.device = list(parts), list(records), device
        if sum(len(p) for p in self.parts) != len(self.records):
            raise ValueError(f"{sum(len(p) for p in self.parts)} images for {len(self.records)} records")

    def __len__(self) -> int:
        return len(self.records)

    def _batch(self, images: np.ndarray, recs: Sequence[FaceRecord], size: int | None) -> FaceBatch:
        x = resize(uint8_to_tensor(images, self.device), size)
        genders = torch.tensor([-1 if r.gender is None else r.gender for r in recs], dtype=torch.int64, device=self.device)
        return FaceBatch(x, genders, [r.identity for r in recs], [r.id for r in recs])

    def batches(self, batch_size: int, size: int | None = None) -> Iterator[FaceBatch]:
        offset = 0
        for part in self.parts:
            for start in range(0, len(part), batch_size):
                stop = min(start + batch_size, len(part))
                yield self._batch(part[start:stop], self.records[offset + start:offset + stop], size)
            offset += len(part)

    def all(self, size: int | None = None) -> FaceBatch:
        return self._batch(np.concatenate(self.parts), self.records, size)


# Settings the informed tier gives its default classifiers, below the user's --option values. bfloat16
# training is as strong an attacker as float32 (benchmarks/informed_recipes.py on the training split, two
# seeds, originals + blur + noise, informed and mixed: mean AUC cnn-gender 0.968 vs 0.966, faceapi-gender-ft
# 0.969 vs 0.968) in 0.65x of the fit time (seed 1: 48.5 vs 74.6 s and 23.5 vs 36.0 s). Halving the epochs
# was not as strong (cnn-gender 0.946, faceapi-gender-ft 0.963): not adopted, like holdout and positions.
INFORMED_OPTIONS: dict[str, dict[str, Any]] = {
    "cnn-gender": {"precision": "bfloat16"},
    "faceapi-gender-ft": {"precision": "bfloat16"},
}


def informed_options(spec: str, user_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    name, inline = parse_spec(spec)
    return {k: v for k, v in INFORMED_OPTIONS.get(name, {}).items() if k not in inline and k not in user_options.get(name, {})}


class RepeatLoader:
    """Decodes a shard's originals once although the runner and the tier both ask for them."""

    def __init__(self, load):
        self.load, self.last = load, None

    def __call__(self, records: Sequence[FaceRecord]) -> np.ndarray:
        key = tuple(r.id for r in records)
        if self.last is None or self.last[0] != key:
            self.last = (key, self.load(records))
        return self.last[1]


def informed_subset(train: Sequence[FaceRecord], per_class: int | None, seed: int) -> list[FaceRecord]:
    """A seeded, gender-balanced subset of the training split (all of it when ``per_class`` is None)."""
    labelled = [r for r in train if r.gender in (0, 1)]
    if per_class is None:
        return labelled
    order = np.random.default_rng(stable_hash_int(seed, "informed")).permutation(len(labelled))
    taken, counts = [], {0: 0, 1: 0}
    for i in order:
        rec = labelled[i]
        if counts[rec.gender] < per_class:
            taken.append(rec)
            counts[rec.gender] += 1
    return sorted(taken, key=lambda r: r.id)


def stable_hash_int(*parts: Any) -> int:
    return int(stable_hash(*parts)[:8], 16)


@dataclass
class Probe:
    """Standardised logistic regression on one verifier's embeddings: P(male) = sigmoid(((x - mu) / sd) . w + b)."""

    verifier: str  # evaluator label, e.g. "verifier:faceapi-resnet"
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, verifier: str, x: np.ndarray, y: np.ndarray) -> "Probe":
        from sklearn.linear_model import LogisticRegression

        mean, scale = x.mean(0), x.std(0) + 1e-8
        clf = LogisticRegression(C=1.0, max_iter=3000).fit((x - mean) / scale, y)  # lbfgs: deterministic
        return cls(verifier, mean, scale, clf.coef_[0], float(clf.intercept_[0]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        with np.errstate(over="ignore"):  # exp(-z) overflows to inf for confident negatives: P(male) is then 0, as it should be
            return 1.0 / (1.0 + np.exp(-z))


@dataclass
class InformedTier:
    classifiers: dict[str, dict[str, Any]] = field(default_factory=dict)  # condition -> label -> fitted plugin
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # condition -> label -> plugin key
    fit_refs: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # condition -> label -> (spec, train fp)
    probes: dict[str, dict[str, Probe]] = field(default_factory=dict)  # condition -> label -> probe
    errors: list[dict[str, Any]] = field(default_factory=list)
    n_train: int = 0

    def tiers(self) -> dict[str, str]:
        labels = {lab for d in (*self.classifiers.values(), *self.probes.values()) for lab in d}
        return {lab: (TIER_MIXED if lab.startswith("mixed:") else TIER_INFORMED) for lab in labels}


def build_informed_tier(host, *, pets: list[str], transforms: dict, verifiers: dict, classifier_specs: Sequence[str],
                        records: list[FaceRecord], shard_size: int, data_fp: str, image_size: int, cache, device, seed: int,
                        timeout: float | None, loader, error) -> InformedTier:
    """Protect the training subset with every PET, embed it, and fit the informed and mixed classifiers."""
    tier = InformedTier(n_train=len(records))
    if not records:
        return tier
    loader = RepeatLoader(loader)
    timings = host.timings  # "informed <stage>:<plugin>" next to the run's own stages in results.json
    conditions = [ConditionSpec(ORIGINAL, NO_ATTACK)] + [ConditionSpec(p, NO_ATTACK) for p in pets if ("pet", p) in transforms]
    plan = Plan(conditions, make_shards(records, shard_size, data_fp, image_size),
                transform_keys={k: key for k, (_, key) in transforms.items() if k[0] == "pet"},
                evaluator_keys={("verifier", v): key for v, (_, key) in verifiers.items()})
    runner = ShardRunner(plan, transforms={k: p for k, (p, _) in transforms.items() if k[0] == "pet"},
                         evaluators={("verifier", v): p for v, (p, _) in verifiers.items()}, informed={}, cache=cache,
                         device=device, load_originals=loader, seed=seed, timeout=timeout, n_samples=0)
    images: dict[str, list[np.ndarray]] = {c.key: [] for c in conditions}
    embeddings: dict[str, dict[str, list[np.ndarray]]] = {c.key: {} for c in conditions}
    failed: set[str] = set()
    for shard in host.reporter.track(plan.shards, description="informed tier: protect training", total=len(plan.shards)):
        result = runner.run(shard, skip=failed)
        for key, seconds in result.timings.items():
            timings[f"informed {key}"] += seconds
        originals = loader(shard.records)
        for cond in conditions:
            part = result.conditions.get(cond.key)
            if part is None or part.error:
                if cond.key not in failed and part is not None and part.error:
                    error({**part.error, "stage": "informed tier: protect training split"})
                failed.add(cond.key)
                continue
            cached = originals if cond.pet == ORIGINAL else cache.get_arrays("images", plan.image_key(cond, shard))["images"]
            images[cond.key].append(cached)
            for label, arr in part.scores.items():
                embeddings[cond.key].setdefault(label, []).append(arr)
            for err in part.evaluator_errors:
                error({**err, "stage": "informed tier: embed training split"})
    y = np.array([1 if r.gender == MALE else 0 for r in records])
    clean = np.concatenate(images[condition_label(ORIGINAL, NO_ATTACK)]) if condition_label(ORIGINAL, NO_ATTACK) not in failed else None
    clean_emb = {k: np.concatenate(v) for k, v in embeddings[condition_label(ORIGINAL, NO_ATTACK)].items()}
    for cond in conditions:
        if cond.key in failed or clean is None:
            continue
        protected = np.concatenate(images[cond.key])
        emb = {k: np.concatenate(v) for k, v in embeddings[cond.key].items()}
        variants = [("informed", [protected], records, emb, y)]
        if cond.pet != ORIGINAL:
            variants.append(("mixed", [clean, protected], [*records, *records],
                             {k: np.concatenate([clean_emb[k], v]) for k, v in emb.items() if k in clean_emb},
                             np.concatenate([y, y])))
        for prefix, parts, recs, e, labels in variants:
            t0 = time.perf_counter()
            for vlabel, x in e.items():
                if len(x) == len(labels) and len(np.unique(labels)) == 2:
                    tier.probes.setdefault(cond.key, {})[f"{prefix}:probe:{vlabel.split(':', 1)[1]}"] = Probe.fit(vlabel, x, labels)
            timings["informed fit:probes"] += time.perf_counter() - t0
            set_fp = stable_hash("informed-train", prefix, plan.image_key(cond, plan.shards[0]) if cond.pet != ORIGINAL else "clean",
                                 [plan.image_key(cond, s) for s in plan.shards])
            faces = ArrayFaceSet(parts, recs, device)
            for spec in classifier_specs:
                label = f"{prefix}:{spec}"
                try:
                    plugin, key = host.get("classifier", spec, informed_options(spec, host.user_options) or None,
                                           train=faces, train_fp=set_fp)
                except Exception as exc:  # noqa: BLE001 - one informed classifier failing leaves the others
                    error({"plugin": spec, "kind": "classifier", "stage": f"informed tier: fit {label} for {cond.key}",
                           "batch": None, "message": f"{type(exc).__name__}: {exc}"})
                    continue
                tier.classifiers.setdefault(cond.key, {})[label] = plugin
                tier.keys.setdefault(cond.key, {})[label] = key
                tier.fit_refs.setdefault(cond.key, {})[label] = (spec, set_fp)
    return tier
