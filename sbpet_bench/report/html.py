"""One self-contained HTML page: no network, inline CSS/JS, plots and images as data: URIs.

Every string that comes from a run (plugin names, options, file names, diagnostics)
goes through :func:`e` (html.escape). A Content-Security-Policy allows only the
page's own script (by hash) and data: images, as a second line of defence.
"""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from pathlib import Path
from typing import Any

from .leaderboard import HEADLINE_NOTE, Column, Leaderboard, fmt, is_number
from .merge import dataset_label, sections
from .plots import cached_figures, det_figures, privacy_utility_figures, roc_figures
from .seeds import describe as describe_seeds
from .seeds import seed_groups
from .seeds import table as seed_table
from .tradeoff import describe, table, tradeoff

MAX_SAMPLES = 32

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
.wrap{overflow-x:auto}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}td.name,th.name{text-align:left}
tr.ref td{background:#f8f8ff;font-style:italic}tr.failed td{color:#a00}
td.best{font-weight:bold;background:#eaf6ea}.meta td,.meta th{text-align:left;white-space:normal}
td.name,th.name{position:sticky;left:0;background:#fff;z-index:1}th.name{z-index:2;background:#f4f4f4}
table.sortable th{white-space:normal;min-width:3.5em;max-width:11em;vertical-align:bottom}table.sortable th.name{white-space:nowrap;max-width:none}
#headline th,[id^="headline-"] th{max-width:8.5em}.plugins td:nth-child(-n+3){white-space:nowrap}td.insample{color:#735}.by{display:block;font-size:10px;color:#666;font-style:normal}.legend{font-size:12px;color:#444}
.plots img{max-width:100%;height:auto;margin:6px 4px;border:1px solid #eee;vertical-align:top}
.grid td{vertical-align:top;text-align:center}.grid img{width:112px;height:112px;image-rendering:pixelated}
.cap{font-size:11px;color:#444;text-align:left}.missing{width:112px;height:112px;background:#eee;display:inline-block}
details{margin:2px 0}pre{white-space:pre-wrap;font-size:11px}
"""

JS = """
(function(){
function val(td){var v=td.getAttribute('data-v');if(v===null||v==='')return null;var f=parseFloat(v);return isNaN(f)?v.toLowerCase():f;}
function sortBy(t,i,asc){var b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows);
rows.sort(function(r,s){var x=val(r.cells[i]),y=val(s.cells[i]);if(x===null)return 1;if(y===null)return -1;
if(x<y)return asc?-1:1;if(x>y)return asc?1:-1;return 0;});
rows.forEach(function(r){b.appendChild(r);});
Array.prototype.forEach.call(t.tHead.rows[0].cells,function(h,j){h.setAttribute('aria-sort',j===i?(asc?'ascending':'descending'):'none');});}
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(t){
Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){sortBy(t,i,th.getAttribute('aria-sort')!=='ascending');});});});
var m=/sort(?:-([\\w-]+))?=(-?)(\\d+)/.exec(location.hash);
if(m){var t=document.getElementById(m[1]||'leaderboard');if(t)sortBy(t,parseInt(m[3],10),m[2]!=='-');}
document.body.setAttribute('data-ready','1');
})();
"""


def e(x: Any) -> str:
    return escape(str(x), quote=True)


def breakable(label: str) -> str:
    """An escaped column label that wraps at its separators (``auc@<wbr>faceapi-gender<wbr>[male-positive]``), never
    inside a name: narrow headers keep a table of many columns on fewer screens."""
    out = e(label)
    for sep in ("@", ":", ",", "_"):
        out = out.replace(sep, sep + "<wbr>")
    return out.replace("[", "<wbr>[").replace("→", "<wbr>→")


def _data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def _image_uri(run_dir: Path | None, rel: str) -> str | None:
    """A sample image as a data: URI; only files inside the run directory (results.json is not trusted with paths)."""
    if run_dir is None or not rel:
        return None
    root = run_dir.resolve()
    path = (root / rel).resolve()
    if root not in path.parents or not path.is_file():
        return None
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(path.suffix.lower())
    return _data_uri(path.read_bytes(), mime) if mime else None


def _cell_td(cell, column: Column, headline: bool) -> str:
    if cell is None or cell.value is None:
        return '<td data-v=""></td>'
    v = cell.value if is_number(cell.value) else ""
    tip = [f"95% CI [{fmt(cell.ci_low)}, {fmt(cell.ci_high)}]" if is_number(cell.ci_low) else "", f"n={cell.n}" if cell.n is not None else ""]
    tip += [f"reached by {cell.by}" if cell.by else "", "in-sample: the PET uses this evaluator internally" if cell.in_sample else "",
            "not distinguishable from chance" if cell.distinguishable is False else ""]
    classes = " ".join(c for c in ("best" if cell.best else "", "insample" if cell.in_sample else "") if c)
    cls = f' class="{classes}"' if classes else ""
    text = (cell.text(interval=True) if column.per_row_evaluator else cell.text(ci=False)) if headline else cell.text()
    by = f'<span class="by">{e(cell.by)}</span>' if headline and cell.by else ""
    title = e("; ".join(t for t in tip if t))
    return f'<td data-v="{e(v)}"{cls} title="{title}">{e(text)}{by}</td>'


def _leaderboard_table(board: Leaderboard, columns: list[Column], table_id: str, headline: bool = False) -> str:
    head = ['<th class="name" title="PET → attacker">condition</th>', '<th title="images scored">N</th>']
    for c in columns:
        tip = {True: "higher is better", False: "lower is better"}.get(c.higher_is_better, "neither higher nor lower is better")  # type: ignore[arg-type]
        head.append(f'<th title="{e(c.key + ": " + c.convention + " (" + tip + ")")}">{breakable(c.short_label if headline else c.label)}</th>')
    body = []
    for r in board.rows:
        cls = "ref" if r.is_reference else ("failed" if r.status != "ok" else "")
        tds = [f'<td class="name" data-v="{e(r.label)}">{e(r.label)}{"" if r.status == "ok" else " (" + e(r.status) + ")"}</td>',
               f'<td data-v="{e(r.n_images if r.n_images is not None else "")}">{e(r.n_images if r.n_images is not None else "")}</td>']
        tds += [_cell_td(r.cells.get(c.key), c, headline) for c in columns]
        body.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>")
    return (f'<div class="wrap"><table id="{e(table_id)}" class="sortable"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _legend(board: Leaderboard) -> str:
    return "".join(f'<p class="legend">{e(text)}</p>' for text in board.legend)


def _equal_privacy(results: dict[str, Any], privacy_by: str | None) -> str:
    t = tradeoff(results, privacy_by)
    if t is None or not t.comparisons:
        return ("<p>No comparison: it needs a PET with two or more variants in the run (e.g. "
                "<code>--pets \"pridss,blur[sigma=1],blur[sigma=3]\"</code>) whose privacy AUCs span another PET's.</p>")
    head, rows = table(t)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<p>{e(describe(t))}</p><div class=\"wrap\"><table><thead><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}"
            f"</tr></thead><tbody>{body}</tbody></table></div>")


def _seed_spread(results: dict[str, Any], board: Leaderboard, table_id: str, h: str) -> str:
    """The spread-over-seeds section (heading, note, sortable table); empty when no PET ran with several seeds."""
    groups = seed_groups(results, board)
    if not groups:
        return ""
    head, rows = seed_table(groups)
    text = 4  # condition, seeds, metric and per-seed values read as text (left-aligned); the statistics as numbers
    ths = "".join(f'<th class="name">{e(x)}</th>' if i < text else f"<th>{breakable(x)}</th>" for i, x in enumerate(head))
    name = ' class="name"'
    body = "".join("<tr>" + "".join(f'<td{name if i < text else ""} data-v="{e(c)}">{e(c)}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return (f'<{h}>Spread over seeds</{h}><p>{e(describe_seeds(results))}</p><div class="wrap"><table id="{e(table_id)}" class="sortable">'
            f"<thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table></div>")


def _figures(figs: list[tuple[str, bytes]], empty: str) -> str:
    if not figs:
        return f"<p>{e(empty)}</p>"
    return '<div class="plots">' + "".join(f'<img alt="{e(title)}" title="{e(title)}" src="{_data_uri(png)}">' for title, png in figs) + "</div>"


def _column_order(samples: list[dict[str, Any]], results: dict[str, Any]) -> list[str]:
    """original | each PET | each PET → attacker, in the order of the run's conditions."""
    keys: list[str] = []
    for s in samples:
        for k in s.get("images", {}):
            if k not in keys:
                keys.append(k)
    order = {f"{c.get('pet')}/{c.get('attacker', 'none')}": i for i, c in enumerate(results.get("conditions", []))}
    return sorted(keys, key=lambda k: (k != "original/none", not k.endswith("/none"), order.get(k, len(order)), k))


