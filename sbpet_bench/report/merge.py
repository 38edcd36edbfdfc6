"""Merging several runs' results.json into one report, a section per data set.

Runs on the same data (the same ``dataset.fingerprint``, wherever the copy lies) share one
leaderboard and must agree on the protocol, or the merge is refused (``--force`` merges
anyway, with a warning). Runs on different data sets become separate sections of one report
(``results["datasets"]``): their numbers are never put in one table.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..results import ResultsError
from ..results import load_results as load_results_file


class MergeError(ValueError):
    """Runs cannot be merged (different data or protocol) or cannot be read."""


def load_results(run_dir: Path) -> dict[str, Any]:
    """A run's results.json through the typed, validating loader (the one reader of that file)."""
    path = Path(run_dir)
    try:
        return dict(load_results_file(path if path.is_file() else path / "results.json"))
    except ResultsError as exc:
        raise MergeError(str(exc)) from None


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


def _metric_key(m: dict[str, Any]) -> tuple[str, str, str, str]:
    """What tells two values of a condition apart; fnmr_at_clean_threshold has one per FMR (in its extra)."""
    return (str(m.get("metric")), str(m.get("evaluator", "")), str(m.get("protocol", "")), str((m.get("extra") or {}).get("fmr", "")))


def _conflicts(a: dict[str, Any], b: dict[str, Any]) -> bool:
    mine = {_metric_key(m): m.get("value") for m in a.get("metrics") or []}
    return any(k in mine and not _same(mine[k], m.get("value")) for m in b.get("metrics") or [] for k in [_metric_key(m)])


def _union(*lists: list) -> list:
    out: list = []
    for items in lists:
        out += [x for x in items or [] if x not in out]
    return out


def sections(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-data-set parts of a report: ``results["datasets"]`` when merged over several, else the results themselves."""
    return list(results["datasets"]) if results.get("datasets") else [results]


def dataset_key(results: dict[str, Any]) -> str:
    """Runs with equal keys are on the same data: the fingerprint, else (older runs) the path."""
    ds = results.get("dataset") or {}
    return str(ds.get("fingerprint") or ds.get("path") or "unknown")


def dataset_label(results: dict[str, Any]) -> str:
    ds = results.get("dataset") or {}
    path, fingerprint = ds.get("path") or ds.get("source") or "data", ds.get("fingerprint")
    return f"{path} ({fingerprint})" if fingerprint else str(path)


def _check_comparable(runs: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    base = comparability(runs[0][1])
    problems = []
    for d, res in runs[1:]:
        other = comparability(res)
        for key in sorted(set(base) & set(other)):
            if not _same(base[key], other[key]):
                problems.append(f"{key}: {base[key]!r} in {runs[0][0]} but {other[key]!r} in {d}")
    return problems


def _expand(run_dir: Path, results: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """A report merged over several data sets reads as one run per data set."""
    return [(run_dir, part) for part in sections(results)]


def merge_runs(run_dirs: list[Path], force: bool = False) -> dict[str, Any]:
    """Merge runs into one results dict; sample image paths become absolute (the caller copies them).

    Runs are grouped by data set (:func:`dataset_key`). Within a group, raises :class:`MergeError`
    naming every differing field unless ``force``; a condition that appears in several runs with
    equal numbers is shown once, with different numbers each copy is kept and labelled with its run.
    With several groups the result holds one merged results dict per group in ``"datasets"``.
    """
    if not run_dirs:
        raise MergeError("no run directories given")
    runs = [part for d in run_dirs for part in _expand(Path(d), load_results(Path(d)))]
    names = [d.resolve().name for d, _ in runs]
    labels = [n if names.count(n) == 1 else f"{i + 1}-{n}" for i, n in enumerate(names)]
    groups: dict[str, list[int]] = {}
    for i, (_, res) in enumerate(runs):
        groups.setdefault(dataset_key(res), []).append(i)
    problems = [p for idx in groups.values() for p in _check_comparable([runs[i] for i in idx])]
    if problems and not force:
        raise MergeError("runs on the same data set are not comparable (different protocol):\n  " + "\n  ".join(problems)
                         + "\nRun them with the same settings, or pass --force to merge anyway.")
    forced = [f"merged with --force although {p}" for p in problems]
    parts = [_merge_group([runs[i] for i in idx], [labels[i] for i in idx]) for idx in groups.values()]
    if len(parts) == 1:
        parts[0]["warnings"] = forced + parts[0]["warnings"]
        return _stamp(parts[0], run_dirs, runs, labels)
    merged: dict[str, Any] = {k: runs[0][1].get(k) for k in ("schema", "sbpet_version", "git_commit", "packages")}
    # each section has its own; this one only names them all (and keeps the document valid results)
    merged["dataset"] = {"fingerprint": "+".join(str((p.get("dataset") or {}).get("fingerprint", "")) for p in parts),
                         "path": "; ".join(dataset_label(p) for p in parts)}
    merged["datasets"] = parts
    merged["config"] = _union_config([r for _, r in runs])
    merged["plugins"] = _union(*[r.get("plugins") for _, r in runs])
    merged["conditions"], merged["samples"] = [], []  # in the sections
    merged["warnings"] = forced + [f"[{dataset_label(p)}] {w}" for p in parts for w in p["warnings"]]
    merged["errors"] = [e for p in parts for e in p["errors"]]
    return _stamp(merged, run_dirs, runs, labels)


def _stamp(merged: dict[str, Any], run_dirs: list[Path], runs: list[tuple[Path, dict[str, Any]]], labels: list[str]) -> dict[str, Any]:
    merged["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    merged["command"] = ["sbpet", "report", *map(str, run_dirs)]
    merged["runs"] = [{"dir": str(d), "label": label, "created": r.get("created"), "command": r.get("command"), "git_commit": r.get("git_commit"),
                       "dataset": dataset_label(r)} for (d, r), label in zip(runs, labels)]
    return merged


def _union_config(results: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = dict(results[0].get("config") or {})
    for key in ("pets", "attackers", "classifiers", "verifiers", "featurizers", "metrics"):
        cfg[key] = _union(*[(r.get("config") or {}).get(key) for r in results])
    return cfg


def _merge_group(runs: list[tuple[Path, dict[str, Any]]], labels: list[str]) -> dict[str, Any]:
    """Runs on one data set as one results dict (conditions deduplicated, samples joined)."""
    first = runs[0][1]
    merged: dict[str, Any] = {k: first.get(k) for k in ("schema", "sbpet_version", "git_commit", "packages", "dataset")}
    merged["runs"] = [{"dir": str(d), "label": label} for (d, _), label in zip(runs, labels)]
    merged["config"] = _union_config([r for _, r in runs])
    merged["plugins"] = _union(*[r.get("plugins") for _, r in runs])
    warnings: list[str] = []
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
                if rel:
                    target["images"].setdefault(k, str((d / rel).resolve()))
            for field in ("p_male", "similarity", "diagnostics"):
                for k, v in (s.get(field) or {}).items():
                    target[field].setdefault(k, v)
    merged["samples"] = list(samples.values())
    merged["warnings"] = warnings + [f"[{label}] {w}" for (_, r), label in zip(runs, labels) for w in r.get("warnings") or []]
    merged["errors"] = [e for _, r in runs for e in r.get("errors") or []]
    return merged
