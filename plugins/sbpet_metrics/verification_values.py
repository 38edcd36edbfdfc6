"""The values of the verification metric: EER and FNMR at FMR, FNMR at the originals' threshold, worst EER.

Every bootstrap here is a matrix of pair multiplicities (``(B, pairs)``, see :mod:`.pairs`) applied
to fixed scores, so all verifiers of a condition share their resamples and a maximum over verifiers is
taken within each resample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sbpet_bench.api import MetricValue

from . import core


def fmr_label(target: float) -> str:
    return f"fnmr_fmr{target:.0e}".replace("e-0", "e-")  # 0.01 -> fnmr_fmr1e-2


@dataclass
class PairSet:
    """The pairs of one reported protocol, with their bootstrap multiplicities and what to report about them."""

    protocol: str
    a: np.ndarray
    b: np.ndarray
    mated: np.ndarray
    weights: np.ndarray | None  # (B, pairs)
    description: str
    info: dict = field(default_factory=dict)  # pair hashes (and the packed pairs) for the eer value
    probe_gender: str | None = None

    def subset(self, keep: np.ndarray, protocol: str, probe_gender: str, description: str) -> "PairSet":
        weights = None if self.weights is None else self.weights[:, keep]
        info = {"pairs_sha256": self.info.get("pairs_sha256"), "n_mated": int(self.mated[keep].sum()), "n_nonmated": int((~self.mated[keep]).sum())}
        return PairSet(protocol, self.a[keep], self.b[keep], self.mated[keep], weights, description, info, probe_gender)

    @property
    def uses_base_mated(self) -> bool:
        """False for a same-gender variant, whose mated pairs (and so FNMR at a fixed threshold) are its base's."""
        return core.SAME_GENDER not in self.protocol

    @property
    def extra(self) -> dict:
        return {"probe_gender": self.probe_gender} if self.probe_gender else {}

    def split(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Mated scores, non-mated scores and their weights."""
        w = self.weights
        return (scores[self.mated], scores[~self.mated],
                None if w is None else w[:, self.mated], None if w is None else w[:, ~self.mated])


@dataclass
class Context:
    targets: list[float]
    curve_points: int
    ci_note: str  # how the 95% CI was resampled
    # (FMR target, what) that need more non-mated pairs; probe-gender subsets are left out (their values say so in extra)
    unresolved: dict[float, list[str]] = field(default_factory=dict)

    def note_unresolved(self, target: float, pairs: "PairSet", what: str) -> None:
        if pairs.probe_gender is None:
            self.unresolved.setdefault(target, []).append(what)


def rate_values(scores: np.ndarray, pairs: PairSet, verifier: str, ctx: Context) -> tuple[list[MetricValue], float, np.ndarray | None]:
    """EER and FNMR at each FMR target; also returns the EER and its bootstrap for the worst case."""
    gen, imp, wg, wi = pairs.split(scores)
    n = len(gen) + len(imp)
    base = f"Cosine similarity of unit-norm embeddings; {pairs.description}; accept when similarity >= threshold."
    eer, low, high, thr = (v[0] for v in core.eer_rows(gen, imp))
    thresholds, fmr, fnmr, valid = (v[0] for v in core.error_rate_curve(gen, imp))
    det = core.downsample_curve(fmr[valid], fnmr[valid], ctx.curve_points, log_ends=True)
    boot = core.weighted_eer(gen, imp, wg, wi) if wg is not None else None
    ci = core.percentile_ci(boot) if boot is not None else (None, None)
    out = [MetricValue("eer", float(eer), evaluator=verifier, higher_is_better=False, ci_low=ci[0], ci_high=ci[1], n=n, protocol=pairs.protocol,
                       convention=base + f" EER = midpoint of [min, max](FMR, FNMR) at the threshold minimising |FMR - FNMR|; {ctx.ci_note}",
                       extra={"eer_interval": [float(low), float(high)], "threshold": float(thr), "det": {"fmr": det["x"], "fnmr": det["y"]},
                              "mated_mean": float(gen.mean()), "nonmated_mean": float(imp.mean()), **pairs.info, **pairs.extra})]
    resolvable = [t for t in ctx.targets if core.enough_nonmated(len(imp), t)]
    boot_thresholds = dict(zip(resolvable, core.weighted_thresholds_at_fmr(imp, wi, resolvable))) if wg is not None and resolvable else {}
    for target in ctx.targets:
        extra: dict = {"fmr_target": target, **pairs.extra}
        if not core.enough_nonmated(len(imp), target):
            ctx.note_unresolved(target, pairs, f"{verifier} [{pairs.protocol}] FNMR ({len(imp)} non-mated)")
            value, ci = float("nan"), (None, None)
            extra["warning"] = f"FNMR at FMR={target:g} needs at least {int(np.ceil(1 / target))} non-mated pairs, got {len(imp)}; reported as NaN"
        else:
            value_arr, thr_arr = core.fnmr_at_fmr_rows(gen, imp, target)
            value, extra["threshold"] = float(value_arr[0]), float(thr_arr[0])
            ci = core.percentile_ci(core.weighted_fnmr_at_threshold(gen, wg, boot_thresholds[target])) if wg is not None else (None, None)
        out.append(MetricValue(fmr_label(target), value, evaluator=verifier, higher_is_better=False, ci_low=ci[0], ci_high=ci[1], n=n, protocol=pairs.protocol,
                               convention=base + f" FNMR at the lowest threshold whose FMR <= {target:g} (at most floor({target:g} x non-mated) impostors accepted); "
                                                 f"NaN when fewer than {int(np.ceil(1 / target))} non-mated pairs; {ctx.ci_note}",
                               extra=extra))
    return out, float(eer), boot


@dataclass
class CleanThresholds:
    """Thresholds set on the originals' own pairs at each FMR target, with their bootstrap (None: too few pairs)."""

    pairs_sha256: str | None
    n_nonmated: int
    point: dict[float, float | None]
    boot: dict[float, np.ndarray | None]


def calibrate(calibration_scores: np.ndarray, calibration: PairSet, targets: list[float]) -> CleanThresholds:
    """The threshold giving FMR ``target`` on original-against-original pairs (accept when similarity > it)."""
    _, clean_imp, _, clean_wi = calibration.split(calibration_scores)
    resolvable = [t for t in targets if core.enough_nonmated(len(clean_imp), t)]
    point = dict(zip(resolvable, core.weighted_thresholds_at_fmr(clean_imp, np.ones((1, len(clean_imp))), resolvable)[:, 0])) if resolvable else {}
    boot = dict(zip(resolvable, core.weighted_thresholds_at_fmr(clean_imp, clean_wi, resolvable))) if resolvable and clean_wi is not None else {}
    return CleanThresholds(calibration.info.get("pairs_sha256"), len(clean_imp),
                           {t: (float(point[t]) if t in point else None) for t in targets}, {t: boot.get(t) for t in targets})


def clean_threshold_values(scores: np.ndarray, pairs: PairSet, clean: CleanThresholds, verifier: str, ctx: Context) -> list[MetricValue]:
    """FNMR of this condition at the threshold that gives FMR ``target`` on the originals' own pairs.

    A deployed system keeps its threshold: one set on clean faces (originals against other originals of
    the protected-vs-other-image pairs) and applied unchanged shows what protection costs in false
    non-matches at the operating point, unlike the EER, whose threshold moves with the condition. Under
    the identity bootstrap the threshold is re-set on the same resampled identities, so its own
    uncertainty is in the interval.
    """
    gen, imp, wg, _ = pairs.split(scores)
    out = []
    for target, threshold in clean.point.items():
        extra: dict = {"fmr": target, "threshold": threshold, "calibration_pairs_sha256": clean.pairs_sha256, **pairs.extra}
        ci: tuple[float | None, float | None] = (None, None)
        if threshold is None:
            ctx.note_unresolved(target, pairs, f"{verifier} [{pairs.protocol}] clean threshold ({clean.n_nonmated} non-mated originals)")
            value = float("nan")
            extra["warning"] = f"the threshold at FMR={target:g} needs at least {int(np.ceil(1 / target))} non-mated pairs of originals, got {clean.n_nonmated}; reported as NaN"
        else:
            value = float(np.mean(gen <= threshold))
            extra["condition_fmr"] = float(np.mean(imp > threshold))
            if wg is not None and clean.boot[target] is not None:
                ci = core.percentile_ci(core.weighted_fnmr_at_threshold(gen, wg, clean.boot[target]))
        out.append(MetricValue("fnmr_at_clean_threshold", value, evaluator=verifier, higher_is_better=False, ci_low=ci[0], ci_high=ci[1],
                               n=len(gen), protocol=pairs.protocol, extra=extra,
                               convention=(f"Share of mated pairs ({pairs.description}) rejected at a fixed threshold: the one giving FMR {target:g} "
                                           "on the originals' own protected-vs-other-image pairs (original against original, accept when similarity > threshold), "
                                           f"applied unchanged to this condition; extra.condition_fmr is the FMR that threshold gives here. {ctx.ci_note} "
                                           "The threshold is re-set in each resample.")))
    return out


def worst_eer_value(eers: dict[str, tuple[float, np.ndarray | None, int]], protocol: str, in_sample: dict[str, list[str]],
                    ci_note: str) -> MetricValue | None:
    """The largest EER over verifiers on one protocol (shared resamples: max within each), and over the held-out ones."""
    if not eers:
        return None
    verifiers = sorted(eers)

    def worst(names: list[str]) -> tuple[str, float, tuple[float | None, float | None], int]:
        name = max(names, key=lambda v: (eers[v][0], v))
        boots = [eers[v][1] for v in names]
        ci = core.percentile_ci(np.max(np.stack(boots), axis=0)) if all(b is not None for b in boots) else (None, None)
        return name, eers[name][0], ci, eers[name][2]

    name, value, ci, n = worst(verifiers)
    held_out = [v for v in verifiers if v not in in_sample]
    inside = [v for v in verifiers if v in in_sample]
    extra: dict = {"verifier": name, "per_verifier": {v: eers[v][0] for v in verifiers}, "heldout_verifiers": held_out, "in_sample_verifiers": inside}
    if inside:  # only then does the held-out figure differ from this one
        if held_out:
            h_name, h_value, h_ci, h_n = worst(held_out)
            extra.update(heldout_eer={"value": h_value, "ci_low": h_ci[0], "ci_high": h_ci[1], "n": h_n, "verifier": h_name}, heldout_verifier=h_name)
        else:
            extra.update(heldout_eer=None, heldout_verifier=None)
    return MetricValue("worst_eer", value, evaluator=name, higher_is_better=False, ci_low=ci[0], ci_high=ci[1], n=n, protocol=protocol, extra=extra,
                       convention=(f"Largest EER over the verifiers ({protocol}); evaluator and extra.verifier name the one that reached it. "
                                   f"{ci_note} Every verifier is scored on the same pairs and resamples; the maximum is taken within each resample. "
                                   "extra.heldout_eer is the same over the verifiers no PET of the run uses internally (extra.heldout_verifiers)."))