def _key_label(key: str) -> str:
    pet, _, attacker = key.rpartition("/")  # PET names may contain '/', attacker names are last
    return pet if attacker in ("", "none") else f"{pet} → {attacker}"


def _caption(sample: dict[str, Any], key: str) -> str:
    lines = [f"P(male) {e(c)}: {fmt(p)}" for c, p in sorted((sample.get("p_male", {}).get(key) or {}).items())]
    lines += [f"sim {e(v)}: {fmt(s)}" for v, s in sorted((sample.get("similarity", {}).get(key) or {}).items())]
    return "<br>".join(lines)


def _diagnostics(sample: dict[str, Any]) -> str:
    diag = sample.get("diagnostics") or {}
    if not diag:
        return ""
    parts = []
    for key, d in sorted(diag.items()):
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(_short(v))}</td></tr>" for k, v in (d.items() if isinstance(d, dict) else [("value", d)]))
        parts.append(f"<details><summary>{e(key)} diagnostics</summary><table class=meta>{rows}</table></details>")
    return "".join(parts)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v)
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 300 else text[:300] + "…"


def _image_grid(results: dict[str, Any], run_dir: Path | None) -> str:
    samples = results.get("samples") or []
    if not samples:
        return "<p>No sample images in this run.</p>"
    if not any(s.get("images") for s in samples):  # published without faces (sbpet report --no-images)
        return (f"<p>The {len(samples)} sample faces are left out of this report (its data may not be redistributed); "
                "the run's own report.html shows them.</p>")
    shown = samples[:MAX_SAMPLES]
    keys = _column_order(shown, results)
    head = "<th>face</th>" + "".join(f"<th>{e(_key_label(k))}</th>" for k in keys)
    rows = []
    for s in shown:
        gender = {1: "male", 0: "female"}.get(s.get("gender"), "?")
        cells = [f'<td class="cap">{e(s.get("identity", ""))}<br>{e(gender)}<br><small>{e(s.get("id", ""))}</small>{_diagnostics(s)}</td>']
        for k in keys:
            rel = (s.get("images") or {}).get(k)
            uri = _image_uri(run_dir, rel) if rel else None
            img = f'<img alt="{e(k)}" src="{uri}">' if uri else '<span class="missing" title="image missing"></span>'
            cells.append(f'<td>{img}<div class="cap">{_caption(s, k)}</div></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = ("<p>Original | each PET's protected image | recovered by each attacker, with P(male) per classifier and cosine "
            "similarity to the original per verifier.</p>")
    note += f"<p>First {len(shown)} of {len(samples)} samples.</p>" if len(samples) > len(shown) else ""
    return f'{note}<div class="wrap"><table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _meta(results: dict[str, Any], general: bool = True, data: bool = True) -> str:
    ds, cfg = results.get("dataset") or {}, results.get("config") or {}
    items = []
    if general:
        items += [("sbpet", results.get("sbpet_version")), ("created", results.get("created")), ("git commit", results.get("git_commit")),
                  ("command", " ".join(map(str, results.get("command") or [])))]
    if data:
        items += [("data", f"{ds.get('path', '')} ({ds.get('source', '')}), fingerprint {ds.get('fingerprint', '')}"),
                  ("images", f"{ds.get('n_eval', '')} evaluated, {ds.get('n_train', '')} train, {ds.get('n_pool', '')} pool, {len(ds.get('skipped') or [])} skipped"),
                  ("protocol", f"per_class={cfg.get('per_class')}, seed={cfg.get('seed')}, image_size={cfg.get('image_size')}, bootstrap={cfg.get('bootstrap')}, device={cfg.get('device')}")]
    if results.get("runs"):
        items.append(("merged runs", ", ".join(str(r.get("dir", "")) for r in results["runs"])))
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v if v is not None else '')}</td></tr>" for k, v in items)
    return f"<table class=meta>{rows}</table>"


