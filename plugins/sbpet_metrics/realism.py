"""Photo-realism: FID (InceptionV3 features only), KID, and Fréchet distance on verifier embeddings as a proxy."""

from __future__ import annotations

import numpy as np

from sbpet_bench.api import Metric, MetricInput, MetricValue, Option

from . import core

FID_MIN_N = 2000
FID_WARNING = f"FID is biased upwards below ~{FID_MIN_N} images and comparable only between runs of equal N."


class RealismMetric(Metric):
    name = "realism"
    version = "1"
    description = "FID on inception-fid features, KID on every featurizer and verifier embedding, Fréchet proxy on the others; against the originals."
    options = {
        "fid_featurizer": Option("inception-fid", "featurizer whose features give FID (InceptionV3 pool3)"),
        "kid_subsets": Option(100, "KID: number of random subsets averaged"),
        "kid_subset_size": Option(1000, "KID: subset size (capped at N)"),
    }

    def compute(self, data: MetricInput) -> list[MetricValue]:
        if data.is_original:  # the originals against themselves: 0 by construction
            return []
        sources = [(name, "featurizer", data.features[name], data.features_original[name]) for name in sorted(data.features)]
        sources += [(name, "verifier", data.embeddings[name], data.embeddings_original[name]) for name in sorted(data.embeddings)]
        out: list[MetricValue] = []
        for name, kind, x, y in sources:
            n = len(x)
            warning = FID_WARNING if n < FID_MIN_N else ""
            extra = {"n": n, "source": kind, **({"warning": warning} if warning else {})}
            frechet = core.frechet_distance(x, y) if n >= 2 else float("nan")
            if kind == "featurizer" and name == self.opts["fid_featurizer"]:
                out.append(MetricValue("fid", frechet, evaluator=name, higher_is_better=False, n=n, extra=extra,
                                       convention=f"Fréchet distance between Gaussians fitted to InceptionV3 pool3 features of this condition and of the originals (pytorch-fid formula). {FID_WARNING}"))
            else:
                out.append(MetricValue("frechet_proxy", frechet, evaluator=name, higher_is_better=False, n=n, extra=extra,
                                       convention=f"Fréchet distance (the FID formula) on {kind} {name!r} features against the originals: a weight-free proxy, not FID and not comparable to FID values. Biased at small N; compare only at equal N."))
            rng = core.rng_for(data.seed, "kid", data.pet, data.attacker, name)
            mean, std, m = core.kid(x, y, rng, self.opts["kid_subsets"], self.opts["kid_subset_size"])
            out.append(MetricValue("kid", mean, evaluator=name, higher_is_better=False, n=n,
                                   extra={"std": std, "subset_size": m, "subsets": self.opts["kid_subsets"], "source": kind},
                                   convention="Kernel Inception Distance: unbiased MMD^2 with the polynomial kernel (a.b/d + 1)^3, averaged over random subsets (std over subsets in extra); unbiased, so usable at small N."))
        return out
