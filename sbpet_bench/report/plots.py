"""Report figures (matplotlib, Agg, no pyplot state), returned as PNG bytes.

Each curve takes its PET's colour and its attacker's line style (so "pridss → pp-d" reads as a
dashed pridss), and legends sit outside the axes, so they never cover a curve. A Table-2 run
has 30-odd conditions: 30 curves in one plot are a tangle, so its ROC and DET plots get a panel
per attacker (no attack, after pp-a, ...), side by side on the same axes, each with its own
legend below it. DET curves use normal-deviate (probit) axes with percent ticks, as in
biometric evaluation (ISO/IEC 19795-1). Plots are small enough that two sit side by side on
the report's 1,400-pixel page.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from typing import TYPE_CHECKING

import numpy as np

from .leaderboard import fmt
from .seeds import is_seed_variant

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib and scipy are imported where a plot is drawn: a re-run whose plots are all cached imports neither.

DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99)  # denser ticks collide below 1% on a 4-inch axis
DET_RANGE = (0.0005, 0.995)  # rates of 0 (and 1) are drawn on the axis edge
ATTACK_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 2)))
LEGEND_ROWS = 18  # legend entries per column before another column is added
AXES_INCHES = (3.9, 3.5)  # the plotting area of a single-panel plot; its legend is added beside it
PANEL_INCHES = 2.55  # the plotting area of one panel of a plot split by attacker
PANELS_PER_ROW = 4  # 4 panels and their tick labels fit the report's page width
MAX_CURVES = 10  # a plot with more curves than this (and several attackers) gets a panel per attacker
ATTACK_MARKERS = ("X", "P", "^", "s", "v", "D")  # privacy-utility: one marker per recovery attack
DPI = 100


def _safe(text: str) -> str:
    """Plain text for matplotlib: a '$' in a plugin name must not start mathtext."""
    return str(text).replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


@lru_cache(maxsize=1)
def _code_version() -> str:
    """The drawing code itself (this module and the trade-off helpers) and matplotlib's version: a change redraws."""
    import matplotlib

    h = hashlib.sha256(matplotlib.__version__.encode())
    for name in ("plots.py", "tradeoff.py", "leaderboard.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def cached_figures(cache: Any, make: Callable[..., list[tuple[str, bytes]]], results: dict[str, Any],
                   **options: Any) -> list[tuple[str, bytes]]:
    """``make(results, **options)``, kept in the run's cache (kind "report") under a hash of what the figures are
    drawn from: the conditions and their metrics, the options and the drawing code. A fully cached re-run spent
    most of its time redrawing identical plots; ``cache`` None draws them."""
    if cache is None:
        return make(results, **options)
    inputs = hashlib.sha256(json.dumps(results.get("conditions") or [], sort_keys=True, default=str).encode()).hexdigest()
    key = hashlib.sha256(json.dumps([make.__name__, options, inputs, _code_version()], sort_keys=True, default=str).encode()).hexdigest()[:24]
    stored = cache.get_json("report", key)
    if stored is not None:
        return [(title, base64.b64decode(png)) for title, png in stored]
    figures = make(results, **options)
    cache.put_json("report", key, [[title, base64.b64encode(png).decode("ascii")] for title, png in figures])
    return figures


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
        from matplotlib import colormaps

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
    from matplotlib.figure import Figure

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


def _attacker(cond: dict[str, Any]) -> str:
    return cond.get("attacker") or "none"


def _by_attacker(curves: list) -> list[tuple[str, list]]:
    """Panels: one ("", curves) for a readable number of curves, else one per attacker (no attack first)."""
    attackers = list(dict.fromkeys(_attacker(c) for c, _, _ in curves))
    if len(curves) <= MAX_CURVES or len(attackers) < 2:
        return [("", curves)]
    order = (["none"] if "none" in attackers else []) + [a for a in attackers if a != "none"]
    return [("no attack" if a == "none" else f"after {a}", [t for t in curves if _attacker(t[0]) == a]) for a in order]


def _panel_label(cond: dict[str, Any], panel: str) -> str:
    """In a panel of one attacker the attacker is in the panel's title; the legend names the PET."""
    if not panel:
        return _condition_label(cond)
    return f"{cond.get('pet', '')} [{cond['run']}]" if cond.get("run") else str(cond.get("pet", ""))


