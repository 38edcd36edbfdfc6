"""The leaderboard: one row per condition (PET, attacker), one column per metric@evaluator(+protocol).

Runs measured with the attacker tiers carry worst-case figures (``worst_privacy_auc``,
``tier_privacy_auc``, ``worst_eer``) whose evaluator changes from row to row: they are
one column each, and every cell names who reached it (``Cell.by``). Those runs also get
a *headline*: the worst case first, then each tier and classifier, then identity with the
held-out verifiers' EER first (a PET that uses a verifier internally is scored in-sample
by it, marked †). Older runs have no headline and keep their columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..api import ORIGINAL, TIERS

# Columns are grouped by metric in this order; unknown metrics (third-party plugins) follow alphabetically.
METRIC_ORDER = ["worst_privacy_auc", "tier_privacy_auc", "privacy_auc", "auc", "accuracy", "confidence",
                "heldout_eer", "worst_eer", "eer", "fnmr_at_clean_threshold", "fnmr_fmr1e-1", "fnmr_fmr1e-2", "fnmr_fmr1e-3",
                "similarity", "pic", "identity_kid", "identity_frechet", "fid", "kid", "frechet_proxy"]
# Metrics reached by a different evaluator in each row: one column, the evaluator goes into the cell.
PER_ROW_EVALUATOR = {"worst_privacy_auc", "tier_privacy_auc", "worst_eer", "heldout_eer"}
MAIN_PROTOCOL = "protected-vs-original"  # what a PET controls; the originals row only has the other-image protocol
ORIGINALS_PROTOCOL = "protected-vs-other-image"
FEATURIZER_REALISM = ("fid", "kid", "frechet_proxy")
CHANCE_MARK, IN_SAMPLE_MARK = "≈", "†"
LEGEND = {
    CHANCE_MARK: "≈ not distinguishable from chance (permutation test of AUC = 0.5, p ≥ 0.05).",
    IN_SAMPLE_MARK: "† in-sample: the PET uses this evaluator internally, so its number flatters the PET; "
                    "read the held-out evaluators instead.",
}
HEADLINE_NOTE = ("Worst case first: the largest privacy AUC over every classifier and attacker tier, with its 95% CI and the "
                 "classifier that reached it (attack→classifier for the recovery tier); then each tier and each classifier. "
                 "Identity: the held-out verifiers' EER first, then each verifier's recalibrated EER beside its FNMR at the "
                 "originals' (clean) threshold.")
HELDOUT_CONVENTION = ("Largest EER among the verifiers this PET does not use internally (held out), protocol "
                      f"{MAIN_PROTOCOL} ({ORIGINALS_PROTOCOL} for the originals); the cell names the verifier; CI of that verifier's EER.")


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x: Any) -> str:
    """Three significant digits, no exponent for ordinary magnitudes."""
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if not is_number(x):
        return str(x)
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1e5:
        digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
        return f"{x:.{digits}f}"
    return f"{x:.2e}"


def fmr_tag(fmr: Any) -> str:
    """``0.01`` -> ``fmr1e-2``, as in the ``fnmr_fmr1e-2`` metric names."""
    if not is_number(fmr) or fmr <= 0:
        return f"fmr{fmr}"
    exponent = math.log10(fmr)
    return f"fmr1e{round(exponent)}" if math.isclose(exponent, round(exponent), abs_tol=1e-9) else f"fmr{fmr:g}"


@dataclass(frozen=True)
class Column:
    metric: str
    evaluator: str
    protocol: str
    higher_is_better: bool | None
    convention: str = ""
    variant: str = ""  # e.g. "fmr1e-2" for fnmr_at_clean_threshold, whose FMR is in the value's extra
    identity_space: bool = False  # a kid/frechet measured on face-verifier embeddings (older runs call it kid)

    @property
    def per_row_evaluator(self) -> bool:
        return self.metric in PER_ROW_EVALUATOR

    @property
    def key(self) -> str:
        """Machine-readable name, also the CSV header: ``metric@evaluator[protocol]``."""
        name = self.metric + (f"_{self.variant}" if self.variant else "")
        if not self.per_row_evaluator:
            name += f"@{self.evaluator}"
        return name + (f"[{self.protocol}]" if self.protocol else "")

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓"}.get(self.higher_is_better, "")  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        if self.metric == "worst_privacy_auc":
            name = "worst privacy AUC"
        elif self.metric == "tier_privacy_auc":
            name = f"privacy AUC, {self.protocol} tier"
        elif self.metric == "worst_eer":
            name = "worst EER"
        elif self.metric == "heldout_eer":
            name = "held-out EER"
        elif self.metric in ("identity_kid", "identity_frechet") or self.identity_space:
            name = f"{self.key} (identity-space shift)"
        else:
            name = self.key
        return f"{name} {self.arrow}".strip()

    def headline_text(self, cell: "Cell") -> str:
        """Worst cases: ``value [95% CI] who``; the other headline columns: the value and its marks (CI in the full table)."""
        return cell.text(interval=True, with_by=True) if self.per_row_evaluator else cell.text(ci=False)

    @property
    def short_label(self) -> str:
        """The headline's label: its per-verifier columns are all on the main protocol, so it is left out."""
        if self.protocol == MAIN_PROTOCOL and self.metric == "eer":
            return f"EER@{self.evaluator} {self.arrow}".strip()
        if self.protocol == MAIN_PROTOCOL and self.metric == "fnmr_at_clean_threshold":
            return f"FNMR at clean thr., FMR {self.variant[3:]}@{self.evaluator} {self.arrow}".strip()
        if self.metric == "privacy_auc":
            return f"privacy AUC@{self.evaluator} {self.arrow}".strip()
        if self.metric in ("identity_kid", "identity_frechet"):
            return f"identity shift ({self.metric.split('_', 1)[1].upper()})@{self.evaluator} {self.arrow}".strip()
        return self.label