def _plugins(results: dict[str, Any]) -> str:
    """One row per plugin configuration: the informed tier's classifiers, one per condition and training set, are
    identical rows but for their training images, so they are one row with a count."""
    groups: dict[str, list] = {}
    for p in results.get("plugins") or []:
        what = json.dumps([p.get(k) for k in ("kind", "name", "version", "origin", "options", "models", "trained_on")],
                          sort_keys=True, default=str)
        groups.setdefault(what, []).append(p)
    rows = []
    for members in groups.values():
        p = members[0]
        count = f"{len(members)}×" if len(members) > 1 else ""
        trained = f"{'each ' if count else ''}trained on {p['trained_on']}" if p.get("trained_on") else ""
        note = ", ".join(t for t in (count, trained) if t)
        trained = f" ({note})" if note else ""
        rows.append(
            f"<tr><td>{e(p.get('kind', ''))}</td><td>{e(p.get('name', ''))}<span class=by>{e(trained)}</span></td><td>{e(p.get('version', ''))}</td>"
            f"<td>{e(p.get('origin', ''))}</td><td><pre>{e(json.dumps(p.get('options') or {}, sort_keys=True, default=str))}</pre></td>"
            f"<td>{e(', '.join(map(str, p.get('models') or {})))}</td></tr>")
    return (f"<table class='meta plugins'><tr><th>kind</th><th>name</th><th>version</th><th>origin</th><th>options</th><th>models</th></tr>"
            f"{''.join(rows)}</table>" if rows else "<p>None recorded.</p>")


