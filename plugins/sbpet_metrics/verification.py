"""Identity verification on protected images, in ISO/IEC 19795-1 terms (FMR, FNMR, EER)."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from sbpet_bench.api import FEMALE, MALE, Metric, MetricInput, MetricValue, Option, PluginError

from . import core
from .common import mark_in_sample
from .verification_values import Context, PairSet, calibrate, clean_threshold_values, rate_values, worst_eer_value

PROTOCOLS = {
    "protected-vs-original": "mated = a protected image against its own original; non-mated = a protected image against the original of another identity",
    "protected-vs-other-image": "mated = a protected image against a different original image of the same identity (identities with >= 2 images); non-mated = against the original of another identity",
}
SAME_GENDER_NOTE = "; non-mated pairs drawn among images of the same gender (same-gender impostors)"
PROBE_GENDERS = (("male", MALE), ("female", FEMALE))
MAIN_PROTOCOL, ORIGINALS_PROTOCOL = "protected-vs-original", "protected-vs-other-image"
CALIBRATION_PROTOCOL = "protected-vs-other-image"  # the originals' own pairs set the fixed threshold
CI_NOTES = {
    "identity": ("95% CI from a bootstrap of identities (each drawn identity brings all its mated pairs; a non-mated pair "
                 "comes once per copy of both of its identities), since pairs share images and people."),
    "pair": "95% CI from a bootstrap of pairs (mated and non-mated resampled separately; ignores that pairs share images).",
}


def _fmr_list(text: str, option: str) -> list[float]:
    try:
        values = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError as exc:
        raise PluginError(f"verification.{option} must be comma-separated numbers such as 1e-2,1e-3: {exc}") from exc
    bad = [v for v in values if not 0 < v < 1]
    if bad:
        raise PluginError(f"verification.{option}: FMR targets must lie between 0 and 1, got {bad}")
    return values


class VerificationMetric(Metric):
    name = "verification"
    version = "2"
    description = ("EER and FNMR at fixed FMR on seeded mated/non-mated pairs per verifier and protocol (also with same-gender "
                   "impostors and per probe gender), FNMR at the originals' threshold, and the worst EER over verifiers.")
    options = {
        "n_mated": Option(1000, "mated pairs per protocol (fewer when the data has fewer)"),
        "n_nonmated": Option(1000, "non-mated pairs per protocol"),
        "protocols": Option(",".join(PROTOCOLS), "comma-separated protocols: " + ", ".join(PROTOCOLS)),
        "fmr_targets": Option("1e-1,1e-2,1e-3", "comma-separated FMR operating points for FNMR"),
        "clean_threshold_fmr": Option("1e-2,1e-3", "comma-separated FMRs at which the originals' threshold is set for fnmr_at_clean_threshold"),
        "same_gender": Option(True, "also report each protocol with same-gender impostors (protocol suffix /same-gender)"),
        "per_probe_gender": Option(True, "also report each protocol per gender of the probe (protocol suffix @male / @female)"),
        "bootstrap_unit": Option("identity", "what the confidence intervals resample", choices=("identity", "pair")),
        "store_pairs": Option(True, "store the pairs (compressed) in the results, not only their hash"),
        "curve_points": Option(200, "most DET curve points kept for the report"),
    }

    def _protocols(self) -> list[str]:
        names = [p.strip() for p in str(self.opts["protocols"]).split(",") if p.strip()]
        unknown = sorted(set(names) - set(PROTOCOLS))
        if unknown:
            raise PluginError(f"verification.protocols: unknown protocol(s) {unknown}; choose from {sorted(PROTOCOLS)}")
        return names

    def compute(self, data: MetricInput) -> list[MetricValue]:
        protocols = self._protocols()
        if data.is_original:  # an image against itself is trivial: keep only the verifier's baseline
            protocols = [p for p in protocols if p != MAIN_PROTOCOL]
        ctx = Context(_fmr_list(self.opts["fmr_targets"], "fmr_targets"), self.opts["curve_points"], CI_NOTES[self.opts["bootstrap_unit"]])
        clean_targets = _fmr_list(self.opts["clean_threshold_fmr"], "clean_threshold_fmr")
        make = self._pair_maker(data)
        sets, base_sets = [], []
        for protocol in protocols:
            base = make(protocol, PROTOCOLS[protocol])
            if base is None:
                continue
            base_sets.append(base)
            sets.append(base)
            if self.opts["same_gender"]:
                sets += [s for s in [make(f"{protocol}/{core.SAME_GENDER}", PROTOCOLS[protocol] + SAME_GENDER_NOTE)] if s is not None]
            if self.opts["per_probe_gender"]:
                sets += self._per_probe_gender(base, data)
        calibration = next((s for s in base_sets if s.protocol == CALIBRATION_PROTOCOL), None) or make(CALIBRATION_PROTOCOL, PROTOCOLS[CALIBRATION_PROTOCOL])
        headline = ORIGINALS_PROTOCOL if data.is_original else MAIN_PROTOCOL
        out: list[MetricValue] = []
        eers: dict[str, tuple[float, np.ndarray | None, int]] = {}
        for verifier in sorted(data.embeddings):
            probe, reference = data.embeddings[verifier], data.embeddings_original[verifier]
            clean = None
            if calibration is not None:  # originals against originals: the same for every condition
                clean = calibrate(core.cosine_pairs(reference, reference, calibration.a, calibration.b), calibration, clean_targets)
            for pairs in sets:
                scores = core.cosine_pairs(probe, reference, pairs.a, pairs.b)
                values, eer, boot = rate_values(scores, pairs, verifier, ctx)
                out += values
                if pairs.protocol == headline:
                    eers[verifier] = (eer, boot, values[0].n)
                if clean is not None and pairs.uses_base_mated:
                    out += clean_threshold_values(scores, pairs, clean, verifier, ctx)
        worst = worst_eer_value(eers, headline, data.in_sample, ctx.ci_note)
        if worst is not None:
            out.append(worst)
        for target, what in ctx.unresolved.items():
            warnings.warn(f"verification: FMR={target:g} needs at least {int(np.ceil(1 / target))} non-mated pairs "
                          f"(option verification.n_nonmated); NaN in {data.pet}/{data.attacker} for " + ", ".join(what), RuntimeWarning, stacklevel=2)
        return mark_in_sample(out, data)

    def _pair_maker(self, data: MetricInput):
        """A function protocol -> PairSet, every set's bootstrap drawn from one resample of the condition's identities."""
        identities, ids, genders = np.asarray(data.identities), np.asarray(data.ids), np.asarray(data.genders)
        B, unit = data.bootstrap, self.opts["bootstrap_unit"]
        counts, codes = (core.identity_counts(identities, B, core.rng_for(data.seed, "verification-identities", data.pet, data.attacker))
                         if B and unit == "identity" else (None, None))

        def make(protocol: str, description: str) -> PairSet | None:
            # the same pairs in every condition; a variant keeps its base protocol's mated pairs
            rng = core.rng_for(data.seed, "verification-pairs", core.split_protocol(protocol)[0])
            a, b, mated = core.sample_pairs(identities, protocol, self.opts["n_mated"], self.opts["n_nonmated"], rng, genders,
                                            nonmated_rng=core.rng_for(data.seed, "verification-pairs", protocol))
            if mated.sum() == 0 or (~mated).sum() == 0:
                warnings.warn(f"verification: protocol {protocol} has no mated or no non-mated pairs in {data.pet}/{data.attacker}; skipped", RuntimeWarning, stacklevel=3)
                return None
            weights = None
            if counts is not None:
                weights = core.identity_pair_weights(counts, codes[a], codes[b], mated)
            elif B:
                weights = core.pair_bootstrap_weights(mated, B, core.rng_for(data.seed, "verification-boot", data.pet, data.attacker, protocol))
            info: dict = {"pairs_sha256": core.pairs_digest(ids, a, b, mated, protocol), "n_mated": int(mated.sum()), "n_nonmated": int((~mated).sum())}
            if self.opts["store_pairs"]:
                info["pairs"] = {"encoding": "base64(zlib(int32 LE rows: probe index, reference index, mated)); indices into the condition's images",
                                 "ids_sha256": hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest(),
                                 "data": core.pack_pairs(a, b, mated)}
            return PairSet(protocol, a, b, mated, weights, description, info)

        return make

    @staticmethod
    def _per_probe_gender(base: PairSet, data: MetricInput) -> list[PairSet]:
        genders = np.asarray(data.genders)
        out = []
        for label, code in PROBE_GENDERS:
            keep = genders[base.a] == code
            if keep[base.mated].any() and keep[~base.mated].any():
                out.append(base.subset(keep, f"{base.protocol}@{label}", label, base.description + f"; only pairs whose probe is {label}"))
        return out