@dataclass
class Cell:
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    best: bool = False
    by: str = ""  # who reached a worst-case value (classifier, tier path or verifier)
    in_sample: bool = False  # the row's PET uses this evaluator internally
    distinguishable: bool | None = None  # permutation test against chance; None when not tested

    @property
    def marks(self) -> tuple[str, str]:
        """(prefix, suffix) flags: ≈ not distinguishable from chance, † in-sample."""
        return (CHANCE_MARK if self.distinguishable is False else "", IN_SAMPLE_MARK if self.in_sample else "")

    def text(self, interval: bool = False, with_by: bool = False, ci: bool = True) -> str:
        """``value ± half-width of the CI``, or ``value [low, high]`` with ``interval``, plus the marks and who reached it;
        without ``ci`` the value and marks only."""
        if self.value is None:
            return ""
        pre, post = self.marks
        s = pre + fmt(self.value)
        if ci and is_number(self.ci_low) and is_number(self.ci_high):
            s += f" [{fmt(self.ci_low)}, {fmt(self.ci_high)}]" if interval else f" ± {fmt((self.ci_high - self.ci_low) / 2)}"
        s += post
        return f"{s} {self.by}" if with_by and self.by else s


@dataclass
class Row:
    pet: str
    attacker: str
    status: str
    n_images: int | None
    run: str = ""  # set when merged runs disagree on the same condition
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def label(self) -> str:
        base = self.pet if self.attacker in ("", "none") else f"{self.pet} → {self.attacker}"
        return f"{base} [{self.run}]" if self.run else base

    @property
    def is_reference(self) -> bool:
        return self.pet == ORIGINAL


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[Row]
    headline: list[str] = field(default_factory=list)  # column keys of the worst-case summary; empty for older runs

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    @property
    def headline_columns(self) -> list[Column]:
        return [self.column(k) for k in self.headline]

    @property
    def legend(self) -> list[str]:
        """One line per mark that occurs in the table."""
        used = {m for r in self.rows for c in r.cells.values() for m in c.marks if m}
        return [text for mark, text in LEGEND.items() if mark in used]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "sbpet-leaderboard/1",
            "headline": list(self.headline),
            "legend": self.legend,
            "columns": [{"key": c.key, "label": c.label, "metric": c.metric, "evaluator": c.evaluator, "protocol": c.protocol,
                         "variant": c.variant, "higher_is_better": c.higher_is_better, "convention": c.convention} for c in self.columns],
            "rows": [{"pet": r.pet, "attacker": r.attacker, "run": r.run, "status": r.status, "n_images": r.n_images,
                      "cells": {k: {"value": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high, "n": c.n, "best": c.best, "by": c.by,
                                    "in_sample": c.in_sample, "distinguishable": c.distinguishable}
                                for k, c in r.cells.items()}} for r in self.rows],
        }


