"""What every metric plugin marks the same way: attacker tiers and in-sample evaluators."""

from __future__ import annotations

from typing import Iterable

from sbpet_bench.api import NO_ATTACK, TIER_OFF_THE_SHELF, TIER_RECOVERY, MetricInput, MetricValue


def tier_of(data: MetricInput, classifier: str) -> str:
    """The attacker tier of a classifier key of ``data.p_male``.

    Listed keys keep their tier; an unlisted classifier is off-the-shelf, except in a condition with a
    recovery attack, where it scores recovered images and so is the recovery tier.
    """
    if classifier in data.classifier_tiers:
        return data.classifier_tiers[classifier]
    return TIER_OFF_THE_SHELF if data.attacker == NO_ATTACK else TIER_RECOVERY


def recovered_evaluator(attacker: str, classifier: str) -> str:
    """The evaluator name of the recovery tier: ``"pp-d→faceapi-gender"``."""
    return f"{attacker}→{classifier}"


def mark_in_sample(values: Iterable[MetricValue], data: MetricInput) -> list[MetricValue]:
    """Give every value that rests on an evaluator a PET of the run uses internally ``extra["in_sample"]``.

    The evaluator counts, and so do the classifier and verifier named in ``extra`` (a PIC value's pair,
    the classifier behind a recovery-tier or worst-case value). The list holds those PETs, sorted.
    """
    out = list(values)
    if not data.in_sample:
        return out
    for value in out:
        names = {value.evaluator, value.extra.get("classifier"), value.extra.get("verifier")}
        pets = sorted({pet for name in names if isinstance(name, str) for pet in data.in_sample.get(name, ())})
        if pets:
            value.extra["in_sample"] = pets
    return out