def _problems(results: dict[str, Any]) -> str:
    items = [f"warning: {w}" for w in results.get("warnings") or []]
    for c in (c for part in sections(results) for c in part.get("conditions") or []):
        items += [f"{c.get('pet')}/{c.get('attacker')}: {err.get('plugin', '')} {err.get('stage', '')}: {err.get('message', '')}" for err in c.get("errors") or []]
    items += [f"error: {err.get('message', err) if isinstance(err, dict) else err}" for err in results.get("errors") or []]
    return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>" if items else "<p>None.</p>"


def _conventions(board: Leaderboard) -> str:
    seen: dict[str, str] = {}
    for c in board.columns:
        seen.setdefault(c.metric, c.convention)
    return "<dl>" + "".join(f"<dt><b>{e(m)}</b></dt><dd>{e(text)}</dd>" for m, text in seen.items()) + "</dl>"


def _section(results: dict[str, Any], board: Leaderboard, run_dir: Path | None, privacy_by: str | None, n: int, h: str,
             cache: Any = None) -> str:
    """One data set's leaderboard, plots and samples; ``n`` numbers its tables' ids (1: "headline", "leaderboard");
    ``cache`` (the run's) keeps the plots, so an unchanged run does not redraw them."""
    suffix = "" if n == 1 else f"-{n}"
    n_fail = sum(1 for r in board.rows if r.status != "ok")
    intro = (f"<p>{len(board.rows)} conditions{f', {n_fail} failed' if n_fail else ''}. ↑ higher is better, ↓ lower is better; "
             "best of the protected conditions in bold (the originals row, in italics, is the reference). Click a header to sort.</p>")
    full = _leaderboard_table(board, board.columns, "leaderboard" + suffix)
    seeds = _seed_spread(results, board, "seeds" + suffix, h)
    if board.headline:
        top = (f"<{h}>Headline: the worst case</{h}>{intro}<p>{e(HEADLINE_NOTE)} Worst cases: value [95% CI] and who reached it; the other columns: the value (hover for its CI, or see all metrics).</p>"
               f"{_leaderboard_table(board, board.headline_columns, 'headline' + suffix, headline=True)}{_legend(board)}{seeds}"
               f"<{h}>All metrics</{h}><details><summary>{len(board.columns)} columns: every metric, evaluator and protocol "
               "(value ± half the 95% CI; hover for the interval)</summary>" + full + "</details>")
    else:
        top = f"<{h}>Leaderboard</{h}>{intro}<p>Value ± half the 95% bootstrap CI (hover for the interval).</p>{full}{_legend(board)}{seeds}"
    has_worst = any(m.get("metric") == "worst_privacy_auc" for c in results.get("conditions") or [] for m in c.get("metrics") or [])
    privacy = (f"privacy AUC of {privacy_by}" if privacy_by else "worst-case privacy AUC (largest over classifiers and tiers)" if has_worst
               else "privacy AUC of each classifier (this run has no worst case)")
    return f"""{top}
<{h}>Privacy vs utility</{h}><p>x: {e(privacy)}.</p>{_figures(cached_figures(cache, privacy_utility_figures, results, privacy_by=privacy_by), "Needs privacy_auc (gender metric) and eer (verification metric).")}
<{h}>At equal privacy</{h}>{_equal_privacy(results, privacy_by)}
<{h}>ROC curves (gender classifiers)</{h}>{_figures(cached_figures(cache, roc_figures, results), "No ROC curves in these results.")}
<{h}>DET curves (verifiers)</{h}><p>Normal-deviate (probit) axes; rates of 0 lie on the axes' edge; the dotted diagonal is FMR = FNMR.</p>{_figures(cached_figures(cache, det_figures, results), "No DET curves in these results.")}
<{h}>Sample images</{h}>{_image_grid(results, run_dir)}
<{h}>Metric conventions</{h}>{_conventions(board)}"""


