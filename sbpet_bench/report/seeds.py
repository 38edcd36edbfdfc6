"""Spread over seeds: the variants of one PET that differ only in their ``seed`` option.

``--pets 'pridss,pridss[seed=1],pridss[seed=2]'`` measures one PET three times; the spread of
its headline figures over those seeds says how much of a difference between two PETs is
noise. A *seed group* is every successful condition with the same PET spec once its seed
option is left out (other options in any order) and the same attacker (the unattacked
condition and each attacker apart). ``seed=-1`` or no seed option is the run's seed
(``config.seed``). Figures are the leaderboard's cells, so they carry the leaderboard's
conventions: who reached a worst case, the held-out EER, and the chance (≈) and
in-sample (†) marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Any

from ..config import ConfigError, parse_spec
from .leaderboard import MAIN_PROTOCOL, Cell, Column, Leaderboard, build_leaderboard, fmt, is_number

SEED_OPTION = "seed"
RUN_SEED = -1  # the PETs' "use the run's seed" value
NOTE = ("Variants of one PET that differ only in their seed option, each with two or more seeds that ran (failed "
        "conditions are left out): each headline figure per seed (with who reached it), its mean, min, max and spread "
        "(max − min). seed=-1 or no seed option is the run's seed.")


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"pridss[m=5,seed=1]"`` -> ``("pridss", {"m": "5", "seed": "1"})``, read as the run reads plugin specs
    (``sbpet_bench.config.parse_spec``); a spec it cannot read is a bare name."""
    try:
        return parse_spec(spec)
    except ConfigError:
        return spec, {}


def without_seed(spec: str) -> tuple[str, tuple[str, tuple[tuple[str, str], ...]], str | None]:
    """The spec written without its seed, its group key (name and other options, in any order), and the seed text
    (None when it has no seed option)."""
    name, options = split_spec(spec)
    seed = options.pop(SEED_OPTION, None)
    label = f"{name}[{','.join(f'{k}={v}' for k, v in options.items())}]" if options else name
    return label, (name, tuple(sorted(options.items()))), seed


def is_seed_variant(spec: str) -> bool:
    """Whether the spec sets a seed option: another draw of the same PET, never a point on its strength curve."""
    return without_seed(spec)[2] is not None


def effective_seed(seed: str | None, run_seed: Any) -> int | str:
    """The seed a variant ran with: its own, or the run's for none and -1 ("run" when the run's is not recorded)."""
    try:
        value = int(seed) if seed is not None else RUN_SEED
    except ValueError:
        return str(seed)
    if value != RUN_SEED:
        return value
    return int(run_seed) if is_number(run_seed) and float(run_seed).is_integer() else "run"


