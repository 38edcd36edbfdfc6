"""The README's results table from one or more runs' results.json (prints markdown; computes nothing new).

    uv run python benchmarks/results_table.py runs/m-lfw3d runs/m-wild [--verifier hm-faceres] [--fmr 0.01]

One row per unattacked condition (pet / none): the worst-case privacy AUC with its 95 % interval and
the classifier that reached it, the worst of each tier (off-the-shelf, recovery, informed, mixed),
`faceapi-gender` alone (the classifier earlier versions headlined), the held-out EER
(protected-vs-original, the worst verifier no PET of the run uses) with its verifier, FNMR at the
originals' threshold for ``--fmr`` with ``--verifier``, and KID on the realism featurizer. Every
figure is read from results.json as the run wrote it; a missing one prints as "-".
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

MAIN_PROTOCOL = "protected-vs-original"
TIERS = ("off-the-shelf", "recovery", "informed", "mixed")


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def metric(cond: dict, name: str, **match: Any) -> dict | None:
    for m in cond.get("metrics") or []:
        if m["metric"] != name:
            continue
        extra = m.get("extra") or {}
        if all(m.get(k) == v or extra.get(k) == v for k, v in match.items()):
            return m
    return None


def row(cond: dict, verifier: str, fmr: float) -> list[str]:
    worst = metric(cond, "worst_privacy_auc")
    cells = ["-"] if worst is None else [
        f"{fmt(worst['value'])} [{fmt(worst.get('ci_low'))}, {fmt(worst.get('ci_high'))}] ({worst['evaluator']})"]
    for tier in TIERS:
        m = metric(cond, "tier_privacy_auc", protocol=tier)
        cells.append(fmt(m["value"]) if m else "-")
    alone = metric(cond, "privacy_auc", evaluator="faceapi-gender", tier="off-the-shelf")
    cells.append(fmt(alone["value"]) if alone else "-")
    eer = metric(cond, "worst_eer", protocol=MAIN_PROTOCOL)
    held = (eer or {}).get("extra", {}).get("heldout_eer") if eer else None
    cells.append(f"{fmt(held['value'])} ({held['verifier']})" if held else (fmt(eer["value"]) if eer else "-"))
    fnmr = next((m for m in cond.get("metrics") or [] if m["metric"] == "fnmr_at_clean_threshold"
                 and m.get("evaluator") == verifier and m.get("protocol") == MAIN_PROTOCOL
                 and math.isclose(float((m.get("extra") or {}).get("fmr", -1)), fmr)), None)
    cells.append(fmt(fnmr["value"]) if fnmr else "-")
    kid = metric(cond, "kid")
    cells.append(fmt(kid["value"], 4) if kid else "-")
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders (each with results.json)")
    ap.add_argument("--verifier", default="hm-faceres", help="verifier of the FNMR-at-clean-threshold column")
    ap.add_argument("--fmr", type=float, default=1e-2, help="FMR at which the originals' threshold was set")
    args = ap.parse_args()
    print(f"| data | condition | worst privacy AUC [95% CI] (by) | {' | '.join(TIERS)} | `faceapi-gender` alone "
          f"| held-out EER (verifier) | FNMR@clean thr. ({args.verifier}, FMR {args.fmr:g}) | KID |")
    print("|" + "---|" * 11)
    for run in args.runs:
        results = json.loads((Path(run) / "results.json").read_text())
        data = Path((results.get("dataset") or {}).get("path") or run).name
        for cond in results["conditions"]:
            if cond["attacker"] != "none":
                continue
            name = "originals" if cond["pet"] in ("original", "none") else cond["pet"]
            if cond.get("status") != "ok":
                print(f"| {data} | {name} | {cond.get('status')} |" + " |" * 9)
                continue
            print(f"| {data} | {name} | " + " | ".join(row(cond, args.verifier, args.fmr)) + " |")


if __name__ == "__main__":
    main()
