"""Merging several runs' results.json into one leaderboard, refusing runs that are not comparable."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class MergeError(ValueError):
    """Runs cannot be merged (different data or protocol) or cannot be read."""


def load_results(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise MergeError(f"{run_dir}: no results.json (is this a run directory written by `sbpet run`?)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MergeError(f"{path}: cannot read it as JSON: {exc}") from exc
    if not str(results.get("schema", "")).startswith("sbpet-results/"):
        raise MergeError(f"{path}: schema is {results.get('schema')!r}, expected 'sbpet-results/1'")
    return results


def comparability(results: dict[str, Any]) -> dict[str, Any]:
    """The settings that must agree for two runs' numbers to share a leaderboard."""
    ds, cfg = results.get("dataset") or {}, results.get("config") or {}
    fields: dict[str, Any] = {
        "dataset.fingerprint": ds.get("fingerprint"), "dataset.source": ds.get("source"), "dataset.n_eval": ds.get("n_eval"),
        "config.per_class": cfg.get("per_class"), "config.seed": cfg.get("seed"), "config.image_size": cfg.get("image_size"),
        "config.bootstrap": cfg.get("bootstrap"),
    }
    for p in results.get("plugins") or []:  # metric options: pair counts, protocols, KID subsets, ...
        if p.get("kind") == "metric":
            for k, v in (p.get("options") or {}).items():
                fields[f"{p.get('name')}.{k}"] = v
    for cond in results.get("conditions") or []:  # the pairs themselves, where every image survived
        if cond.get("n_failed_images"):
            continue
        for m in cond.get("metrics") or []:
            digest = (m.get("extra") or {}).get("pairs_sha256")
            if digest:
                fields.setdefault(f"verification pairs ({m.get('protocol')})", digest)
    return {k: v for k, v in fields.items() if v is not None}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _metric_key(m: dict[str, Any]) -> tuple[str, str, str]:
    return (str(m.get("metric")), str(m.get("evaluator", "")), str(m.get("protocol", "")))


def _conflicts(a: dict[str, Any], b: dict[str, Any]) -> bool:
    mine = {_metric_key(m): m.get("value") for m in a.get("metrics") or []}
    return any(k in mine and not _same(mine[k], m.get("value")) for m in b.get("metrics") or [] for k in [_metric_key(m)])


def _union(*lists: list) -> list:
    out: list = []
    for items in lists:
        out += [x for x in items or [] if x not in out]
    return out


def merge_runs(run_dirs: list[Path], force: bool = False) -> dict[str, Any]:
    """Merge runs into one results dict; sample image paths become absolute (the caller copies them).

    Raises :class:`MergeError` naming every differing field unless ``force``. A condition
    that appears in several runs with equal numbers is shown once; with different
    numbers each copy is kept and labelled with its run.
    """
    if not run_dirs:
        raise MergeError("no run directories given")
    runs = [(Path(d), load_results(Path(d))) for d in run_dirs]
    names = [d.resolve().name for d, _ in runs]
    labels = [n if names.count(n) == 1 else f"{i + 1}-{n}" for i, n in enumerate(names)]
    base = comparability(runs[0][1])
    problems, warnings = [], []
    for (d, res), label in zip(runs[1:], labels[1:]):
        other = comparability(res)
        for key in sorted(set(base) & set(other)):
            if not _same(base[key], other[key]):
                problems.append(f"{key}: {base[key]!r} in {runs[0][0]} but {other[key]!r} in {d}")
    if problems and not force:
        raise MergeError("runs are not comparable (different data or protocol):\n  " + "\n  ".join(problems)
                         + "\nRun them with the same settings, or pass --force to merge anyway.")
    warnings += [f"merged with --force although {p}" for p in problems]

    first = runs[0][1]
    merged: dict[str, Any] = {k: first.get(k) for k in ("schema", "sbpet_version", "git_commit", "packages", "dataset")}
    merged["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    merged["command"] = ["sbpet", "report", *map(str, run_dirs)]
    merged["runs"] = [{"dir": str(d), "label": label, "created": r.get("created"), "command": r.get("command"), "git_commit": r.get("git_commit")}
                      for (d, r), label in zip(runs, labels)]
    cfg = dict(first.get("config") or {})
    for key in ("pets", "attackers", "classifiers", "verifiers", "featurizers", "metrics"):
        cfg[key] = _union(*[(r.get("config") or {}).get(key) for _, r in runs])
    merged["config"] = cfg
    merged["plugins"] = _union(*[r.get("plugins") for _, r in runs])

    conditions: list[dict[str, Any]] = []
    for (d, r), label in zip(runs, labels):
        for cond in r.get("conditions") or []:
            cond = {**cond, "metrics": list(cond.get("metrics") or []), "from_runs": [label]}
            same_key = [c for c in conditions if (c.get("pet"), c.get("attacker")) == (cond.get("pet"), cond.get("attacker"))]
            target = next((c for c in same_key if not _conflicts(c, cond)), None)
            if target is not None:  # identical numbers: one row, with the union of metrics
                have = {_metric_key(m) for m in target["metrics"]}
                target["metrics"] += [m for m in cond["metrics"] if _metric_key(m) not in have]
                target["from_runs"].append(label)
                continue
            if same_key:  # the same condition with other numbers: label both rows by run
                for c in same_key:
                    c.setdefault("run", c["from_runs"][0])
                cond["run"] = label
                warnings.append(f"{cond.get('pet')}/{cond.get('attacker')} differs between runs; shown once per run")
            conditions.append(cond)
    merged["conditions"] = conditions

    samples: dict[str, dict[str, Any]] = {}
    for d, r in runs:
        for s in r.get("samples") or []:
            target = samples.setdefault(str(s.get("id")), {k: s.get(k) for k in ("id", "identity", "gender")} | {"images": {}, "p_male": {}, "similarity": {}, "diagnostics": {}})
            for k, rel in (s.get("images") or {}).items():
                target["images"].setdefault(k, str((d / rel).resolve()))
            for field in ("p_male", "similarity", "diagnostics"):
                for k, v in (s.get(field) or {}).items():
                    target[field].setdefault(k, v)
    merged["samples"] = list(samples.values())
    merged["warnings"] = warnings + [f"[{label}] {w}" for (_, r), label in zip(runs, labels) for w in r.get("warnings") or []]
    merged["errors"] = [e for _, r in runs for e in r.get("errors") or []]
    return merged
