"""Worst-case gender privacy: the best attacker over every classifier of every tier, per condition."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbpet_bench.api import NO_ATTACK, TIER_RECOVERY, TIERS, Metric, MetricInput, MetricValue, Option

from . import core
from .common import mark_in_sample, recovered_evaluator, tier_of
from .gender import SIGNIFICANCE


@dataclass
class Candidate:
    evaluator: str  # as reported: the classifier key, or "attacker→classifier" for the recovery tier
    tier: str
    classifier: str
    attacker: str  # the recovery attack applied before the classifier ("none" when none)
    scores: np.ndarray


def candidates(data: MetricInput, known: np.ndarray) -> list[Candidate]:
    """Every way this condition's MetricInput lets an adversary score gender."""
    found = [Candidate(clf, tier_of(data, clf), clf, data.attacker, np.asarray(p, float)[known])
             for clf, p in sorted(data.p_male.items())]
    if data.attacker == NO_ATTACK:  # attacked conditions already are the recovery tier of their PET
        for attacker, scores in sorted(data.p_male_recovered.items()):
            found += [Candidate(recovered_evaluator(attacker, clf), TIER_RECOVERY, clf, attacker, np.asarray(p, float)[known])
                      for clf, p in sorted(scores.items())]
    return found


def _convention(scope: str, n_perm: int) -> str:
    return (f"Maximum of the privacy AUC max(AUC, 1-AUC) over {scope}; evaluator = the classifier that reached it. "
            "95% CI: every classifier is scored on the same class-stratified bootstrap resamples of images and the "
            "maximum is taken within each resample. A maximum of noisy AUCs is biased upwards (more so with more "
            f"classifiers), so read extra.p_value: a max-statistic permutation test of 'no classifier beats chance' "
            f"({n_perm} label permutations shared by all classifiers), valid however many classifiers are tried.")


class WorstCaseMetric(Metric):
    name = "worst-case"
    version = "1"
    description = "Worst-case privacy AUC per condition over every classifier of every attacker tier (off-the-shelf, recovery, informed, mixed), and the worst per tier."
    options = {"permutations": Option(1000, "label permutations of the max-statistic test against chance (0 disables it)")}

    def compute(self, data: MetricInput) -> list[MetricValue]:
        known = np.isin(data.genders, (0, 1))
        y = np.asarray(data.genders)[known].astype(int)
        found = candidates(data, known)
        if len(np.unique(y)) < 2 or not found:
            return []
        scores = np.stack([c.scores for c in found])  # (K, N)
        raw = core.auc_rows(scores, np.broadcast_to(y, scores.shape))
        folded = core.fold(raw)
        boot = self._shared_bootstrap(scores, y, data)
        n_perm = int(self.opts["permutations"])
        null = None
        if n_perm > 0:  # |AUC - 0.5| of every classifier under the same permutations: (P, K)
            null = np.abs(core.permutation_null_auc(scores, y, n_perm, core.rng_for(data.seed, "worst-case-permutation", data.pet, data.attacker)) - 0.5)

        def summarise(metric: str, members: np.ndarray, protocol: str, scope: str) -> MetricValue:
            best = int(members[np.argmax(folded[members])])
            c = found[best]
            low, high = core.percentile_ci(boot[members].max(axis=0)) if boot is not None else (None, None)
            extra: dict = {"tier": c.tier, "classifier": c.classifier, "attacker": c.attacker, "raw_auc": float(raw[best]),
                           "n_classifiers": int(len(members)),
                           "per_classifier": {found[k].evaluator: float(folded[k]) for k in members},
                           "chance_privacy_auc": core.chance_privacy_auc(int(y.sum()), int(len(y) - y.sum()))}
            if null is not None:
                p_value = core.permutation_p_value(float(np.abs(raw[members] - 0.5).max()), null[:, members].max(axis=1))
                extra.update(p_value=p_value, distinguishable=bool(p_value < SIGNIFICANCE), permutations=n_perm)
            else:
                extra.update(p_value=None, distinguishable=None, permutations=0)
            return MetricValue(metric, float(folded[best]), evaluator=c.evaluator, higher_is_better=False, ci_low=low, ci_high=high,
                               n=int(len(y)), protocol=protocol, convention=_convention(scope, n_perm), extra=extra)

        everyone = np.arange(len(found))
        out = [summarise("worst_privacy_auc", everyone, "", "every classifier of every tier in this condition")]
        out[0].extra["tiers"] = sorted({c.tier for c in found}, key=lambda t: TIERS.index(t) if t in TIERS else len(TIERS))
        for tier in out[0].extra["tiers"]:
            members = np.array([k for k, c in enumerate(found) if c.tier == tier])
            out.append(summarise("tier_privacy_auc", members, tier, f"the classifiers of the {tier} tier"))
        return mark_in_sample(out, data)

    @staticmethod
    def _shared_bootstrap(scores: np.ndarray, y: np.ndarray, data: MetricInput) -> np.ndarray | None:
        """``(K, B)`` folded AUCs, every classifier on the same resampled images."""
        if not data.bootstrap:
            return None
        idx, row_labels = core.stratified_indices(y, data.bootstrap, core.rng_for(data.seed, "worst-case", data.pet, data.attacker))
        labels = np.broadcast_to(row_labels, idx.shape)
        return np.stack([core.fold(core.auc_rows(s[idx], labels)) for s in scores])
