"""Report figures (matplotlib, Agg, no pyplot state), returned as PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Any

from matplotlib.figure import Figure

from .leaderboard import fmt, is_number


def _safe(text: str) -> str:
    """Plain text for matplotlib: a '$' in a plugin name must not start mathtext."""
    return str(text).replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return buf.getvalue()


def _condition_label(cond: dict[str, Any]) -> str:
    pet, attacker = cond.get("pet", ""), cond.get("attacker", "none")
    label = pet if attacker in ("", "none") else f"{pet} → {attacker}"
    return f"{label} [{cond['run']}]" if cond.get("run") else label


def _metrics(results: dict[str, Any], metric: str):
    for cond in results.get("conditions", []):
        for m in cond.get("metrics", []):
            if m.get("metric") == metric:
                yield cond, m


def roc_figures(results: dict[str, Any]) -> list[tuple[str, bytes]]:
    """One ROC plot per classifier, a curve per condition (from the gender metric's extra)."""
    by_clf: dict[str, list] = {}
    for cond, m in _metrics(results, "auc"):
        roc = (m.get("extra") or {}).get("roc")
        if roc and roc.get("x"):
            by_clf.setdefault(m.get("evaluator", ""), []).append((cond, m, roc))
    out = []
    for clf, curves in sorted(by_clf.items()):
        fig = Figure(figsize=(4.8, 4.2))
        ax = fig.add_subplot()
        for cond, m, roc in curves:
            ax.plot(roc["x"], roc["y"], lw=1.4, label=_safe(f"{_condition_label(cond)} (AUC {fmt(m.get('value'))})"))
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set(xlabel="false positive rate (female called male)", ylabel="true positive rate (male)", title=_safe(f"ROC — {clf}"), xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
        out.append((f"ROC curves, classifier {clf}", _png(fig)))
    return out


def det_figures(results: dict[str, Any]) -> list[tuple[str, bytes]]:
    """One DET plot (log axes) per verifier and protocol, a curve per condition."""
    groups: dict[tuple[str, str], list] = {}
    for cond, m in _metrics(results, "eer"):
        det = (m.get("extra") or {}).get("det")
        if det and det.get("fmr"):
            groups.setdefault((m.get("evaluator", ""), m.get("protocol", "")), []).append((cond, m, det))
    out = []
    for (verifier, protocol), curves in sorted(groups.items()):
        fig = Figure(figsize=(4.8, 4.2))
        ax = fig.add_subplot()
        for cond, m, det in curves:
            ax.plot(det["fmr"], det["fnmr"], lw=1.4, label=_safe(f"{_condition_label(cond)} (EER {fmt(m.get('value'))})"))
        # log axes that still show 0 (a perfect verifier), linear below 1e-3
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set(xlabel="FMR", ylabel="FNMR", title=_safe(f"DET — {verifier}\n{protocol}"), xlim=(0, 1), ylim=(0, 1))
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, loc="lower left")
        out.append((f"DET curves, verifier {verifier}, protocol {protocol}", _png(fig)))
    return out


def privacy_utility_figures(results: dict[str, Any], max_figures: int = 6) -> list[tuple[str, bytes]]:
    """Privacy AUC (x) against EER (y) per classifier x verifier x protocol: a point per PET and a line
    through the variants of one PET (its trade-off curve); then, per classifier, one figure (first
    protocol, first verifier with attacked conditions) with an arrow to each attack on a PET."""
    from .tradeoff import EER_PROTOCOLS, condition_values, family

    values = condition_values(results, ("privacy_auc", "eer"))
    clfs = sorted(e for (metric, e, _) in values if metric == "privacy_auc")
    present = {p for (metric, _, p) in values if metric == "eer"}
    protocols = [p for p in EER_PROTOCOLS if p in present] + sorted(present - set(EER_PROTOCOLS))

    def verifiers(protocol: str) -> list[str]:
        return sorted(e for (metric, e, p) in values if metric == "eer" and p == protocol)

    def unattacked(k) -> bool:
        return k[1] in ("", "none")

    plain = [(clf, protocol, ver) for clf in clfs for protocol in protocols for ver in verifiers(protocol)]
    attacked = []
    for clf in clfs if protocols else []:
        ver = next((v for v in verifiers(protocols[0]) if any(
            not unattacked(k) and k in values[("eer", v, protocols[0])] for k in values[("privacy_auc", clf, "")])), None)
        if ver is not None:
            attacked.append((clf, protocols[0], ver))
    out = []
    for attacks, (clf, protocol, ver) in [(False, t) for t in plain] + [(True, t) for t in attacked]:
        if len(out) >= max_figures:
            break
        xs, ys = values[("privacy_auc", clf, "")], values[("eer", ver, protocol)]
        conds = [k for k in xs if k in ys and (attacks or unattacked(k))]
        if conds:
            what = "recovery attacks, " if attacks else ""
            out.append((f"Privacy-utility ({what}privacy AUC {clf} vs EER {ver}, {protocol})",
                        _png(_privacy_utility(xs, ys, conds, clf, ver, protocol, family))))
    return out


def _privacy_utility(xs, ys, conds, clf: str, ver: str, protocol: str, family) -> Figure:
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.add_subplot()
    curves: dict[tuple[str, str], list] = {}
    for k in conds:
        if k[0] != "original" and k[1] in ("", "none"):
            curves.setdefault((family(k[0]), k[2]), []).append(k)
    for (name, run), members in sorted(curves.items()):
        members.sort(key=lambda k: xs[k])
        label = name + (f" [{run}]" if run else "")
        line = ax.plot([xs[k] for k in members], [ys[k] for k in members], marker="o", ms=5, lw=1.2 if len(members) > 1 else 0,
                       zorder=3, label=_safe(label))[0]
        for k in members:  # variants are labelled by their options only, the legend names the PET
            text = k[0][len(name):].strip("[]") if len(members) > 1 else ""
            if text:
                ax.annotate(_safe(text), (xs[k], ys[k]), fontsize=6, color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    for k in conds:
        pet, attacker, run = k
        if pet == "original":
            ax.scatter(xs[k], ys[k], marker="*", s=140, c="black", zorder=4)
            ax.annotate("originals", (xs[k], ys[k]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        elif attacker not in ("", "none"):
            base = (pet, "none", run)
            ax.scatter(xs[k], ys[k], marker="x", c="grey", s=30, zorder=2)
            ax.annotate(_safe(f"{pet} → {attacker}"), (xs[k], ys[k]), fontsize=6, color="grey", xytext=(4, -9), textcoords="offset points")
            if base in xs and base in ys:
                ax.annotate("", (xs[k], ys[k]), (xs[base], ys[base]), arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8})
    ax.axvline(0.5, ls=":", c="grey", lw=1)
    ax.set(xlabel=_safe(f"privacy AUC ({clf}) — 0.5 is ideal"), ylabel=_safe(f"EER ({ver}) — lower keeps identity"),
           title=_safe(f"privacy vs utility ({protocol})"))
    ax.set_xlim(0.45, 1.02)
    top = max(ys[k] for k in conds)
    ax.set_ylim(-0.02, max(0.1, min(0.55, top * 1.15 + 0.02)) if math.isfinite(top) else 0.55)
    if curves:
        ax.legend(fontsize=7, loc="best")
    return fig
