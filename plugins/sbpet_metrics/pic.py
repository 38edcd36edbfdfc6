"""PIC: gender confidence left minus identity similarity kept, per image (lower is better)."""

from __future__ import annotations

import numpy as np

from sbpet_bench.api import Metric, MetricInput, MetricValue

from . import core
from .common import mark_in_sample


class PICMetric(Metric):
    name = "pic"
    version = "2"
    description = "PIC = |2P(male) - 1| - SIM per image (SIM = cosine similarity to its own original), per classifier x verifier; also mean SIM per verifier."

    def compute(self, data: MetricInput) -> list[MetricValue]:
        out: list[MetricValue] = []
        n = len(data.genders)
        if n == 0:
            return out
        rng = core.rng_for(data.seed, "pic", data.pet, data.attacker)
        idx = core.resample_indices(rng, n, data.bootstrap) if data.bootstrap else None
        for verifier in sorted(data.embeddings):
            sim = np.einsum("ij,ij->i", core.normalise_rows(data.embeddings[verifier]), core.normalise_rows(data.embeddings_original[verifier]))
            if not data.is_original:  # trivially 1 on the originals
                out.append(self._value("similarity", sim, idx, verifier, True, n,
                                       "Mean cosine similarity of each image's embedding to that of its own original."))
            for clf in sorted(data.p_male):
                pic = np.abs(2 * np.asarray(data.p_male[clf], float) - 1) - sim
                out.append(self._value("pic", pic, idx, f"{clf}+{verifier}", False, n,
                                       "Mean over images of PIC = |2 P(male) - 1| - SIM, SIM = cosine similarity to the image's own original (range -1..2, lower = more private and more alike).",
                                       extra={"classifier": clf, "verifier": verifier, "quantiles": core.quantiles(pic),
                                              "histogram": {"edges": np.linspace(-1, 2, 31).round(3).tolist(),
                                                            "counts": np.histogram(pic, bins=30, range=(-1, 2))[0].tolist()}}))
        return mark_in_sample(out, data)

    @staticmethod
    def _value(metric: str, x: np.ndarray, idx: np.ndarray | None, evaluator: str, hib: bool, n: int, convention: str, extra: dict | None = None) -> MetricValue:
        low, high = core.percentile_ci(x[idx].mean(axis=1)) if idx is not None else (None, None)
        return MetricValue(metric, float(x.mean()), evaluator=evaluator, higher_is_better=hib, ci_low=low, ci_high=high, n=n,
                           convention=convention + " 95% CI from a bootstrap of images.", extra=extra or {})
