"""Report figures (matplotlib, Agg, no pyplot state), returned as PNG bytes.

A Table-2 run has 30-odd conditions: each curve takes its PET's colour and its attacker's
line style (so "pridss → pp-d" reads as a dashed pridss), and legends sit outside the axes,
in as many columns as needed, so they never cover a curve. DET curves use normal-deviate
(probit) axes with percent ticks, as in biometric evaluation (ISO/IEC 19795-1).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.stats import norm

from .leaderboard import fmt

DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99)  # denser ticks collide below 1% on a 4-inch axis
DET_RANGE = (0.0005, 0.995)  # rates of 0 (and 1) are drawn on the axis edge
ATTACK_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 2)))
LEGEND_ROWS = 18  # legend entries per column before another column is added
AXES_INCHES = (4.6, 4.0)  # the plotting area itself; legends are added beside it
DPI = 100


def _safe(text: str) -> str:
    """Plain text for matplotlib: a '$' in a plugin name must not start mathtext."""
    return str(text).replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
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


class _Styles:
    """Colour per PET (and run), line style per attacker; the originals are black."""

    def __init__(self, conds: list[dict[str, Any]]):
        pets = list(dict.fromkeys((c.get("pet", ""), c.get("run", "")) for c in conds if c.get("pet") != "original"))
        cmap = colormaps["tab10" if len(pets) <= 10 else "tab20"]
        self.colours = {p: cmap(i % cmap.N) for i, p in enumerate(pets)}
        attackers = list(dict.fromkeys(c.get("attacker", "none") for c in conds if c.get("attacker", "none") not in ("", "none")))
        self.styles = {a: ATTACK_STYLES[i % len(ATTACK_STYLES)] for i, a in enumerate(attackers)}

    def __call__(self, cond: dict[str, Any]) -> dict[str, Any]:
        colour = "black" if cond.get("pet") == "original" else self.colours[(cond.get("pet", ""), cond.get("run", ""))]
        return {"color": colour, "ls": self.styles.get(cond.get("attacker", "none"), "-")}


def _figure(n_legend: int) -> tuple[Figure, Any]:
    """A figure whose axes keep their size and whose legend (``n_legend`` entries) fits beside them."""
    cols = max(1, math.ceil(n_legend / LEGEND_ROWS))
    width = AXES_INCHES[0] + 0.9 + (2.3 * cols if n_legend else 0)
    height = max(AXES_INCHES[1] + 0.9, 0.2 * min(n_legend, LEGEND_ROWS) + 0.9)
    fig = Figure(figsize=(width, height))
    left, bottom = 0.7 / width, 0.6 / height
    ax = fig.add_axes((left, bottom, AXES_INCHES[0] / width, AXES_INCHES[1] / height))
    return fig, ax


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
                  ncols=max(1, math.ceil(n / LEGEND_ROWS)), handlelength=2.6)


def roc_figures(results: dict[str, Any]) -> list[tuple[str, bytes]]:
    """One ROC plot per classifier, a curve per condition (from the gender metric's extra), as PNG."""
    return [(title, _png(fig)) for title, fig in roc_plots(results)]


def det_figures(results: dict[str, Any]) -> list[tuple[str, bytes]]:
    """One DET plot per verifier and protocol, as PNG (see :func:`det_plots`)."""
    return [(title, _png(fig)) for title, fig in det_plots(results)]


def roc_plots(results: dict[str, Any]) -> list[tuple[str, Figure]]:
    """One ROC plot per classifier, a curve per condition."""
    by_clf: dict[str, list] = {}
    for cond, m in _metrics(results, "auc"):
        roc = (m.get("extra") or {}).get("roc")
        if roc and roc.get("x"):
            by_clf.setdefault(m.get("evaluator", ""), []).append((cond, m, roc))
    out = []
    for clf, curves in sorted(by_clf.items()):
        style = _Styles([c for c, _, _ in curves])
        fig, ax = _figure(len(curves))
        for cond, m, roc in curves:
            ax.plot(roc["x"], roc["y"], lw=1.3, label=_safe(f"{_condition_label(cond)} (AUC {fmt(m.get('value'))})"), **style(cond))
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set(xlabel="false positive rate (female called male)", ylabel="true positive rate (male)", title=_safe(f"ROC — {clf}"), xlim=(0, 1), ylim=(0, 1.01))
        _legend(ax, len(curves))
        out.append((f"ROC curves, classifier {clf}", fig))
    return out


def probit(rate: Any) -> np.ndarray:
    """Normal deviate of an error rate, clipped to the DET plot's range."""
    return norm.ppf(np.clip(np.asarray(rate, dtype=float), *DET_RANGE))


def _percent(rate: float) -> str:
    return f"{rate * 100:g}%"


def det_axes(ax) -> None:
    """Probit axes with the usual percent ticks (0.1%, 1%, 5%, 20%, 50%, ...) and the EER diagonal."""
    ticks = probit(DET_TICKS)
    lo, hi = probit(DET_RANGE)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks, [_percent(t) for t in DET_TICKS])
    ax.tick_params(labelsize=7.5)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
    ax.plot([lo, hi], [lo, hi], ls=":", c="grey", lw=0.8)
    ax.grid(True, lw=0.3, alpha=0.6)


