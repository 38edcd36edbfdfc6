"""Gender privacy: how well each classifier still tells gender on the condition's images."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from sbpet_bench.api import Metric, MetricInput, MetricValue, Option

from . import core
from .common import mark_in_sample, tier_of

SIGNIFICANCE = 0.05


def privacy_convention(n_permutations: int) -> str:
    return ("max(AUC, 1-AUC): a classifier whose decisions are flipped still reveals gender, so 0.5 is perfect privacy. "
            "95% CI: percentile CI of the raw AUC over a class-stratified bootstrap, then folded (an interval across 0.5 "
            "becomes [0.5, farther end], so a random classifier's CI includes 0.5). The folded point estimate is biased "
            "upwards near 0.5 (a random classifier scores ~0.523 at 200+200 images, extra.chance_privacy_auc); "
            f"extra.p_value is a permutation test of AUC = 0.5 ({n_permutations} label permutations, two-sided) and "
            f"extra.distinguishable says p < {SIGNIFICANCE}.")


class GenderMetric(Metric):
    name = "gender"
    version = "2"
    description = "ROC AUC (male positive), privacy AUC = max(AUC, 1-AUC) with a permutation test against chance, accuracy at 0.5 and mean |2P(male)-1|, per classifier."
    options = {
        "roc_points": Option(200, "most ROC curve points kept for the report"),
        "permutations": Option(1000, "label permutations of the test of AUC = 0.5 (0 disables it)"),
    }

    def compute(self, data: MetricInput) -> list[MetricValue]:
        known = np.isin(data.genders, (0, 1))  # unlabelled faces cannot score gender
        y = np.asarray(data.genders)[known].astype(int)
        out: list[MetricValue] = []
        if len(np.unique(y)) < 2:
            return out
        n_perm = int(self.opts["permutations"])
        n = len(y)
        n_male = int(y.sum())
        chance = core.chance_privacy_auc(n_male, n - n_male)
        for clf, p_all in sorted(data.p_male.items()):
            p = np.asarray(p_all, float)[known]
            rng = core.rng_for(data.seed, "gender", data.pet, data.attacker, clf)
            auc = float(roc_auc_score(y, p))
            boot_auc = core.bootstrap_auc(p, y, data.bootstrap, rng) if data.bootstrap else np.zeros(0)
            idx = core.resample_indices(rng, len(y), data.bootstrap) if data.bootstrap else None
            fpr, tpr, _ = roc_curve(y, p)
            tier = tier_of(data, clf)
            common = dict(evaluator=clf, n=n)
            raw_ci = core.percentile_ci(boot_auc)
            folded_ci = core.fold_interval(*raw_ci)
            privacy_extra: dict = {"tier": tier, "raw_auc": auc, "raw_ci": list(raw_ci), "chance_privacy_auc": chance}
            if n_perm > 0:
                perm_rng = core.rng_for(data.seed, "gender-permutation", data.pet, data.attacker, clf)
                p_value = float(core.privacy_p_values(p, y, n_perm, perm_rng)[0][0])
                privacy_extra.update(p_value=p_value, distinguishable=bool(p_value < SIGNIFICANCE), permutations=n_perm)
            else:
                privacy_extra.update(p_value=None, distinguishable=None, permutations=0)
            out += [
                MetricValue("auc", auc, higher_is_better=None, protocol="male-positive", ci_low=raw_ci[0], ci_high=raw_ci[1],
                            convention="ROC AUC of P(male) with male as the positive class (sklearn roc_auc_score); 95% CI from a class-stratified bootstrap of images.",
                            extra={"roc": core.downsample_curve(fpr, tpr, self.opts["roc_points"]),
                                   "n_male": n_male, "n_female": int(n - n_male), "tier": tier}, **common),
                MetricValue("privacy_auc", float(core.fold(auc)), higher_is_better=False, ci_low=folded_ci[0], ci_high=folded_ci[1],
                            convention=privacy_convention(n_perm), extra=privacy_extra, **common),
                self._mean_metric("accuracy", core.accuracy_at_half(p, y)[0],
                                  core.accuracy_at_half(p[idx], y[idx]) if idx is not None else None, None,
                                  "Share of images whose P(male) >= 0.5 matches the label; 0.5 is chance.", common, tier),
                self._mean_metric("confidence", core.confidence(p)[0], core.confidence(p[idx]) if idx is not None else None, False,
                                  "Mean |2 P(male) - 1|: 0 when the classifier cannot tell, 1 when it is certain (whether right or wrong).", common, tier),
            ]
        return mark_in_sample(out, data)

    @staticmethod
    def _mean_metric(metric: str, value: float, boot: np.ndarray | None, hib: bool | None, convention: str, common: dict, tier: str) -> MetricValue:
        low, high = core.percentile_ci(boot) if boot is not None else (None, None)
        return MetricValue(metric, float(value), higher_is_better=hib, ci_low=low, ci_high=high,
                           convention=convention + " 95% CI from a bootstrap of images.", extra={"tier": tier}, **common)