@dataclass(frozen=True)
class Spread:
    """One figure over a group's seeds; ``cells`` line up with the group's seeds (None where a seed lacks it)."""
    column: Column
    cells: tuple[Cell | None, ...]

    @property
    def values(self) -> list[float]:
        return [float(c.value) for c in self.cells if c is not None and is_number(c.value)]

    @property
    def mean(self) -> float:
        return fmean(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def spread(self) -> float:
        return self.max - self.min

    @property
    def label(self) -> str:
        return self.column.short_label

    def to_dict(self, seeds: tuple[int | str, ...]) -> dict[str, Any]:
        return {"key": self.column.key, "label": self.label, "mean": self.mean, "min": self.min, "max": self.max, "spread": self.spread,
                "per_seed": [{"seed": s, "value": c.value if c else None, "by": c.by if c else "", "in_sample": c.in_sample if c else False,
                              "distinguishable": c.distinguishable if c else None} for s, c in zip(seeds, self.cells)]}


@dataclass(frozen=True)
class SeedGroup:
    pet: str  # the spec without its seed option
    attacker: str
    seeds: tuple[int | str, ...]  # ascending; a seed with " [run]" when merged runs disagree on that condition
    pets: tuple[str, ...]  # each seed's spec as the run wrote it
    spreads: tuple[Spread, ...]

    @property
    def label(self) -> str:
        return self.pet if self.attacker in ("", "none") else f"{self.pet} → {self.attacker}"

    def to_dict(self) -> dict[str, Any]:
        return {"pet": self.pet, "attacker": self.attacker, "seeds": list(self.seeds), "pets": list(self.pets),
                "metrics": [s.to_dict(self.seeds) for s in self.spreads]}


def headline_columns(board: Leaderboard) -> list[Column]:
    """The figures spread over seeds, in the leaderboard's order: worst case, each tier, held-out and worst EER
    (one is chosen per group), FNMR at the clean threshold on the main protocol."""
    wanted = ("worst_privacy_auc", "tier_privacy_auc", "heldout_eer", "worst_eer")
    return [c for c in board.columns if c.metric in wanted or (c.metric == "fnmr_at_clean_threshold" and c.protocol == MAIN_PROTOCOL)]


def _seed_order(seed: int | str) -> tuple[int, int, str]:
    return (0, seed, "") if isinstance(seed, int) else (1, 0, str(seed))


def seed_groups(results: dict[str, Any], board: Leaderboard | None = None) -> list[SeedGroup]:
    """The seed groups of one data set's results (a section of a merged report), in the order of their first condition;
    ``board`` is its leaderboard when already built."""
    board = board if board is not None else build_leaderboard(results)
    run_seed = (results.get("config") or {}).get("seed")
    members: dict[tuple, dict[int | str, Any]] = {}  # (name, other options, attacker) -> seed -> row
    labels: dict[tuple, str] = {}
    for row in board.rows:
        if row.is_reference or row.status != "ok":
            continue
        label, spec_key, seed_text = without_seed(row.pet)
        key = (*spec_key, row.attacker)
        seed = effective_seed(seed_text, run_seed)
        seed = f"{seed} [{row.run}]" if row.run else seed
        labels.setdefault(key, label)
        members.setdefault(key, {}).setdefault(seed, row)  # the same seed twice (pridss and pridss[seed=-1]): the first
    columns = headline_columns(board)
    groups = []
    for key, by_seed in members.items():
        if len(by_seed) < 2:
            continue
        seeds = tuple(sorted(by_seed, key=_seed_order))
        rows = [by_seed[s] for s in seeds]
        spreads = [Spread(c, tuple(r.cells.get(c.key) for r in rows)) for c in _group_columns(columns, rows)]
        spreads = [s for s in spreads if len(s.values) >= 2]
        if spreads:
            groups.append(SeedGroup(labels[key], key[2], seeds, tuple(r.pet for r in rows), tuple(spreads)))
    return groups


def _group_columns(columns: list[Column], rows: list[Any]) -> list[Column]:
    """The held-out EER when every seed has one, else the worst EER: one identity figure per group, never a mix."""
    def has(metric: str) -> bool:
        return all(is_number(getattr(r.cells.get(metric), "value", None)) for r in rows)

    drop = "worst_eer" if has("heldout_eer") else "heldout_eer"
    return [c for c in columns if c.metric != drop]


def describe(results: dict[str, Any]) -> str:
    """The table's note, naming the run's seed when it is recorded."""
    run_seed = effective_seed(None, (results.get("config") or {}).get("seed"))
    return NOTE[:-1] + (f" ({run_seed} here)." if isinstance(run_seed, int) else ".")


def per_seed_text(group: SeedGroup, spread: Spread) -> str:
    """``0: 0.612 informed:cnn; 1: 0.640† faceapi-gender``: each seed's value, marks and who reached it."""
    return "; ".join(f"{s}: {c.text(ci=False, with_by=True) if c is not None and c.value is not None else '–'}"
                     for s, c in zip(group.seeds, spread.cells))


def table(groups: list[SeedGroup]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (plain text) of the spread table, one row per (group, figure)."""
    header = ["condition", "seeds", "metric", "per seed", "mean", "min", "max", "spread"]
    rows = [[g.label, ", ".join(map(str, g.seeds)), s.label, per_seed_text(g, s), fmt(s.mean), fmt(s.min), fmt(s.max), fmt(s.spread)]
            for g in groups for s in g.spreads]
    return header, rows
