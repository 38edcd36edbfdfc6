"""One shard through every condition: protect, recover, score — the unit of work of every executor.

The runner holds ready plugins and computes, for one shard of evaluation images, each condition's
images (from the cache when the plan's key is there) and every evaluator's scores on them. It
returns plain arrays and error records, never touching the run's global state, so the local
executor and Ray workers run the very same code and produce the same bytes.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..api import NO_ATTACK, ORIGINAL, PLUGIN_KINDS, FaceBatch, Plugin, ProtectResult
from ..cache import Cache, stable_hash
from ..images import resize, tensor_to_uint8, uint8_to_tensor
from ..results import json_text
from .checks import StageError, check_images, check_scores, guarded
from .plan import ConditionSpec, Plan, Shard



@dataclass
class ConditionShard:
    ids: list[str] = field(default_factory=list)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # "classifier:NAME" -> (n,) or (n, D)
    diagnostics: list[dict[str, Any]] | None = None
    samples: np.ndarray | None = None  # uint8 (k, H, W, 3): this shard's rows of the report grid
    evaluator_errors: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None  # the condition's images failed on this shard


@dataclass
class ShardResult:
    shard: int
    conditions: dict[str, ConditionShard]
    timings: dict[str, float]
    timed_out: list[tuple[str, str]]
    # images each timed plugin stage processed ("score:NAME" counts every condition it scored): the rates' divisor
    images: dict[str, int] = field(default_factory=dict)


def _error(who: tuple[str, str], exc: StageError, shard: int) -> dict[str, Any]:
    return {"plugin": who[0], "kind": who[1], "stage": "run", "batch": shard, "message": exc.message}


class ShardRunner:
    def __init__(self, plan: Plan, *, transforms: dict[tuple[str, str], Plugin], evaluators: dict[tuple[str, str], Plugin],
                 informed: dict[str, dict[str, Plugin]], cache: Cache, device: torch.device, load_originals, seed: int,
                 timeout: float | None, n_samples: int):
        self.plan, self.transforms, self.evaluators, self.informed = plan, transforms, evaluators, informed
        self.cache, self.device, self.load_originals, self.seed = cache, device, load_originals, seed
        self.timeout, self.n_samples = timeout, n_samples
        self.dead: set[tuple[str, str]] = set()  # plugins that timed out: never called again

    def run(self, shard: Shard, skip: set[str] = frozenset()) -> ShardResult:
        timings: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        timed_out: list[tuple[str, str]] = []
        images: dict[str, np.ndarray] = {}
        results: dict[str, ConditionShard] = {}
        recs = shard.records

        def originals() -> np.ndarray:
            if ORIGINAL + "/" + NO_ATTACK not in images:
                t0 = time.perf_counter()
                images[ORIGINAL + "/" + NO_ATTACK] = self.load_originals(recs)
                timings["decode"] += time.perf_counter() - t0
            return images[ORIGINAL + "/" + NO_ATTACK]

        failed_pets: set[str] = set()
        for cond in self.plan.conditions:
            if cond.key in skip or cond.pet in failed_pets or not self.plan._condition_ok(cond):
                continue
            out = results[cond.key] = ConditionShard()
            try:
                loader = self._images(cond, shard, images, originals, out, timings, counts)
                if cond.attacker == NO_ATTACK and cond.pet != ORIGINAL:
                    loader()  # PET conditions always load: their diagnostics belong in every run's output
                self._score(cond, shard, loader, out, timings, counts, timed_out)
            except StageError as exc:
                out.scores.clear()
                out.error = _error(exc.who or (cond.pet, "pet"), exc, shard.index)
                if exc.timed_out and exc.who:
                    self.dead.add(exc.who)
                    timed_out.append(exc.who)
                if cond.attacker == NO_ATTACK:
                    failed_pets.add(cond.pet)
                continue
            out.ids = [r.id for r in recs]
            k = max(0, min(len(recs), self.n_samples - shard.start))
            if k:
                try:
                    out.samples = loader()[:k]
                except StageError as exc:
                    out.error = _error(exc.who or (cond.pet, "pet"), exc, shard.index)
        return ShardResult(shard.index, results, dict(timings), timed_out, dict(counts))

    # ---- images

    def _images(self, cond: ConditionSpec, shard: Shard, images: dict[str, np.ndarray], originals, out: ConditionShard,
                timings: dict[str, float], counts: dict[str, int]):
        """A loader for this condition's images on the shard: from memory, the cache, or computed."""
        if cond.pet == ORIGINAL and cond.attacker == NO_ATTACK:
            return originals
        kind, spec = ("pet", cond.pet) if cond.attacker == NO_ATTACK else ("attacker", cond.attacker)
        who = (spec, kind)
        plugin = self.transforms[(kind, spec)]
        key = self.plan.image_key(cond, shard)
        recs = shard.records

        def source() -> np.ndarray:
            if cond.attacker == NO_ATTACK:
                return originals()
            upstream = ConditionSpec(cond.pet, NO_ATTACK)
            if upstream.key in images:
                return images[upstream.key]
            if cond.pet == ORIGINAL:
                return originals()
            cached = self.cache.get_arrays("images", self.plan.image_key(upstream, shard))
            if cached is None:
                raise StageError(f"the images of {cond.pet} on batch {shard.index} are missing from the cache", (cond.pet, "pet"))
            return cached["images"]

        def loader() -> np.ndarray:
            if cond.key in images:
                return images[cond.key]
            cached = self.cache.get_arrays("images", key)
            if cached is not None:
                images[cond.key] = cached["images"]
                if "diagnostics" in cached and cached["diagnostics"].size:
                    out.diagnostics = [json.loads(s) for s in cached["diagnostics"]]
                return cached["images"]
            if who in self.dead:
                raise StageError(f"{kind} {spec} timed out earlier in this run", who)
            x = uint8_to_tensor(source(), self.device)
            torch.manual_seed(int(stable_hash(self.seed, key)[:8], 16))
            t0 = time.perf_counter()
            xin = resize(x, plugin.input_size)
            if kind == "pet":
                genders = torch.tensor([-1 if r.gender is None else r.gender for r in recs], dtype=torch.int64, device=self.device)
                batch = FaceBatch(xin, genders, [r.identity for r in recs], [r.id for r in recs])
                result = guarded(lambda: plugin.protect(batch), who, self.timeout)
                if not isinstance(result, ProtectResult):
                    raise StageError(f"{spec}.protect returned {type(result).__name__}, expected ProtectResult", who)
                y, diags = result.images, list(result.diagnostics or [])
            else:
                y, diags = guarded(lambda: plugin.recover(xin), who, self.timeout), []
            try:
                y = check_images(y, xin, f"{spec}.{'protect' if kind == 'pet' else 'recover'}")
            except StageError as exc:
                raise StageError(exc.message, who) from None
            y = resize(y.float(), x.shape[-1])
            timings[f"{kind}:{spec}"] += time.perf_counter() - t0
            counts[f"{kind}:{spec}"] += len(recs)
            if diags and len(diags) != len(recs):
                raise StageError(f"{spec} returned {len(diags)} diagnostics for {len(recs)} images", who)
            u8 = tensor_to_uint8(y)
            arrays: dict[str, np.ndarray] = {"images": u8}
            if diags:
                encoded = [json_text(d) for d in diags]
                arrays["diagnostics"] = np.array(encoded)
                out.diagnostics = [json.loads(s) for s in encoded]
            self.cache.put_arrays("images", key, arrays)
            images[cond.key] = u8
            return u8

        return loader

    # ---- scores

    def _score(self, cond: ConditionSpec, shard: Shard, loader, out: ConditionShard, timings: dict[str, float],
               counts: dict[str, int], timed_out: list[tuple[str, str]]) -> None:
        keys = self.plan.score_keys(cond, shard)
        plugins = {f"{kind}:{spec}": (kind, spec, p) for (kind, spec), p in self.evaluators.items()}
        for label, p in self.informed.get(cond.key, {}).items():
            plugins[f"classifier:{label}"] = ("classifier", label, p)
        full = None
        for label, (kind, spec, plugin) in plugins.items():
            spec_of_kind = PLUGIN_KINDS[kind]
            store = spec_of_kind.scores
            cached = self.cache.get_arrays("scores", keys[label])
            if cached is not None and store in cached:
                out.scores[label] = cached[store]
                continue
            who = (spec, kind)
            try:
                if who in self.dead:
                    raise StageError(f"{kind} {spec} timed out earlier in this run", who)
                u8 = loader()
                t0 = time.perf_counter()
                if full is None or full[0] is not u8:  # one float copy per image set, shared by its evaluators
                    full = (u8, uint8_to_tensor(u8, self.device))
                x = resize(full[1], plugin.input_size)
                x = x.clone() if x is full[1] else x  # a plugin that writes into its input must not reach the next one
                method = getattr(plugin, spec_of_kind.method)
                arr = check_scores(guarded(lambda: method(x), who, self.timeout), len(u8), f"{spec}.{spec_of_kind.method}",
                                   probability=spec_of_kind.output == "probability", unit_norm=spec_of_kind.output == "unit-norm")
                timings[f"score:{spec}"] += time.perf_counter() - t0
                counts[f"score:{spec}"] += len(u8)
            except StageError as exc:
                if exc.who is not None and exc.who != who:  # the images failed, not the evaluator
                    raise
                if exc.timed_out:
                    self.dead.add(who)
                    timed_out.append(who)
                out.evaluator_errors.append({**_error(who, exc, shard.index), "condition": cond.key, "label": label})
                continue
            self.cache.put_arrays("scores", keys[label], {store: arr})
            out.scores[label] = arr