def _tier_rank(tier: str) -> int:
    return TIERS.index(tier) if tier in TIERS else len(TIERS)


def _classifier_tier(evaluator: str, extra: dict[str, Any]) -> str:
    tier = extra.get("tier")
    if isinstance(tier, str) and tier:
        return tier
    prefix = evaluator.split(":", 1)[0] if ":" in evaluator else ""
    return prefix if prefix in TIERS else TIERS[0]


def _sort_key(col: Column, tiers: dict[str, str]) -> tuple:
    rank = (METRIC_ORDER.index(col.metric), "") if col.metric in METRIC_ORDER else (len(METRIC_ORDER), col.metric)
    sub = _tier_rank(col.protocol) if col.metric == "tier_privacy_auc" else _tier_rank(tiers.get(col.evaluator, "")) if col.metric == "privacy_auc" else 0
    return (rank, sub, col.evaluator, col.protocol, col.variant)


def _by(metric: dict[str, Any], extra: dict[str, Any]) -> str:
    if metric.get("metric") == "worst_eer":
        return str(extra.get("verifier") or metric.get("evaluator", ""))
    return str(metric.get("evaluator") or extra.get("classifier") or "")


def _evaluators_of(by: str) -> set[str]:
    """``pp-d→faceapi-gender`` was reached by faceapi-gender after the pp-d attack: both name an evaluator."""
    return {by, *(p.strip() for p in by.replace("->", "→").split("→"))} if by else set()


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def build_leaderboard(results: dict[str, Any]) -> Leaderboard:
    """Rows in the results' order (originals first); best value per column marked among non-reference rows."""
    columns: dict[tuple[str, str, str, str], Column] = {}
    tiers: dict[str, str] = {}  # classifier -> tier
    verifiers = set((results.get("config") or {}).get("verifiers") or [])
    rows: list[Row] = []
    conditions = sorted(results.get("conditions", []), key=lambda c: c.get("pet") != ORIGINAL)  # stable
    raw: list[dict[str, dict[str, Any]]] = []  # per row: column key -> the metric dict (for derived columns)
    for cond in conditions:
        row = Row(str(cond.get("pet", "")), str(cond.get("attacker", "none")), str(cond.get("status", "")), cond.get("n_images"), str(cond.get("run", "")))
        in_sample_evaluators: set[str] = set()
        by_key: dict[str, dict[str, Any]] = {}
        for m in cond.get("metrics", []):
            metric, extra = str(m.get("metric", "")), m.get("extra") or {}
            evaluator, protocol = str(m.get("evaluator", "")), str(m.get("protocol", ""))
            variant = fmr_tag(extra.get("fmr")) if metric == "fnmr_at_clean_threshold" else ""
            if metric == "privacy_auc":
                tiers.setdefault(evaluator, _classifier_tier(evaluator, extra))
            if metric == "worst_eer":  # its protocol, like its verifier, depends on the row (originals: other-image)
                protocol = ""
            ident = (metric, "" if metric in PER_ROW_EVALUATOR else evaluator, protocol, variant)
            col = columns.setdefault(ident, Column(ident[0], ident[1], protocol, m.get("higher_is_better"), str(m.get("convention", "")), variant,
                                                   identity_space=metric in ("kid", "frechet_proxy") and evaluator in verifiers))
            value = m.get("value")
            in_sample = row.pet in (extra.get("in_sample") or [])
            if in_sample:
                in_sample_evaluators.add(evaluator)
            row.cells[col.key] = Cell(float(value) if value is not None else None, m.get("ci_low"), m.get("ci_high"), m.get("n"),
                                      by=_by(m, extra) if metric in PER_ROW_EVALUATOR else "", in_sample=in_sample,
                                      distinguishable=_flag(extra.get("distinguishable")))
            by_key[col.key] = m
        for cell in row.cells.values():  # a worst case reached by an in-sample evaluator is in-sample too
            if cell.by and _evaluators_of(cell.by) & in_sample_evaluators:
                cell.in_sample = True
        rows.append(row)
        raw.append(by_key)
    _add_heldout_eer(columns, rows, raw)
    ordered = sorted(columns.values(), key=lambda c: _sort_key(c, tiers))
    _mark_best(ordered, rows)
    return Leaderboard(ordered, rows, _headline(ordered))


