"""Identity verification on protected images, in ISO/IEC 19795-1 terms (FMR, FNMR, EER)."""

from __future__ import annotations

import warnings

import numpy as np

from sbpet_bench.api import Metric, MetricInput, MetricValue, Option, PluginError

from . import core

PROTOCOLS = {
    "protected-vs-original": "mated = a protected image against its own original; non-mated = a protected image against the original of another identity",
    "protected-vs-other-image": "mated = a protected image against a different original image of the same identity (identities with >= 2 images); non-mated = against the original of another identity",
}


def _fmr_label(target: float) -> str:
    return f"fnmr_fmr{target:.0e}".replace("e-0", "e-")  # 0.01 -> fnmr_fmr1e-2


class VerificationMetric(Metric):
    name = "verification"
    version = "1"
    description = "EER and FNMR at fixed FMR on seeded mated/non-mated pairs, per verifier and protocol."
    options = {
        "n_mated": Option(1000, "mated pairs per protocol (fewer when the data has fewer)"),
        "n_nonmated": Option(1000, "non-mated pairs per protocol"),
        "protocols": Option(",".join(PROTOCOLS), "comma-separated protocols: " + ", ".join(PROTOCOLS)),
        "fmr_targets": Option("1e-1,1e-2,1e-3", "comma-separated FMR operating points for FNMR"),
        "store_pairs": Option(True, "store the pairs (compressed) in the results, not only their hash"),
        "curve_points": Option(200, "most DET curve points kept for the report"),
    }

    def _protocols(self) -> list[str]:
        names = [p.strip() for p in str(self.opts["protocols"]).split(",") if p.strip()]
        unknown = sorted(set(names) - set(PROTOCOLS))
        if unknown:
            raise PluginError(f"verification.protocols: unknown protocol(s) {unknown}; choose from {sorted(PROTOCOLS)}")
        return names

    def _targets(self) -> list[float]:
        try:
            return [float(t) for t in str(self.opts["fmr_targets"]).split(",") if t.strip()]
        except ValueError as exc:
            raise PluginError(f"verification.fmr_targets must be comma-separated numbers such as 1e-2,1e-3: {exc}") from exc

    def compute(self, data: MetricInput) -> list[MetricValue]:
        protocols = self._protocols()
        if data.is_original:  # an image against itself is trivial: keep only the verifier's baseline
            protocols = [p for p in protocols if p != "protected-vs-original"]
        identities, ids = np.asarray(data.identities), np.asarray(data.ids)
        out: list[MetricValue] = []
        for protocol in protocols:
            rng = core.rng_for(data.seed, "verification-pairs", protocol)  # same pairs in every condition
            a, b, mated = core.sample_pairs(identities, protocol, self.opts["n_mated"], self.opts["n_nonmated"], rng)
            if mated.sum() == 0 or (~mated).sum() == 0:
                warnings.warn(f"verification: protocol {protocol} has no mated or no non-mated pairs in {data.pet}/{data.attacker}; skipped", RuntimeWarning, stacklevel=2)
                continue
            pairs = {"pairs_sha256": core.pairs_digest(ids, a, b, mated, protocol), "n_mated": int(mated.sum()), "n_nonmated": int((~mated).sum())}
            if self.opts["store_pairs"]:
                pairs["pairs"] = {"encoding": "base64(zlib(int32 LE rows: probe index, reference index, mated)); indices into the condition's images",
                                  "ids_sha256": core.hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest(),
                                  "data": core.pack_pairs(a, b, mated)}
            for verifier in sorted(data.embeddings):
                scores = core.cosine_pairs(data.embeddings[verifier], data.embeddings_original[verifier], a, b)
                out += self._score(scores[mated], scores[~mated], verifier, protocol, data, pairs)
        return out

    def _score(self, gen: np.ndarray, imp: np.ndarray, verifier: str, protocol: str, data: MetricInput, pairs: dict) -> list[MetricValue]:
        rng = core.rng_for(data.seed, "verification-boot", data.pet, data.attacker, verifier, protocol)
        B = data.bootstrap
        gb = gen[core.resample_indices(rng, len(gen), B)] if B else None
        ib = imp[core.resample_indices(rng, len(imp), B)] if B else None
        n = len(gen) + len(imp)
        base = f"Cosine similarity of unit-norm embeddings; {PROTOCOLS[protocol]}; accept when similarity >= threshold."
        eer, low, high, thr = (v[0] for v in core.eer_rows(gen, imp))
        thresholds, fmr, fnmr, valid = (v[0] for v in core.error_rate_curve(gen, imp))
        det = core.downsample_curve(fmr[valid], fnmr[valid], self.opts["curve_points"], log_ends=True)
        ci = core.percentile_ci(core.eer_rows(gb, ib)[0]) if B else (None, None)
        out = [MetricValue("eer", float(eer), evaluator=verifier, higher_is_better=False, ci_low=ci[0], ci_high=ci[1], n=n, protocol=protocol,
                           convention=base + " EER = midpoint of [min, max](FMR, FNMR) at the threshold minimising |FMR - FNMR|; 95% CI from a bootstrap of pairs (mated and non-mated resampled separately).",
                           extra={"eer_interval": [float(low), float(high)], "threshold": float(thr), "det": {"fmr": det["x"], "fnmr": det["y"]},
                                  "mated_mean": float(gen.mean()), "nonmated_mean": float(imp.mean()), **pairs})]
        for target in self._targets():
            extra: dict = {"fmr_target": target}
            if not core.enough_nonmated(len(imp), target):
                msg = f"FNMR at FMR={target:g} needs at least {int(np.ceil(1 / target))} non-mated pairs, got {len(imp)} ({data.pet}/{data.attacker}, {verifier}, {protocol}); reported as NaN"
                warnings.warn("verification: " + msg, RuntimeWarning, stacklevel=2)
                value, ci, extra["warning"] = float("nan"), (None, None), msg
            else:
                value_arr, thr_arr = core.fnmr_at_fmr_rows(gen, imp, target)
                value, extra["threshold"] = float(value_arr[0]), float(thr_arr[0])
                ci = core.percentile_ci(core.fnmr_at_fmr_rows(gb, ib, target)[0]) if B else (None, None)
            out.append(MetricValue(_fmr_label(target), value, evaluator=verifier, higher_is_better=False, ci_low=ci[0], ci_high=ci[1], n=n, protocol=protocol,
                                   convention=base + f" FNMR at the lowest threshold whose FMR <= {target:g} (at most floor({target:g} x non-mated) impostors accepted); NaN when fewer than {int(np.ceil(1 / target))} non-mated pairs; 95% CI from a bootstrap of pairs.",
                                   extra=extra))
        return out
