"""Gender privacy: how well each classifier still tells gender on the condition's images."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from sbpet_bench.api import Metric, MetricInput, MetricValue, Option

from . import core


class GenderMetric(Metric):
    name = "gender"
    version = "1"
    description = "ROC AUC (male positive), privacy AUC = max(AUC, 1-AUC), accuracy at 0.5 and mean |2P(male)-1|, per classifier."
    options = {"roc_points": Option(200, "most ROC curve points kept for the report")}

    def compute(self, data: MetricInput) -> list[MetricValue]:
        known = np.isin(data.genders, (0, 1))  # unlabelled faces cannot score gender
        y = np.asarray(data.genders)[known].astype(int)
        out: list[MetricValue] = []
        if len(np.unique(y)) < 2:
            return out
        for clf, p_all in sorted(data.p_male.items()):
            p = np.asarray(p_all, float)[known]
            rng = core.rng_for(data.seed, "gender", data.pet, data.attacker, clf)
            auc = float(roc_auc_score(y, p))
            boot_auc = core.bootstrap_auc(p, y, data.bootstrap, rng) if data.bootstrap else np.zeros(0)
            idx = core.resample_indices(rng, len(y), data.bootstrap) if data.bootstrap else None
            fpr, tpr, _ = roc_curve(y, p)
            n = len(y)
            common = dict(evaluator=clf, n=n)
            out += [
                MetricValue("auc", auc, higher_is_better=None, protocol="male-positive",
                            ci_low=core.percentile_ci(boot_auc)[0], ci_high=core.percentile_ci(boot_auc)[1],
                            convention="ROC AUC of P(male) with male as the positive class (sklearn roc_auc_score); 95% CI from a class-stratified bootstrap of images.",
                            extra={"roc": core.downsample_curve(fpr, tpr, self.opts["roc_points"]),
                                   "n_male": int(y.sum()), "n_female": int(n - y.sum())}, **common),
                MetricValue("privacy_auc", max(auc, 1 - auc), higher_is_better=False,
                            ci_low=core.percentile_ci(np.maximum(boot_auc, 1 - boot_auc))[0],
                            ci_high=core.percentile_ci(np.maximum(boot_auc, 1 - boot_auc))[1],
                            convention="max(AUC, 1-AUC): a classifier whose decisions are flipped still reveals gender, so 0.5 is perfect privacy; CI from the bootstrapped AUCs.",
                            **common),
                self._mean_metric("accuracy", core.accuracy_at_half(p, y)[0],
                                  core.accuracy_at_half(p[idx], y[idx]) if idx is not None else None, None,
                                  "Share of images whose P(male) >= 0.5 matches the label; 0.5 is chance.", common),
                self._mean_metric("confidence", core.confidence(p)[0], core.confidence(p[idx]) if idx is not None else None, False,
                                  "Mean |2 P(male) - 1|: 0 when the classifier cannot tell, 1 when it is certain (whether right or wrong).", common),
            ]
        return out

    @staticmethod
    def _mean_metric(metric: str, value: float, boot: np.ndarray | None, hib: bool | None, convention: str, common: dict) -> MetricValue:
        low, high = core.percentile_ci(boot) if boot is not None else (None, None)
        return MetricValue(metric, float(value), higher_is_better=hib, ci_low=low, ci_high=high,
                           convention=convention + " 95% CI from a bootstrap of images.", **common)