def det_plots(results: dict[str, Any]) -> list[tuple[str, Figure]]:
    """One DET plot per verifier and protocol, a curve per condition. Per-probe-gender protocols
    (``...@male``) are left out: their numbers are in the leaderboard."""
    groups: dict[tuple[str, str], list] = {}
    for cond, m in _metrics(results, "eer"):
        det = (m.get("extra") or {}).get("det")
        if det and det.get("fmr") and "@" not in str(m.get("protocol", "")):
            groups.setdefault((m.get("evaluator", ""), m.get("protocol", "")), []).append((cond, m, det))
    out = []
    for (verifier, protocol), curves in sorted(groups.items()):
        style = _Styles([c for c, _, _ in curves])
        fig, ax = _figure(len(curves))
        for cond, m, det in curves:
            ax.plot(probit(det["fmr"]), probit(det["fnmr"]), lw=1.3, label=_safe(f"{_condition_label(cond)} (EER {fmt(m.get('value'))})"),
                    **style(cond))
        det_axes(ax)
        ax.set(xlabel="FMR (false match rate)", ylabel="FNMR (false non-match rate)", title=_safe(f"DET — {verifier}\n{protocol}"))
        _legend(ax, len(curves))
        out.append((f"DET curves, verifier {verifier}, protocol {protocol}", fig))
    return out


def privacy_utility_figures(results: dict[str, Any], max_figures: int = 6, privacy_by: str | None = None) -> list[tuple[str, bytes]]:
    """Privacy AUC (x: the worst case, or ``privacy_by``) against EER (y) per verifier x protocol: a point per PET
    and a line through the variants of one PET (its trade-off curve); then one figure (first protocol, first
    verifier with attacked conditions) with an arrow to each attack on a PET."""
    from .tradeoff import EER_PROTOCOLS, condition_values, family, privacy_key, privacy_sources

    values = condition_values(results, ("privacy_auc", "worst_privacy_auc", "eer"))
    sources = privacy_sources(values, privacy_by)
    present = {p for (metric, _, p) in values if metric == "eer"}
    protocols = [p for p in EER_PROTOCOLS if p in present] + sorted(p for p in present - set(EER_PROTOCOLS) if "@" not in p)

    def verifiers(protocol: str) -> list[str]:
        return sorted(e for (metric, e, p) in values if metric == "eer" and p == protocol)

    def unattacked(k) -> bool:
        return k[1] in ("", "none")

    plain = [(clf, protocol, ver) for clf in sources for protocol in protocols for ver in verifiers(protocol)]
    attacked = []
    for clf in sources if protocols else []:
        ver = next((v for v in verifiers(protocols[0]) if any(
            not unattacked(k) and k in values[("eer", v, protocols[0])] for k in values[privacy_key(clf)])), None)
        if ver is not None:
            attacked.append((clf, protocols[0], ver))
    # the first protocol's plots and the attacks first: with many protocols the cap would drop the attacks
    first = [t for t in plain if t[1] == protocols[0]] if protocols else []
    order = [(False, t) for t in first] + [(True, t) for t in attacked] + [(False, t) for t in plain if t not in first]
    out = []
    for attacks, (clf, protocol, ver) in order:
        if len(out) >= max_figures:
            break
        xs, ys = values[privacy_key(clf)], values[("eer", ver, protocol)]
        conds = [k for k in xs if k in ys and (attacks or unattacked(k))]
        if conds:
            what = "recovery attacks, " if attacks else ""
            name = f"privacy AUC {clf}" if clf else "worst-case privacy AUC"
            out.append((f"Privacy-utility ({what}{name} vs EER {ver}, {protocol})",
                        _png(_privacy_utility(xs, ys, conds, clf, ver, protocol, family))))
    return out


