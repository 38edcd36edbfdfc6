"""PrivacyProber's detection of privacy-enhanced images (Rot et al., IEEE TDSC 2023).

A PET pushes a face off the manifold of natural faces; a recovery attack pulls it back,
and the gender classifier's output moves a lot. On an untouched face the attack changes
little. The score |P(male | x) - P(male | R(x))| therefore separates protected images
(positives) from originals (negatives); the metric reports the ROC AUC of that score.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from sbpet_bench.api import Metric, MetricInput, MetricValue, Option


def detection_auc(p_before: np.ndarray, p_after: np.ndarray, p_orig: np.ndarray, p_orig_after: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC of |p - p_recovered| for protected images (label 1) against originals (label 0), and both score arrays."""
    # Rounding turns float noise (|0.6 - 0.4| != |0.3 - 0.5|) into the ties it stands for.
    pos = np.round(np.abs(np.asarray(p_before, float) - np.asarray(p_after, float)), 9)
    neg = np.round(np.abs(np.asarray(p_orig, float) - np.asarray(p_orig_after, float)), 9)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(labels, np.r_[pos, neg])), pos, neg


class RecoveryDetection(Metric):
    name = "recovery-detection"
    version = "1"
    description = ("PrivacyProber detection: ROC AUC of |P(male|x) - P(male|R(x))| separating a PET's images "
                   "from originals, for each attacker R and classifier")
    options = {"bootstrap_ci": Option(True, "95% bootstrap interval (resampling images, paired) when the run asks for resamples")}

    def compute(self, data: MetricInput) -> list[MetricValue]:
        if data.attacker == "none" or data.is_original:
            return []
        values = []
        for clf, p_after in sorted(data.p_male.items()):
            p_before = data.p_male_before_recovery.get(clf)
            p_orig = data.p_male_original.get(clf)
            p_orig_after = data.p_male_original_recovered.get(clf)
            if p_before is None or p_orig is None or p_orig_after is None or len(p_after) < 2:
                continue
            auc, pos, neg = detection_auc(p_before, p_after, p_orig, p_orig_after)
            low = high = None
            if self.opts["bootstrap_ci"] and data.bootstrap > 0:
                low, high = self._bootstrap(pos, neg, data.bootstrap, data.seed)
            values.append(MetricValue(
                metric="detection_auc", value=auc, evaluator=clf, higher_is_better=False, ci_low=low, ci_high=high,
                n=len(pos), protocol=f"{len(pos)} protected vs {len(neg)} original images, attacker {data.attacker}",
                convention="ROC AUC of |P(male|x) - P(male|R(x))|, protected images positive, originals negative; "
                           "0.5 = the PET is undetectable by this attack, 1.0 = always detected",
                extra={"mean_shift_protected": float(pos.mean()), "mean_shift_original": float(neg.mean())}))
        return values

    @staticmethod
    def _bootstrap(pos: np.ndarray, neg: np.ndarray, n: int, seed: int) -> tuple[float, float]:
        # Rows are aligned (protected image i comes from original i), so resample them together.
        rng = np.random.default_rng(seed)
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        aucs = []
        for _ in range(n):
            i = rng.integers(len(pos), size=len(pos))
            scores = np.r_[pos[i], neg[i]] if len(pos) == len(neg) else np.r_[pos[i], neg[rng.integers(len(neg), size=len(neg))]]
            aucs.append(roc_auc_score(labels, scores))
        low, high = np.percentile(aucs, [2.5, 97.5])
        return float(low), float(high)
