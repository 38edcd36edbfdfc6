"""The leaderboard: one row per condition (PET, attacker), one column per metric@evaluator(+protocol)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Columns are grouped by metric in this order; unknown metrics (third-party plugins) follow alphabetically.
METRIC_ORDER = ["privacy_auc", "auc", "accuracy", "confidence", "eer", "fnmr_fmr1e-1", "fnmr_fmr1e-2", "fnmr_fmr1e-3",
                "similarity", "pic", "fid", "kid", "frechet_proxy"]


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


@dataclass(frozen=True)
class Column:
    metric: str
    evaluator: str
    protocol: str
    higher_is_better: bool | None
    convention: str = ""

    @property
    def key(self) -> str:
        """Machine-readable name, also the CSV header: ``metric@evaluator[protocol]``."""
        return f"{self.metric}@{self.evaluator}" + (f"[{self.protocol}]" if self.protocol else "")

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓"}.get(self.higher_is_better, "")  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        return f"{self.key} {self.arrow}".strip()


@dataclass
class Cell:
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    best: bool = False

    def text(self) -> str:
        """``value ± half-width of the CI`` (the exact interval is in CSV/JSON and the HTML tooltip)."""
        if self.value is None:
            return ""
        s = fmt(self.value)
        if is_number(self.ci_low) and is_number(self.ci_high):
            s += f" ± {fmt((self.ci_high - self.ci_low) / 2)}"
        return s


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
        return self.pet == "original"


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[Row]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "sbpet-leaderboard/1",
            "columns": [{"key": c.key, "metric": c.metric, "evaluator": c.evaluator, "protocol": c.protocol,
                         "higher_is_better": c.higher_is_better, "convention": c.convention} for c in self.columns],
            "rows": [{"pet": r.pet, "attacker": r.attacker, "run": r.run, "status": r.status, "n_images": r.n_images,
                      "cells": {k: {"value": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high, "n": c.n, "best": c.best}
                                for k, c in r.cells.items()}} for r in self.rows],
        }


def _metric_rank(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric), "") if metric in METRIC_ORDER else (len(METRIC_ORDER), metric)


def build_leaderboard(results: dict[str, Any]) -> Leaderboard:
    """Rows in the results' order (originals first); best value per column marked among non-reference rows."""
    columns: dict[tuple[str, str, str], Column] = {}
    rows: list[Row] = []
    conditions = sorted(results.get("conditions", []), key=lambda c: c.get("pet") != "original")  # stable
    for cond in conditions:
        row = Row(str(cond.get("pet", "")), str(cond.get("attacker", "none")), str(cond.get("status", "")), cond.get("n_images"), str(cond.get("run", "")))
        for m in cond.get("metrics", []):
            ident = (str(m.get("metric", "")), str(m.get("evaluator", "")), str(m.get("protocol", "")))
            col = columns.setdefault(ident, Column(*ident, m.get("higher_is_better"), str(m.get("convention", ""))))
            value = m.get("value")
            row.cells[col.key] = Cell(float(value) if value is not None else None, m.get("ci_low"), m.get("ci_high"), m.get("n"))
        rows.append(row)
    ordered = sorted(columns.values(), key=lambda c: (_metric_rank(c.metric), c.evaluator, c.protocol))
    for col in ordered:
        if col.higher_is_better is None:
            continue
        candidates = [r.cells[col.key] for r in rows if not r.is_reference and r.status == "ok"
                      and col.key in r.cells and is_number(r.cells[col.key].value)]
        if len(candidates) < 2:  # a lone value is not "best" of anything
            continue
        best = (max if col.higher_is_better else min)(c.value for c in candidates)  # type: ignore[type-var]
        for c in candidates:
            c.best = c.value == best
    return Leaderboard(ordered, rows)
