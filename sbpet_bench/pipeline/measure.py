"""Measure: turn each condition's gathered scores into metric values (cached per input digest).

Conditions gather scores shard by shard; here they become one MetricInput per condition, with the
originals' scores for the same rows, the recovery tier (the same images after each attack), the
informed tier's probes, and which evaluators each PET uses internally (in-sample).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..api import NO_ATTACK, ORIGINAL, MetricInput, MetricValue, condition_label
from ..cache import stable_hash
from .checks import parse_spec
from .informed import InformedTier
from .stages import ConditionShard


@dataclass
class Condition:
    pet: str
    attacker: str
    failed: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    parts: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))  # "kind:name" -> shard arrays
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)  # evaluator label -> its first error

    @property
    def key(self) -> str:
        return condition_label(self.pet, self.attacker)

    def add(self, part: ConditionShard) -> None:
        self.ids += part.ids
        for label, arr in part.scores.items():
            self.parts[label].append(arr)
        for err in part.evaluator_errors:
            self.dropped.setdefault(err["label"], err)

    def scores(self, kind: str, drop: set[str] = frozenset()) -> dict[str, np.ndarray]:
        """Complete scores of one kind: an evaluator that failed on any shard is left out (its columns only)."""
        prefix = kind + ":"
        n = len(self.ids)
        out = {}
        for label, arrays in self.parts.items():
            if not label.startswith(prefix) or label in self.dropped or label in drop:
                continue
            arr = np.concatenate(arrays)
            if len(arr) == n:
                out[label[len(prefix):]] = arr
        return out


def metric_inputs(conditions: dict[str, Condition], eval_records, informed: InformedTier, in_sample: dict[str, list[str]],
                  seed: int, bootstrap: int) -> dict[str, MetricInput]:
    by_id = {r.id: r for r in eval_records}
    original = conditions[condition_label(ORIGINAL, NO_ATTACK)]
    broken = set(original.dropped)  # an evaluator that failed on the originals has nothing to compare against
    orig_index = {i: k for k, i in enumerate(original.ids)}
    orig = {kind: original.scores(kind, broken) for kind in ("classifier", "verifier", "featurizer")}
    tiers = informed.tiers()
    out = {}
    for key, cond in conditions.items():
        if cond.failed or not cond.ids:
            continue
        rows = np.array([orig_index[i] for i in cond.ids])
        p_male = cond.scores("classifier", broken)
        embeddings = cond.scores("verifier", broken)
        for label, probe in informed.probes.get(key, {}).items():
            if probe.verifier.split(":", 1)[1] in embeddings:
                p_male[label] = probe.predict(embeddings[probe.verifier.split(":", 1)[1]])
        recovered: dict[str, dict[str, np.ndarray]] = {}
        if cond.attacker == NO_ATTACK:
            for other in conditions.values():
                if other.pet == cond.pet and other.attacker != NO_ATTACK and not other.failed and other.ids == cond.ids:
                    recovered[other.attacker] = {k: v for k, v in other.scores("classifier", broken).items()
                                                 if not k.startswith(("informed:", "mixed:"))}
        before = conditions.get(condition_label(cond.pet, NO_ATTACK))
        orig_rec = conditions.get(condition_label(ORIGINAL, cond.attacker))
        off_shelf = lambda d: {k: v for k, v in d.items() if not k.startswith(("informed:", "mixed:"))}  # noqa: E731
        out[key] = MetricInput(
            pet=cond.pet, attacker=cond.attacker,
            genders=np.array([by_id[i].gender for i in cond.ids]),
            identities=np.array([by_id[i].identity for i in cond.ids]), ids=np.array(cond.ids),
            p_male=p_male, p_male_original={k: v[rows] for k, v in off_shelf(orig["classifier"]).items()},
            embeddings=embeddings, embeddings_original={k: v[rows] for k, v in orig["verifier"].items()},
            features=cond.scores("featurizer", broken), features_original={k: v[rows] for k, v in orig["featurizer"].items()},
            p_male_before_recovery=off_shelf(before.scores("classifier", broken)) if cond.attacker != NO_ATTACK and before and not before.failed else {},
            p_male_original_recovered=off_shelf(orig_rec.scores("classifier", broken)) if cond.attacker != NO_ATTACK and orig_rec and not orig_rec.failed else {},
            seed=seed, bootstrap=bootstrap,
            classifier_tiers={k: t for k, t in tiers.items() if k in p_male},
            p_male_recovered=recovered, in_sample={k: v for k, v in in_sample.items()})
    return out


def compute_metrics(data: MetricInput, metric_plugins, cache, warn, error) -> list[dict[str, Any]]:
    digest = digest_input(data)
    values: list[dict[str, Any]] = []
    for name, plugin, mkey in metric_plugins:
        cache_key = stable_hash("metric", mkey, digest)
        cached = cache.get_json("metrics", cache_key)
        if cached is not None:
            values += cached
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = [plain(asdict(v) if isinstance(v, MetricValue) else v) for v in plugin.compute(data)]
        except Exception as exc:  # noqa: BLE001 - a failing metric loses its own values only
            error(name, exc)
            continue
        for w in caught:
            warn(f"{name}: {w.message}")
        cache.put_json("metrics", cache_key, got)
        values += got
    return values


def digest_input(data: MetricInput) -> str:
    """A hash of everything a metric sees, so that unchanged conditions reuse their metrics."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                h.update(str(key).encode())
                feed(value[key])
        elif isinstance(value, np.ndarray):
            h.update(str(value.dtype).encode() + str(value.shape).encode())
            h.update(np.ascontiguousarray(value).tobytes() if value.dtype != object else str(value.tolist()).encode())
        else:
            h.update(repr(value).encode())

    for name, value in sorted(vars(data).items()):
        h.update(name.encode())
        feed(value)
    return h.hexdigest()[:24]


def plain(value: Any) -> Any:
    """JSON-safe copy, as results.json will hold it (NaN null): see :func:`sbpet_bench.results.to_json_value`."""
    from ..results import to_json_value

    return to_json_value(value)


def metric_names(specs) -> list[tuple[str, dict]]:
    return [parse_spec(s) for s in specs]
