"""Plot PriDSS's M ablation (the paper's Fig. 5): privacy AUC, EER and realism against M.

    uv run sbpet run benchmarks/pridss_ablation.toml --out runs/pridss-ablation
    uv run python benchmarks/pridss_ablation_plot.py runs/pridss-ablation [--out runs/pridss-ablation/ablation.png]

Reads results.json, finds the rows `pridss[m=M]` (attacker none), prints a table and saves the plot.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

def _metric(cond: dict, name: str, evaluator: str | None = None) -> dict | None:
    return next((m for m in cond["metrics"] if m["metric"] == name and m["value"] is not None
                 and (evaluator is None or m.get("evaluator") == evaluator)), None)


def _heldout_eer(cond: dict) -> float | None:
    """The worst EER among the verifiers no PET of the run uses (PriDSS's own recogniser is in-sample)."""
    worst = _metric(cond, "worst_eer")
    held = (worst or {}).get("extra", {}).get("heldout_eer")
    return held["value"] if held else None


def _value(cond: dict, name: str, evaluator: str | None = None) -> float | None:
    m = _metric(cond, name, evaluator)
    return m["value"] if m else None


# (column, title, value of a condition): the headline worst case, the one classifier the earlier
# publication used, identity by a held-out verifier, realism on a featurizer that is not a recogniser.
PANELS = [("worst_privacy_auc", "worst privacy AUC ↓", lambda c: _value(c, "worst_privacy_auc")),
          ("privacy_auc_faceapi_gender", "privacy AUC, faceapi-gender ↓", lambda c: _value(c, "privacy_auc", "faceapi-gender")),
          ("heldout_eer", "held-out EER ↓", _heldout_eer),
          ("kid", "KID (hm-antispoof) ↓", lambda c: _value(c, "kid", "hm-antispoof"))]


def collect(results: dict) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for cond in results["conditions"]:
        match = re.fullmatch(r"pridss\[(?:.*,)?m=(\d+)(?:,.*)?\]", cond["pet"])
        if not match or cond["attacker"] != "none" or cond["status"] != "ok":
            continue
        values = {column: read(cond) for column, _, read in PANELS}
        rows[int(match.group(1))] = {k: v for k, v in values.items() if v is not None}
    return dict(sorted(rows.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = json.loads((args.run_dir / "results.json").read_text())
    rows = collect(results)
    if not rows:
        raise SystemExit(f"{args.run_dir}/results.json has no pridss[m=...] rows; run benchmarks/pridss_ablation.toml first")
    print("M\t" + "\t".join(p[0] for p in PANELS))
    for m, values in rows.items():
        print(f"{m}\t" + "\t".join(f"{values.get(p[0], float('nan')):.4f}" for p in PANELS))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for ax, (metric, label, _) in zip(axes, PANELS):
        ms = [m for m in rows if metric in rows[m]]
        ax.plot(ms, [rows[m][metric] for m in ms], "o-")
        ax.set_xscale("log")
        ax.set_xticks(list(rows), [str(m) for m in rows])
        ax.set_xlabel("M (candidates per face)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = args.out or args.run_dir / "pridss_ablation.png"
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
