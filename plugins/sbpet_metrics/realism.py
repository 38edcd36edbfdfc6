"""Photo-realism (FID, KID, Fréchet proxy on featurizers) and the shift in identity space (on verifier embeddings)."""

from __future__ import annotations

import numpy as np

from sbpet_bench.api import Metric, MetricInput, MetricValue, Option

from . import core
from .common import mark_in_sample

FID_MIN_N = 2000
FID_WARNING = f"FID is biased upwards below ~{FID_MIN_N} images and comparable only between runs of equal N."
KID_SUBSETS = ("averaged over subsets of m = min(subset size, N/2) images, each subset a block of a random permutation "
               "(blocks of one permutation are disjoint), the same images of both sets; std over subsets in extra")


class RealismMetric(Metric):
    name = "realism"
    version = "2"
    description = ("FID on inception-fid features, KID and a Fréchet proxy on other featurizers; on face-verifier embeddings "
                   "identity_kid and identity_frechet (a shift in identity space, not realism); against the originals.")
    options = {
        "fid_featurizer": Option("inception-fid", "featurizer whose features give FID (InceptionV3 pool3)"),
        # Each subset costs three m x m kernel matrices: 20 keeps a condition to seconds at N = 1,000 with 1,024-D features.
        "kid_subsets": Option(20, "KID: number of subsets averaged"),
        "kid_subset_size": Option(1000, "KID: subset size (capped at N/2 so that subsets differ)"),
    }

    def compute(self, data: MetricInput) -> list[MetricValue]:
        if data.is_original:  # the originals against themselves: 0 by construction
            return []
        out: list[MetricValue] = []
        for name in sorted(data.features):
            out += self._featurizer(name, data.features[name], data.features_original[name], data)
        for name in sorted(data.embeddings):
            out += self._verifier(name, data.embeddings[name], data.embeddings_original[name], data)
        return mark_in_sample(out, data)

    def _kid(self, x: np.ndarray, y: np.ndarray, name: str, data: MetricInput, gamma: float | None) -> tuple[float, dict]:
        rng = core.rng_for(data.seed, "kid", data.pet, data.attacker, name)
        mean, std, m = core.kid(x, y, rng, self.opts["kid_subsets"], self.opts["kid_subset_size"], gamma=gamma)
        return mean, {"std": std, "subset_size": m, "subsets": self.opts["kid_subsets"]}

    def _featurizer(self, name: str, x: np.ndarray, y: np.ndarray, data: MetricInput) -> list[MetricValue]:
        n = len(x)
        warning = FID_WARNING if n < FID_MIN_N else ""
        extra = {"n": n, "source": "featurizer", **({"warning": warning} if warning else {})}
        frechet = core.frechet_distance(x, y) if n >= 2 else float("nan")
        if name == self.opts["fid_featurizer"]:
            out = [MetricValue("fid", frechet, evaluator=name, higher_is_better=False, n=n, extra=extra,
                               convention=f"Fréchet distance between Gaussians fitted to InceptionV3 pool3 features of this condition and of the originals (pytorch-fid formula). {FID_WARNING}")]
        else:
            out = [MetricValue("frechet_proxy", frechet, evaluator=name, higher_is_better=False, n=n, extra=extra,
                               convention=f"Fréchet distance (the FID formula) on featurizer {name!r} features against the originals: a weight-free proxy, not FID and not comparable to FID values. Biased at small N; compare only at equal N.")]
        mean, kid_extra = self._kid(x, y, name, data, gamma=None)
        out.append(MetricValue("kid", mean, evaluator=name, higher_is_better=False, n=n, extra={**kid_extra, "source": "featurizer"},
                               convention="Kernel Inception Distance: unbiased MMD^2 with the polynomial kernel (a.b/d + 1)^3 between this condition's "
                                          "features and the originals', leaving out the terms k(x_i, y_i) of an image and its own original; "
                                          f"{KID_SUBSETS}. Unbiased, so usable at small N."))
        return out

    def _verifier(self, name: str, x: np.ndarray, y: np.ndarray, data: MetricInput) -> list[MetricValue]:
        n = len(x)
        x, y = core.normalise_rows(x), core.normalise_rows(y)
        frechet = core.frechet_distance(x, y) if n >= 2 else float("nan")
        meaning = ("It measures how far the protected faces have moved as a population in the identity space of face verifier "
                   f"{name!r}, not photo-realism: a PET can look like a photograph and still score high here, and the reverse.")
        mean, kid_extra = self._kid(x, y, name, data, gamma=1.0)
        extra = {"n": n, "source": "verifier"}
        return [
            MetricValue("identity_frechet", frechet, evaluator=name, higher_is_better=False, n=n, extra=extra,
                        convention=f"Fréchet distance (the FID formula) between Gaussians fitted to the unit-norm embeddings of this condition and of the originals. {meaning} Biased at small N; compare only at equal N."),
            MetricValue("identity_kid", mean, evaluator=name, higher_is_better=False, n=n, extra={**kid_extra, **extra},
                        convention=f"Unbiased MMD^2 with the kernel (a.b + 1)^3 on unit-norm embeddings (KID's kernel without the 1/d, which the unit norm already provides), "
                                   f"leaving out the terms k(x_i, y_i) of an image and its own original; {KID_SUBSETS}. {meaning}"),
        ]
