"""Comparisons at equal privacy: each PET against the trade-off curves of the others.

A single operating point of a baseline says little — blur with a larger sigma hides
more gender and loses more identity. When a run sweeps a PET's strength (inline
variants such as ``blur[sigma=1],blur[sigma=3]``), its unattacked variants form a
privacy–utility curve. A PET *dominates* a curve when, at the curve's EER and realism
interpolated to the PET's own privacy AUC, the PET has lower EER and better realism.
No extrapolation: a comparison is made only inside the curve's privacy-AUC range.

Privacy is the worst case by default (``worst_privacy_auc``: the largest privacy AUC over
every classifier and attacker tier); ``privacy_by`` (``sbpet report --privacy-by NAME``, or
the run's config) picks one classifier instead. Runs without the worst case use their first
classifier, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .leaderboard import PER_ROW_EVALUATOR, is_number
from .seeds import is_seed_variant

WORST = "worst_privacy_auc"

# Protected-vs-original is what a PET controls (the other-image protocol adds the data's own variation).
EER_PROTOCOLS = ("protected-vs-original", "protected-vs-other-image")
REALISM_METRICS = ("fid", "kid", "frechet_proxy")


def family(pet: str) -> str:
    """The plugin a condition comes from: ``blur[sigma=3]`` -> ``blur``."""
    return pet.split("[", 1)[0].strip()


@dataclass(frozen=True)
class Point:
    pet: str
    privacy_auc: float
    eer: float
    realism: float | None


@dataclass(frozen=True)
class Comparison:
    pet: str
    curve: str  # the family whose curve it is compared with
    privacy_auc: float
    eer: float
    curve_eer: float  # the curve's EER interpolated at ``privacy_auc``
    realism: float | None
    curve_realism: float | None

    @property
    def lower_eer(self) -> bool:
        return self.eer < self.curve_eer

    @property
    def better_realism(self) -> bool | None:
        if self.realism is None or self.curve_realism is None:
            return None
        return self.realism < self.curve_realism

    @property
    def dominates(self) -> bool:
        return self.lower_eer and self.better_realism is not False


@dataclass(frozen=True)
class Tradeoff:
    classifier: str  # "" for the worst case over classifiers
    verifier: str
    protocol: str
    realism_metric: str | None
    realism_evaluator: str | None
    points: tuple[Point, ...]
    comparisons: tuple[Comparison, ...]
    verifier_heldout: bool = False  # no PET of the run uses the verifier internally

    def curves(self) -> dict[str, list[Point]]:
        return curves(self.points)

    @property
    def privacy_name(self) -> str:
        return f"privacy_auc@{self.classifier}" if self.classifier else WORST


def curves(points: tuple[Point, ...]) -> dict[str, list[Point]]:
    """Families with two or more unattacked variants, each sorted by privacy AUC.

    Seed variants (``pridss[seed=1]``) are other draws of one setting, not other strengths: a line through
    them is no trade-off curve, so they are compared with the curves but never make one.
    """
    out: dict[str, list[Point]] = {}
    for p in points:
        if not is_seed_variant(p.pet):
            out.setdefault(family(p.pet), []).append(p)
    return {f: sorted(ps, key=lambda p: p.privacy_auc) for f, ps in out.items() if len(ps) >= 2}


Condition = tuple[str, str, str]  # (pet, attacker, run)


def condition_values(results: dict[str, Any], metrics: tuple[str, ...] | None = None
                     ) -> dict[tuple[str, str, str], dict[Condition, float]]:
    """(metric, evaluator, protocol) -> (pet, attacker, run) -> numeric value, for ``metrics`` (default: all).

    Worst-case metrics are reached by a different evaluator per condition: their evaluator is "" (and
    ``worst_eer``'s protocol too), so one key holds every condition's value.
    """
    values: dict[tuple[str, str, str], dict[Condition, float]] = {}
    for cond in results.get("conditions", []):
        key = (cond.get("pet", ""), cond.get("attacker", "none"), cond.get("run", ""))
        for m in cond.get("metrics", []):
            if (metrics is None or m.get("metric") in metrics) and is_number(m.get("value")):
                metric = m["metric"]
                evaluator = "" if metric in PER_ROW_EVALUATOR else m.get("evaluator", "")
                protocol = "" if metric == "worst_eer" else m.get("protocol", "")
                values.setdefault((metric, evaluator, protocol), {})[key] = m["value"]
    return values


def classifiers(results: dict[str, Any]) -> list[str]:
    """Classifiers with a privacy_auc in these results (the names ``--privacy-by`` accepts)."""
    return sorted({str(m.get("evaluator", "")) for c in results.get("conditions", []) for m in c.get("metrics", [])
                   if m.get("metric") == "privacy_auc"})


def check_privacy_by(results: dict[str, Any], privacy_by: str | None, where: str = "") -> None:
    """A clear error when ``privacy_by`` names no classifier of these results."""
    known = classifiers(results)
    if privacy_by is not None and privacy_by not in known:
        raise ValueError(f"--privacy-by {privacy_by!r}: no privacy_auc of that classifier{where}; "
                         f"choose one of {known} (or leave it out for the worst case)")


def privacy_sources(values: dict[tuple[str, str, str], dict], privacy_by: str | None = None) -> list[str]:
    """The privacy measures to plot: [privacy_by], else the worst case, else every classifier (older runs).
    Each is a classifier name, or "" for the worst case."""
    if privacy_by is not None:
        return [privacy_by] if ("privacy_auc", privacy_by, "") in values else []
    if (WORST, "", "") in values:
        return [""]
    return sorted(e for (m, e, _) in values if m == "privacy_auc")


def privacy_key(classifier: str) -> tuple[str, str, str]:
    return ("privacy_auc", classifier, "") if classifier else (WORST, "", "")


def _values(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(metric, evaluator, protocol) -> unattacked PET (``pet [run]`` in merged reports) -> finite value."""
    return {metric: {f"{pet} [{run}]" if run else pet: v for (pet, attacker, run), v in by_cond.items()
                     if attacker in ("", "none") and pet != "original" and np.isfinite(v)}
            for metric, by_cond in condition_values(results).items()}


def heldout_verifiers(results: dict[str, Any]) -> set[str]:
    """Verifiers that no PET of the run uses internally (``worst_eer``'s ``heldout_verifiers``; merged runs: all)."""
    found: set[str] = set()
    for cond in results.get("conditions", []):
        for m in cond.get("metrics", []):
            if m.get("metric") == "worst_eer":
                found.update((m.get("extra") or {}).get("heldout_verifiers") or [])
    return found


def verifier_order(names, held: set[str]) -> list[str]:
    """``names`` with the ``held`` (held-out) verifiers first: a PET's own recogniser judges its identity in-sample."""
    return sorted(names, key=lambda v: (v not in held, v))


def interpolate(curve: list[Point], x: float, attr: str) -> float | None:
    """The curve's ``attr`` at privacy AUC ``x`` (linear between neighbouring variants); None outside its range."""
    xs = np.array([p.privacy_auc for p in curve])
    ys = [getattr(p, attr) for p in curve]
    if any(y is None for y in ys) or not xs.min() <= x <= xs.max():
        return None
    return float(np.interp(x, xs, np.array(ys, dtype=float)))


def tradeoff(results: dict[str, Any], privacy_by: str | None = None) -> Tradeoff | None:
    """Points and equal-privacy comparisons for the worst case (or ``privacy_by``; older runs: the first
    classifier), the first held-out verifier (else the first verifier) and the first realism measure found."""
    values = _values(results)
    sources = privacy_sources(values, privacy_by)
    eers = {(e, p) for (m, e, p) in values if m == "eer"}
    protocol = next((p for p in EER_PROTOCOLS if any(q == p for _, q in eers)), None)
    if not sources or protocol is None:
        return None
    held = heldout_verifiers(results)
    clf, ver = sources[0], verifier_order({e for e, p in eers if p == protocol}, held)[0]
    realism = next(((m, e) for m in REALISM_METRICS for (mm, e, _) in sorted(values) if mm == m), (None, None))
    auc, eer = values[privacy_key(clf)], values[("eer", ver, protocol)]
    real = values.get((realism[0], realism[1], ""), {}) if realism[0] else {}
    points = tuple(Point(pet, auc[pet], eer[pet], real.get(pet)) for pet in auc if pet in eer)
    comparisons = []
    for name, curve in curves(points).items():
        for p in points:
            if family(p.pet) == name:
                continue
            curve_eer = interpolate(curve, p.privacy_auc, "eer")
            if curve_eer is not None:
                comparisons.append(Comparison(p.pet, name, p.privacy_auc, p.eer, curve_eer, p.realism,
                                              interpolate(curve, p.privacy_auc, "realism")))
    return Tradeoff(clf, ver, protocol, realism[0], realism[1], points, tuple(comparisons),
                    verifier_heldout=ver in held)


def describe(t: Tradeoff) -> str:
    """One sentence saying what the comparison table measures."""
    real = f", {t.realism_metric}@{t.realism_evaluator}" if t.realism_metric else ""
    return (f"Each PET against the other PETs' trade-off curves (their variants in this run), interpolated to the PET's own "
            f"privacy AUC ({t.privacy_name}); compared: eer@{t.verifier}[{t.protocol}]"
            f"{' (held out: no PET of the run uses it)' if t.verifier_heldout else ''}{real}. "
            f"Lower is better for both; 'dominates' = lower EER and better (or unmeasured) realism.")


def table(t: Tradeoff) -> tuple[list[str], list[list[str]]]:
    """Header and rows (plain text) of the comparison table, one row per (PET, curve)."""
    from .leaderboard import fmt

    real = t.realism_metric or "realism"
    header = ["PET", "privacy AUC", "EER", "curve", "curve EER there", real, f"curve {real} there", "dominates"]
    rows = [[c.pet, fmt(c.privacy_auc), fmt(c.eer), c.curve, fmt(c.curve_eer),
             fmt(c.realism) if c.realism is not None else "", fmt(c.curve_realism) if c.curve_realism is not None else "",
             "yes" if c.dominates else "no"] for c in t.comparisons]
    return header, rows