def _panel_figure(panels: list[tuple[str, list]], title: str) -> tuple[Figure, list]:
    """One axes per panel, up to PANELS_PER_ROW in a row, each with room for a one-column legend below it."""
    n, cols = len(panels), min(len(panels), PANELS_PER_ROW)
    rows = math.ceil(n / cols)
    legend_h = 0.17 * max(len(c) for _, c in panels) + 0.25
    cell_w, cell_h = PANEL_INCHES + 0.75, PANEL_INCHES + 0.75 + legend_h
    width, height = cols * cell_w + 0.1, rows * cell_h + 0.5
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.suptitle(_safe(title.replace("\n", ", ")), fontsize=11, y=1 - 0.12 / height, va="top")
    axes = []
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y0 = c * cell_w + 0.6, height - 0.5 - r * cell_h - 0.3 - PANEL_INCHES
        axes.append(fig.add_axes((x0 / width, y0 / height, PANEL_INCHES / width, PANEL_INCHES / height)))
    return fig, axes


def _curve_plot(curves: list, title: str, draw, finish) -> Figure:
    """``draw(ax, cond, m, data, label, style)`` draws one curve, ``finish(ax, panel_title, first)`` labels an axes."""
    style = _Styles([c for c, _, _ in curves])
    panels = _by_attacker(curves)
    if len(panels) == 1:
        fig, ax = _figure(len(curves))
        for cond, m, data in curves:  # the originals thin and on top: their curve is often the identity PET's
            on_top = {"lw": 0.9, "zorder": 3} if cond.get("pet") == "original" else {}
            draw(ax, cond, m, data, _condition_label(cond), {**style(cond), **on_top})
        finish(ax, title, True)
        _legend(ax, len(curves))
        return fig
    fig, axes = _panel_figure(panels, title)
    for i, (ax, (panel, members)) in enumerate(zip(axes, panels)):
        for cond, m, data in members:
            # dashed on top: the originals' curve is often the identity PET's, drawn under it
            on_top = {"ls": (0, (4, 2)), "zorder": 3} if cond.get("pet") == "original" else {"ls": "-"}
            draw(ax, cond, m, data, _panel_label(cond, panel), {**style(cond), **on_top})
        finish(ax, panel, i % PANELS_PER_ROW == 0)
        ax.title.set_fontsize(9.5)
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(0.0, -0.2), borderaxespad=0.0, frameon=False, handlelength=2.0)
    return fig


def roc_plots(results: dict[str, Any]) -> list[tuple[str, Figure]]:
    """One ROC plot per classifier, a curve per condition (a panel per attacker when there are many)."""
    by_clf: dict[str, list] = {}
    for cond, m in _metrics(results, "auc"):
        roc = (m.get("extra") or {}).get("roc")
        if roc and roc.get("x"):
            by_clf.setdefault(m.get("evaluator", ""), []).append((cond, m, roc))

    def draw(ax, cond, m, roc, label, style) -> None:
        ax.plot(roc["x"], roc["y"], label=_safe(f"{label} (AUC {fmt(m.get('value'))})"), **{"lw": 1.3, **style})

    def finish(ax, title: str, first: bool) -> None:
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set(xlabel="false positive rate (female called male)", xlim=(0, 1), ylim=(0, 1.01), title=_safe(title))
        if first:
            ax.set_ylabel("true positive rate (male)")

    return [(f"ROC curves, classifier {clf}", _curve_plot(curves, f"ROC — {clf}", draw, finish))
            for clf, curves in sorted(by_clf.items())]


def probit(rate: Any) -> np.ndarray:
    """Normal deviate of an error rate, clipped to the DET plot's range."""
    from scipy.special import ndtri  # what scipy.stats.norm.ppf computes, without importing scipy.stats

    return ndtri(np.clip(np.asarray(rate, dtype=float), *DET_RANGE))


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
    """One DET plot per verifier and protocol, a curve per condition (a panel per attacker when there are many).
    Per-probe-gender protocols (``...@male``) are left out: their numbers are in the leaderboard."""
    groups: dict[tuple[str, str], list] = {}
    for cond, m in _metrics(results, "eer"):
        det = (m.get("extra") or {}).get("det")
        if det and det.get("fmr") and "@" not in str(m.get("protocol", "")):
            groups.setdefault((m.get("evaluator", ""), m.get("protocol", "")), []).append((cond, m, det))

    def draw(ax, cond, m, det, label, style) -> None:
        ax.plot(probit(det["fmr"]), probit(det["fnmr"]), label=_safe(f"{label} (EER {fmt(m.get('value'))})"), **{"lw": 1.3, **style})

    def finish(ax, title: str, first: bool) -> None:
        det_axes(ax)
        ax.set(xlabel="FMR (false match rate)", title=_safe(title))
        if first:
            ax.set_ylabel("FNMR (false non-match rate)")

    return [(f"DET curves, verifier {verifier}, protocol {protocol}",
             _curve_plot(curves, f"DET — {verifier}\n{protocol}", draw, finish))
            for (verifier, protocol), curves in sorted(groups.items())]