def render_html(results: dict[str, Any], boards: list[Leaderboard] | Leaderboard, run_dir: Path | None, privacy_by: str | None = None,
                cache: Any = None) -> str:
    script_hash = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    parts = sections(results)
    boards = [boards] if isinstance(boards, Leaderboard) else list(boards)
    if len(parts) == 1:
        title = f"sbpet report — {(results.get('dataset') or {}).get('path', '')}"
        body = _meta(results) + _section(parts[0], boards[0], run_dir, privacy_by, 1, "h2", cache)
    else:
        title = f"sbpet report — {len(parts)} data sets"
        toc = "".join(f'<li><a href="#dataset-{i + 1}">{e(dataset_label(p))}</a></li>' for i, p in enumerate(parts))
        body = _meta(results, data=False) + f"<p>Numbers are comparable within a data set only.</p><ul>{toc}</ul>"
        body += "".join(f'<section id="dataset-{i + 1}"><h2>Data set {e(dataset_label(p))}</h2>{_meta(p, general=False)}'
                        f'{_section(p, b, run_dir, privacy_by, i + 1, "h3", cache)}</section>' for i, (p, b) in enumerate(zip(parts, boards)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{e(csp)}">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{e(title)}</title><style>{CSS}</style></head>
<body><h1>{e(title)}</h1>
{body}
<h2>Plugins</h2>{_plugins(results)}
<h2>Warnings and errors</h2>{_problems(results)}
<script>{JS}</script>
</body></html>
"""