def _add_heldout_eer(columns: dict, rows: list[Row], raw: list[dict[str, dict[str, Any]]]) -> None:
    """``heldout_eer``: when some EER is in-sample, the headline identity figure leaves those verifiers out.

    The metrics may report it (``worst_eer`` extra ``heldout_eer``, a number or a dict with value/ci/verifier);
    otherwise it is the largest EER of this row's held-out verifiers on the main protocol.
    """
    eer_cols = [c for c in columns.values() if c.metric == "eer"]
    reported = any("heldout_eer" in (m.get("extra") or {}) for by_key in raw for k, m in by_key.items() if k == "worst_eer")
    if not reported and not any(r.cells[c.key].in_sample for r in rows for c in eer_cols if c.key in r.cells):
        return
    col = Column("heldout_eer", "", "", False, HELDOUT_CONVENTION)
    for row, by_key in zip(rows, raw):
        given = ((by_key.get("worst_eer") or {}).get("extra") or {}).get("heldout_eer")
        if isinstance(given, dict) and is_number(given.get("value")):
            row.cells[col.key] = Cell(float(given["value"]), given.get("ci_low"), given.get("ci_high"), given.get("n"), by=str(given.get("verifier", "")))
            continue
        if is_number(given):
            verifier = ((by_key.get("worst_eer") or {}).get("extra") or {}).get("heldout_verifier", "")
            row.cells[col.key] = Cell(float(given), by=str(verifier))
            continue
        protocol = ORIGINALS_PROTOCOL if row.is_reference else MAIN_PROTOCOL
        held = [(c.evaluator, row.cells[c.key]) for c in eer_cols if c.protocol == protocol and c.key in row.cells
                and not row.cells[c.key].in_sample and is_number(row.cells[c.key].value)]
        if held:
            verifier, worst = max(held, key=lambda vc: vc[1].value)  # type: ignore[arg-type, return-value]
            row.cells[col.key] = Cell(worst.value, worst.ci_low, worst.ci_high, worst.n, by=verifier)
    columns[(col.metric, "", "", "")] = col


def _mark_best(columns: list[Column], rows: list[Row]) -> None:
    for col in columns:
        if col.higher_is_better is None:
            continue
        # in-sample values (the PET scored by an evaluator it uses itself) never win a column
        candidates = [r.cells[col.key] for r in rows if not r.is_reference and r.status == "ok"
                      and col.key in r.cells and is_number(r.cells[col.key].value) and not r.cells[col.key].in_sample]
        if len(candidates) < 2:  # a lone value is not "best" of anything
            continue
        best = (max if col.higher_is_better else min)(c.value for c in candidates)  # type: ignore[type-var]
        for c in candidates:
            c.best = c.value == best


def _headline(columns: list[Column]) -> list[str]:
    """Worst case, tiers, classifiers; held-out and worst EER, then per verifier its EER beside FNMR at the clean
    threshold; identity shift and realism. Empty for runs without the worst-case metrics (older runs)."""
    if not any(c.metric in ("worst_privacy_auc", "tier_privacy_auc", "worst_eer") for c in columns):
        return []
    pick = [c for c in columns if c.metric in ("worst_privacy_auc", "tier_privacy_auc", "privacy_auc", "heldout_eer", "worst_eer")]
    for ver in sorted({c.evaluator for c in columns if c.metric == "eer" and c.protocol == MAIN_PROTOCOL}):
        pick += [c for c in columns if c.evaluator == ver and c.protocol == MAIN_PROTOCOL and c.metric in ("eer", "fnmr_at_clean_threshold")]
    pick += [c for c in columns if c.metric in ("identity_kid", "identity_frechet")]
    pick += [c for c in columns if c.metric in FEATURIZER_REALISM and not c.identity_space]
    return [c.key for c in pick]
