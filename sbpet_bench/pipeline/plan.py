"""The run as a plan: conditions, shards, and the content-addressed key of every task.

A condition is (PET, attacker); the evaluation images are cut into shards of ``--shard-size``
(default ``--batch-size``) images. For each shard the plan names the key of every image set
(originals, protected, recovered) and of every score on it. A key folds in the keys of everything
upstream (plugin keys include their dependencies, see :mod:`.host`; a recovered set's key includes
the protected set's), so a task is cached exactly when nothing it depends on changed, and any
executor (local streaming, Ray workers) computes the same keys and meets in the same cache.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..api import NO_ATTACK, ORIGINAL, FaceRecord, condition_label
from ..cache import Cache, stable_hash


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # position of the first record in the evaluation set
    records: tuple[FaceRecord, ...]
    fp: str  # fingerprint of the shard's original images (their cache key)


def make_shards(records: Sequence[FaceRecord], size: int, data_fp: str, image_size: int) -> list[Shard]:
    shards = []
    for i, start in enumerate(range(0, len(records), size)):
        recs = tuple(records[start : start + size])
        shards.append(Shard(i, start, recs, stable_hash("batch", data_fp, [r.id for r in recs], image_size)))
    return shards


@dataclass(frozen=True)
class ConditionSpec:
    pet: str
    attacker: str

    @property
    def key(self) -> str:
        return condition_label(self.pet, self.attacker)

    @property
    def upstream(self) -> str | None:
        """The condition whose images this one's attacker recovers (None for un-attacked ones)."""
        return None if self.attacker == NO_ATTACK else condition_label(self.pet, NO_ATTACK)


def conditions_of(pets: Sequence[str], attackers: Sequence[str]) -> list[ConditionSpec]:
    order = [(ORIGINAL, NO_ATTACK)] + [(ORIGINAL, a) for a in attackers] + \
            [(p, NO_ATTACK) for p in pets] + [(p, a) for p in pets for a in attackers]
    return [ConditionSpec(p, a) for p, a in order]


@dataclass
class Plan:
    """Keys of every task; ``transform_keys`` maps ("pet"|"attacker", spec) to the plugin key."""

    conditions: list[ConditionSpec]
    shards: list[Shard]
    transform_keys: dict[tuple[str, str], str]
    evaluator_keys: dict[tuple[str, str], str]  # (kind, spec) -> key
    informed_keys: dict[str, dict[str, str]] = field(default_factory=dict)  # condition -> label -> classifier key
    fits: list[dict[str, Any]] = field(default_factory=list)  # {"plugin", "kind", "key"}

    def image_key(self, cond: ConditionSpec, shard: Shard) -> str:
        if cond.pet == ORIGINAL and cond.attacker == NO_ATTACK:
            return shard.fp
        if cond.attacker == NO_ATTACK:
            return stable_hash("protect", self.transform_keys[("pet", cond.pet)], shard.fp)
        upstream = self.image_key(ConditionSpec(cond.pet, NO_ATTACK), shard)
        return stable_hash("recover", self.transform_keys[("attacker", cond.attacker)], upstream)

    def score_keys(self, cond: ConditionSpec, shard: Shard) -> dict[str, str]:
        """Evaluator label -> key of its scores on this condition's shard."""
        img = self.image_key(cond, shard)
        keys = {f"{kind}:{spec}": stable_hash("score", key, img) for (kind, spec), key in self.evaluator_keys.items()}
        for label, key in self.informed_keys.get(cond.key, {}).items():
            keys[f"classifier:{label}"] = stable_hash("score", key, img)
        return keys

    def tasks(self, cache: Cache) -> list[dict[str, Any]]:
        """Every task with its key and whether the cache already holds it (for --dry-run and the summary).

        "cached" comes from :meth:`Cache.contains`, which reads an entry's header and trailer only, not its
        checksum: cheap enough for a plan over thousands of entries, and only a plan. The real run verifies
        the checksum of every entry it reads, so an entry damaged on disk is recomputed (and counted as a miss)
        even though the plan called it cached.
        """
        out = [{"stage": "fit", "what": f["plugin"], "key": f["key"], "cached": cache.contains("fit", f["key"])}
               for f in self.fits]
        for cond in self.conditions:
            if not self._condition_ok(cond):
                continue
            stage = "protect" if cond.attacker == NO_ATTACK else "recover"
            for shard in self.shards:
                if not (cond.pet == ORIGINAL and cond.attacker == NO_ATTACK):
                    key = self.image_key(cond, shard)
                    out.append({"stage": stage, "what": cond.key, "shard": shard.index, "key": key,
                                "images": len(shard.records), "cached": cache.contains("images", key)})
                for label, key in self.score_keys(cond, shard).items():
                    out.append({"stage": "score", "what": f"{cond.key} {label}", "shard": shard.index, "key": key,
                                "images": len(shard.records), "cached": cache.contains("scores", key)})
        return out

    def _condition_ok(self, cond: ConditionSpec) -> bool:
        if cond.pet != ORIGINAL and ("pet", cond.pet) not in self.transform_keys:
            return False
        return cond.attacker == NO_ATTACK or ("attacker", cond.attacker) in self.transform_keys


def summarise(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage: tasks, cached, to run, and images to compute."""
    total, cached, images = Counter(), Counter(), Counter()
    for t in tasks:
        total[t["stage"]] += 1
        if t["cached"]:
            cached[t["stage"]] += 1
        else:
            images[t["stage"]] += t.get("images", 0)
    return [{"stage": s, "tasks": total[s], "cached": cached[s], "to_run": total[s] - cached[s], "images_to_compute": images[s]}
            for s in ("fit", "protect", "recover", "score") if total[s]]