def privacy_utility_figures(results: dict[str, Any], max_figures: int = 6, privacy_by: str | None = None) -> list[tuple[str, bytes]]:
    """Privacy AUC (x: the worst case, or ``privacy_by``) against EER (y) per verifier x protocol: a point per PET
    and a line through the variants of one PET (its trade-off curve); then one figure (first protocol, first
    verifier with attacked conditions) with an arrow to each attack on a PET."""
    from .tradeoff import (EER_PROTOCOLS, condition_values, family, heldout_verifiers, privacy_key, privacy_sources,
                           verifier_order)

    values = condition_values(results, ("privacy_auc", "worst_privacy_auc", "eer"))
    sources = privacy_sources(values, privacy_by)
    present = {p for (metric, _, p) in values if metric == "eer"}
    protocols = [p for p in EER_PROTOCOLS if p in present] + sorted(p for p in present - set(EER_PROTOCOLS) if "@" not in p)

    held = heldout_verifiers(results)

    def verifiers(protocol: str) -> list[str]:  # held-out verifiers first: the figure cap keeps them
        return verifier_order({e for (metric, e, p) in values if metric == "eer" and p == protocol}, held)

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
    attackers = list(dict.fromkeys(k[1] for k in conds if k[1] not in ("", "none")))
    fig, ax = _figure(len(curves) + 1 + len(attackers))
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(curves) <= 10 else "tab20"]
    for i, ((name, run), members) in enumerate(sorted(curves.items())):
        members.sort(key=lambda k: xs[k])
        label = name + (f" [{run}]" if run else "")
        # the line joins the PET's strength variants only; its seed variants are points of the same colour
        swept = [k for k in members if not is_seed_variant(k[0])] or members[:1]
        line = ax.plot([xs[k] for k in swept], [ys[k] for k in swept], marker="o", ms=5, lw=1.2 if len(swept) > 1 else 0,
                       zorder=3, label=_safe(label), color=cmap(i % cmap.N))[0]
        seeded = [k for k in members if k not in swept]
        if seeded:
            ax.scatter([xs[k] for k in seeded], [ys[k] for k in seeded], marker="o", s=25, zorder=3, c=[line.get_color()])
        for k in members:  # variants are labelled by their options only, the legend names the PET
            text = k[0][len(name):].strip("[]") if len(members) > 1 else ""
            if text:
                ax.annotate(_safe(text), (xs[k], ys[k]), fontsize=6.5, color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    colours = {key: cmap(i % cmap.N) for i, key in enumerate(sorted(curves))}
    markers = {a: ATTACK_MARKERS[i % len(ATTACK_MARKERS)] for i, a in enumerate(attackers)}
    for a in attackers:  # the legend names each attack's marker once; the colour says whose images were attacked
        ax.scatter([], [], marker=markers[a], s=34, c="grey", label=_safe(f"after {a}"))
    for k in conds:
        pet, attacker, run = k
        if pet == "original" and attacker in ("", "none"):
            # hollow: the identity PET's point is usually right under it
            ax.scatter(xs[k], ys[k], marker="*", s=170, facecolors="none", edgecolors="black", linewidths=1.1, zorder=4,
                       label="originals")
        elif attacker not in ("", "none"):
            base = (pet, "none", run)
            colour = "black" if pet == "original" else colours.get((family(pet), run), "grey")
            ax.scatter(xs[k], ys[k], marker=markers[attacker], c=[colour], s=34, zorder=2, alpha=0.85, linewidths=0)
            if base in xs and base in ys:  # from the PET's point to where the attack takes it
                ax.annotate("", (xs[k], ys[k]), (xs[base], ys[base]),
                            arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.7, "alpha": 0.45, "shrinkA": 3, "shrinkB": 3})
            else:
                ax.annotate(_safe(f"{pet} → {attacker}"), (xs[k], ys[k]), fontsize=6, color="grey", xytext=(4, -8),
                            textcoords="offset points")
    ax.axvline(0.5, ls=":", c="grey", lw=1)
    what = f"privacy AUC ({clf})" if clf else "worst-case privacy AUC (max over classifiers and tiers)"
    ax.set(xlabel=_safe(f"{what} — 0.5 is ideal"), ylabel=_safe(f"EER ({ver}) — lower keeps identity"),
           title=_safe(f"privacy vs utility — {ver}\n{protocol}"))
    ax.set_xlim(0.45, 1.02)
    top = max(ys[k] for k in conds)
    ax.set_ylim(-0.02, max(0.1, min(0.55, top * 1.15 + 0.02)) if math.isfinite(top) else 0.55)
    _legend(ax, len(ax.get_legend_handles_labels()[1]))
    return fig