def _privacy_utility(xs, ys, conds, clf: str, ver: str, protocol: str, family) -> Figure:
    curves: dict[tuple[str, str], list] = {}
    for k in conds:
        if k[0] != "original" and k[1] in ("", "none"):
            curves.setdefault((family(k[0]), k[2]), []).append(k)
    fig, ax = _figure(len(curves) + 2)
    cmap = colormaps["tab10" if len(curves) <= 10 else "tab20"]
    for i, ((name, run), members) in enumerate(sorted(curves.items())):
        members.sort(key=lambda k: xs[k])
        label = name + (f" [{run}]" if run else "")
        line = ax.plot([xs[k] for k in members], [ys[k] for k in members], marker="o", ms=5, lw=1.2 if len(members) > 1 else 0,
                       zorder=3, label=_safe(label), color=cmap(i % cmap.N))[0]
        for k in members:  # variants are labelled by their options only, the legend names the PET
            text = k[0][len(name):].strip("[]") if len(members) > 1 else ""
            if text:
                ax.annotate(_safe(text), (xs[k], ys[k]), fontsize=6.5, color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    n_attacks = 0
    for k in conds:
        pet, attacker, run = k
        if pet == "original" and attacker in ("", "none"):
            ax.scatter(xs[k], ys[k], marker="*", s=140, c="black", zorder=4, label="originals")
        elif attacker not in ("", "none"):
            base = (pet, "none", run)
            n_attacks += 1
            ax.scatter(xs[k], ys[k], marker="x", c="grey", s=30, zorder=2, label="after a recovery attack" if n_attacks == 1 else None)
            has_base = base in xs and base in ys
            if has_base:  # the arrow names the PET, the label only the attacker (18 full names would cover the plot)
                ax.annotate("", (xs[k], ys[k]), (xs[base], ys[base]), arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.7})
            ax.annotate(_safe(attacker if has_base else f"{pet} → {attacker}"), (xs[k], ys[k]), fontsize=6, color="grey",
                        xytext=(4, -8), textcoords="offset points")
    ax.axvline(0.5, ls=":", c="grey", lw=1)
    what = f"privacy AUC ({clf})" if clf else "worst-case privacy AUC (max over classifiers and tiers)"
    ax.set(xlabel=_safe(f"{what} — 0.5 is ideal"), ylabel=_safe(f"EER ({ver}) — lower keeps identity"),
           title=_safe(f"privacy vs utility ({protocol})"))
    ax.set_xlim(0.45, 1.02)
    top = max(ys[k] for k in conds)
    ax.set_ylim(-0.02, max(0.1, min(0.55, top * 1.15 + 0.02)) if math.isfinite(top) else 0.55)
    _legend(ax, len(ax.get_legend_handles_labels()[1]))
    return fig
