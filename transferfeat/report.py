"""`tf report`: one self-contained HTML file a researcher can mail to a co-author.

A first page a co-author understands at a glance: what the study is, the numbers the paper states
(computed from these logs, and against another run with ``--compare``), and the paper's figures
(inline SVG, each once, at one size). Then every net (sortable, filterable, its curves with axes on
a click), an overview of every net's curve by family, the nets that need attention (failed,
diverged, blocked, damaged, at chance), and provenance (the command, tf's version and source
commit, the study's and every log's digest). No external request of any kind; it reads at 800 and
1400 pixels wide and prints.
"""
from __future__ import annotations

import html
import io
import json
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from . import atomic
from .results import headlines

FIGURES = ("fig2_top", "fig2_bottom_annotated", "fig3", "reduced")     # each once (fig2_bottom is in the annotated one)
CAPTIONS = {
    "fig2_top": "Figure 2 (top): each net's top-1 (the mean of its 10 best tests), by n.",
    "fig2_bottom_annotated": "Figure 2 (bottom): the means, from baseB at n = 0, with the paper's regions 2–5.",
    "fig3": "Figure 3: the man-made/natural split and random untrained filters (top); accuracy relative to each "
            "reference, acc − ref (bottom).",
    "reduced": "Top-1 against the number of training images per class, linear and log–log.",
}
ABOUT = """Yosinski, Clune, Bengio and Lipson (2014) asked how general or specific each layer of a deep
net is. The classes are split into two halves, <b>A</b> and <b>B</b>, and a <b>base net</b> is trained on
each (<b>baseA</b>, <b>baseB</b>). For each <b>n</b> from 1 to 7, a new net on half B gets its layers
1…n copied from a base net and trains the rest from scratch: copied from baseB it is a <b>selffer</b>
(<b>BnB</b>), from baseA a <b>transfer</b> net (<b>AnB</b>); the copied layers are frozen, or
fine-tuned with the rest (<b>+</b>: BnB⁺, AnB⁺). Where BnB drops below baseB, frozen layers broke
<i>fragile co-adaptation</i> with the layers above (region 2), which fine-tuning recovers (3); where
AnB drops below BnB, the copied features are <i>specific</i> to half A (4); where AnB⁺ rises above
baseB, transfer plus fine-tuning <i>generalizes better</i> (5). A net's number is the mean of its 10
best tests' top-1 accuracy; a point is the mean over the nets of the design (several random splits)."""


def _svg(fig) -> str:
    import matplotlib.pyplot as plt
    from .plots import style
    buf = io.StringIO()
    with style():
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)   # RDF, dates
    return re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1', text, count=1)   # sized by the page


def _thin(its, values, n: int = 60) -> list:
    """[first iteration, last iteration, [at most ``n`` values evenly spread between]] (4 digits):
    enough for a curve, small enough for 170 nets in a few hundred KB."""
    its, values = np.asarray(its), np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    its, values = its[ok], values[ok]
    if not len(its):
        return [0, 0, []]
    keep = np.unique(np.linspace(0, len(its) - 1, min(n, len(its))).astype(int))
    return [int(its[0]), int(its[-1]), [float(f"{v:.4g}") for v in values[keep]]]


def _schedule(d, iterations: int) -> list:
    """The learning rate the net's solver gives at each iteration (the cached logs keep no lr lines)."""
    from .errors import Error
    from .netspec import learning_rate, read_solver
    try:
        solver = read_solver(d.solver)
    except (Error, OSError):
        return [0, 0, []]
    its = np.linspace(0, max(iterations, 1), 60).astype(int)
    step = lambda it: sum(it >= v for v in solver["stepvalue"])   # noqa: E731
    return _thin(its, [learning_rate(solver, int(it), step(it)) for it in its])


def _commit() -> str:
    """tf's source commit when it runs from a git checkout ("" otherwise)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")) if out.returncode == 0 else ""


def provenance(folder, summary, logs, engines, other_label=None) -> tuple[list, list]:
    """([(what, value)], [(log file, bytes, sha256)]): how this report was made, from what."""
    study = folder.study
    try:
        tf = version("transferfeat")
    except PackageNotFoundError:
        tf = "?"
    commit = _commit()
    rows = [("command", " ".join(["tf"] + sys.argv[1:]) if Path(sys.argv[0]).name in ("tf", "transferfeat") else
             " ".join(sys.argv)), ("generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
            ("transferfeat", tf + (f", source commit {commit}" if commit else "")),
            ("python", f"{platform.python_version()} on {platform.system()} {platform.machine()}"),
            ("results folder", str(folder.root.resolve())),
            ("study", f"{study.config.name} ({study.path}), sha256 {atomic.sha256(study.path)}"),
            ("nets", f"{len(summary['nets'])} of {len(study.nets)} with logs")]
    for name in ("torch", "numpy", "matplotlib"):
        try:
            rows.append((name, version(name)))
        except PackageNotFoundError:
            pass
    if "caffe" in engines:
        try:
            from .engines.caffe import find_tool, version as caffe_version
            rows.append(("caffe", caffe_version(find_tool("caffe"))))
        except Exception:                                            # noqa: BLE001 - provenance only: no noise
            pass
    if other_label:
        rows.append(("compared with", other_label))
    files = [(str(p.relative_to(folder.root)), p.stat().st_size, atomic.sha256(p))
             for log in logs.values() for p in (Path(s.path) for s in log.segments) if p.is_file()]
    return rows, sorted(files)


def _headline_rows(study, summary, other) -> str:
    mine = {h["key"]: h for h in headlines(study, summary)}
    theirs = {h["key"]: h for h in headlines(study, other)} if other else {}
    out = []
    for key, h in mine.items():
        ref = ""
        if key == "natman":
            ref = f"random splits {h['reference']:+.3f}"
        elif h["reference"] is not None:
            what = "baseB" if key != "random" else "no frozen layer"
            ref = f"{h['value'] - h['reference']:+.3f} vs {what} {h['reference']:.3f}"
        o = theirs.get(key)
        cmp_cell = f"<td class='num'>{o['value']:.3f}</td><td class='num'>{h['value'] - o['value']:+.3f}</td>" if o else (
            "<td></td><td></td>" if other else "")
        out.append(f"<tr><th>{html.escape(h['label'])}<div class='means'>{html.escape(h['means'])}</div></th>"
                   f"<td class='num big'>{h['value']:.3f}</td><td class='ref'>{html.escape(ref)}</td>{cmp_cell}</tr>")
    return "".join(out)


def build(folder, summary: dict, logs: dict, rows: list, other: dict = None, labels=("mine", "other")) -> str:
    """The report's HTML text. ``rows``: `tf status` rows; ``logs``: net -> NetLog (for curves)."""
    from .plots import figures
    study = folder.study
    import matplotlib.pyplot as plt
    figs = []
    for stem, fig, _ in figures(study, summary, other, labels):
        if stem in FIGURES:
            figs.append((stem, _svg(fig)))
        else:
            plt.close(fig)
    state = {r["name"]: r for r in rows}
    nets = []
    for net in study.nets.values():
        m = summary["nets"].get(net.name, {})
        o = (other or {}).get("nets", {}).get(net.name, {})
        best10 = m.get("top1_top10_mean")
        health = m.get("health", "")
        nets.append({"name": net.name, "family": net.family, "base": net.base or "", "n": net.n,
                     "engine": m.get("engine") or state.get(net.name, {}).get("engine") or "",
                     "status": state.get(net.name, {}).get("status", "no log"), "health": health if health != "ok" else "",
                     "iterations": m.get("iterations"), "max_iter": study.max_iter(net), "last": m.get("top1_last"),
                     "best": m.get("top1_best"), "top10": best10,
                     "delta": (best10 - o["top1_top10_mean"]) if best10 is not None and o.get("top1_top10_mean") is not None else None})
    curves = {name: {"loss": _thin(*log.loss), "acc": _thin(list(log.accuracy), list(log.accuracy.values())),
                     "lr": _thin(*log.lr) if len(log.lr[0]) else _schedule(folder.net(name), log.iterations)}
              for name, log in logs.items()}
    attention = [(r["name"], r["status"]) for r in rows if r["state"] in ("failed", "diverged", "blocked", "damaged",
                                                                          "unverified")]
    attention += [(n, f"ended at chance: the mean of its 10 best tests is {m['top1_top10_mean']:.4f} for "
                      f"{m['classes']} classes") for n, m in summary["nets"].items() if m.get("health") == "at chance"]
    facts, files = provenance(folder, summary, logs, {n["engine"] for n in nets}, labels[1] if other else None)
    compare_head = (f"<th>{html.escape(labels[1])}</th><th>difference</th>" if other else "")
    missing = summary.get("missing", [])
    return PAGE.format(
        title=html.escape(f"{study.config.name}: {labels[0]} — transferfeat report"),
        heading=html.escape(f"How transferable are features? The {study.config.name} study, {labels[0]}"),
        about=ABOUT,
        counts=html.escape(f"{len(summary['nets'])} of {len(study.nets)} nets have logs; "
                           f"{len(attention)} need attention."),
        mine=html.escape(labels[0]), compare_head=compare_head,
        headlines=_headline_rows(study, summary, other) or "<tr><td>no series yet: no net has logs</td></tr>",
        figures="\n".join(f'<figure id="{stem}">{svg}<figcaption>{html.escape(CAPTIONS[stem])}</figcaption></figure>'
                          for stem, svg in figs),
        attention="".join(f"<li><b>{html.escape(n)}</b>: {html.escape(s)}</li>" for n, s in attention) or "<li>none</li>",
        missing=html.escape(" ".join(missing)) or "none",
        provenance="".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts),
        logs="".join(f"<tr><td>{html.escape(f)}</td><td class='num'>{b}</td><td><code>{d}</code></td></tr>"
                     for f, b, d in files),
        nlogs=len(files),
        delta_head="<th data-key='delta' data-type='num'>Δ vs " + html.escape(labels[1]) + "</th>" if other else "",
        data=json.dumps({"nets": nets, "curves": curves, "compare": other is not None,
                         "families": list(dict.fromkeys(n.family for n in study.nets.values()))},
                        separators=(",", ":")).replace("</", "<\\/"),
    )


def write(folder, summary, logs, rows, out, other=None, labels=("mine", "other")) -> int:
    text = build(folder, summary, logs, rows, other, labels)
    atomic.write_text(out, text)
    return len(text.encode())


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
*, *::before, *::after {{ box-sizing: border-box; }}
body {{ font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #222; background: #fff; }}
main {{ max-width: 1120px; margin: 0 auto; padding: 1.2em 2em 3em; }}
h1 {{ font-size: 1.6em; line-height: 1.25; margin: 0.4em 0; }}
h2 {{ margin-top: 1.8em; border-bottom: 1px solid #ddd; font-size: 1.3em; }}
nav {{ display: flex; flex-wrap: wrap; gap: 0.3em 1.2em; margin: 0.8em 0; font-size: 0.95em; }}
.about {{ max-width: 48em; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 3px 8px; text-align: left; vertical-align: top; }}
#summary {{ width: 100%; }} #summary tbody tr {{ border-top: 1px solid #eee; }}
#summary th {{ font-weight: 600; }} #summary td.big {{ font-size: 1.3em; font-weight: 600; }}
#summary .means {{ color: #555; font-size: 0.9em; font-weight: normal; max-width: 40em; }}
#summary td.ref {{ white-space: nowrap; color: #333; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 1.2em 0; }} figure svg {{ width: 100%; height: auto; display: block; }}
figcaption {{ color: #444; font-size: 0.95em; }}
#nets {{ width: 100%; font-size: 0.92em; }}
#nets th {{ cursor: pointer; background: #f0f0f0; position: sticky; top: 0; white-space: nowrap; }}
#nets th.asc::after {{ content: " ▲"; }} #nets th.desc::after {{ content: " ▼"; }}
#nets tr:nth-child(even) {{ background: #fafafa; }}
#nets tr.net:hover {{ background: #eef; cursor: pointer; }}
#nets td.flag {{ color: #b00000; font-weight: 600; }}
tr.curves td {{ background: #fff; }}
.curve-row {{ display: flex; flex-wrap: wrap; gap: 8px; }} svg.curve {{ width: 330px; max-width: 100%; height: 190px; }}
#filter {{ width: 22em; max-width: 100%; padding: 4px; font: inherit; }}
.family {{ margin: 1em 0; }} .grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 6px; }}
.mini {{ border: 1px solid #e4e4e4; padding: 2px; font-size: 11px; }} .mini svg {{ width: 100%; height: 60px; display: block; }}
.mini.flag {{ border-color: #d88; }}
details summary {{ cursor: pointer; }}
code {{ font-size: 0.85em; word-break: break-all; }}
@media (max-width: 900px) {{ main {{ padding: 0.8em 12px 2em; }} body {{ font-size: 15px; }} h1 {{ font-size: 1.35em; }} }}
@media print {{ nav, #filter, #shown {{ display: none; }} main {{ max-width: none; padding: 0; }}
  figure {{ break-inside: avoid; }} #nets th {{ position: static; }} }}
</style></head><body><main>
<h1>{heading}</h1>
<p class="about">{about}</p>
<p><b>{counts}</b></p>
<nav><a href="#summary-h">What these logs show</a><a href="#figures-h">Figures</a><a href="#nets-h">Every net</a>
<a href="#overview-h">Curves by family</a><a href="#attention-h">Needs attention</a><a href="#provenance-h">Provenance</a></nav>
<h2 id="summary-h">What these logs show</h2>
<div class="scroll"><table id="summary"><thead><tr><th>from these logs: what it means</th><th>{mine}</th><th>against</th>{compare_head}</tr></thead>
<tbody>{headlines}</tbody></table></div>
<h2 id="figures-h">Figures</h2>
{figures}
<h2 id="nets-h">Every net</h2>
<p><input id="filter" type="search" placeholder="filter: a name, family, engine or status">
<span id="shown"></span>. Click a column to sort it, a net to see its training curves.</p>
<div class="scroll"><table id="nets"><thead><tr>
<th data-key="name">net</th><th data-key="family">family</th><th data-key="base">base</th>
<th data-key="n" data-type="num">n</th><th data-key="engine">engine</th><th data-key="status">status</th>
<th data-key="health">flag</th>
<th data-key="iterations" data-type="num">iterations</th><th data-key="last" data-type="num">top-1 last</th>
<th data-key="best" data-type="num">best</th><th data-key="top10" data-type="num">mean of 10 best</th>{delta_head}
</tr></thead><tbody></tbody></table></div>
<h2 id="overview-h">Curves by family</h2>
<p>Validation top-1 against iteration for every net with logs, one small chart each (the y axis from 0 to 1,
the x axis the net's whole schedule); click one to open it in the table.</p>
<div id="overview"></div>
<h2 id="attention-h">Needs attention</h2><ul id="attention">{attention}</ul>
<h2>Nets without logs</h2><p id="missing">{missing}</p>
<h2 id="provenance-h">Provenance</h2><div class="scroll"><table id="provenance">{provenance}</table></div>
<details><summary>the {nlogs} log files read, with their sha256</summary>
<div class="scroll"><table id="logs"><tr><th>file</th><th>bytes</th><th>sha256</th></tr>{logs}</table></div></details>
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const body = document.querySelector("#nets tbody");
const heads = Array.from(document.querySelectorAll("#nets th"));
const keys = heads.map(h => h.dataset.key);
let sortKey = null, sortDir = 1;
const fmt = (k, v) => v === null || v === undefined ? "" :
  (typeof v === "number" && !["n", "iterations", "max_iter"].includes(k) ? (k === "delta" && v > 0 ? "+" : "") + v.toFixed(4) : String(v));
function render() {{
  const q = document.getElementById("filter").value.trim().toLowerCase();
  let rows = DATA.nets.filter(r => !q || ["name", "family", "engine", "status", "base", "health"].some(k => String(r[k]).toLowerCase().includes(q)));
  if (sortKey) rows.sort((a, b) => {{
    const x = a[sortKey], y = b[sortKey];
    if (x === y) return 0; if (x === null || x === "") return 1; if (y === null || y === "") return -1;
    return (x < y ? -1 : 1) * sortDir; }});
  body.replaceChildren(...rows.map(r => {{
    const tr = document.createElement("tr"); tr.className = "net"; tr.dataset.name = r.name;
    for (const k of keys) {{ const td = document.createElement("td"); td.textContent = fmt(k, r[k]);
      if (typeof r[k] === "number") td.className = "num"; if (k === "health" && r[k]) td.className = "flag";
      tr.appendChild(td); }}
    tr.addEventListener("click", () => toggle(tr)); return tr; }}));
  document.getElementById("shown").textContent = rows.length + " of " + DATA.nets.length + " nets";
}}
function ticks(lo, hi, n) {{ const out = []; for (let i = 0; i < n; i++) out.push(lo + (hi - lo) * i / (n - 1)); return out; }}
const num = (v, log) => log ? v.toExponential(1) : (Math.abs(v) >= 1000 ? Math.round(v).toString() : v.toPrecision(3));
function chart(curve, title, unit, logy, w, h) {{
  const [first, last, values] = curve;
  let s = "<svg class='curve' viewBox='0 0 " + w + " " + h + "' role='img' aria-label='" + title + "'>" +
    "<text x='" + (w / 2) + "' y='14' font-size='13' text-anchor='middle'>" + title + "</text>";
  if (!values.length) return s + "<text x='60' y='80' font-size='12'>no data</text></svg>";
  const L = 58, R = 10, T = 22, B = 38;
  const xs = values.map((v, i) => values.length > 1 ? first + (last - first) * i / (values.length - 1) : first);
  const ys = values.map(v => logy ? Math.log10(Math.max(v, 1e-12)) : v);
  const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  let y0 = Math.min(...ys), y1 = Math.max(...ys); if (y1 === y0) {{ y1 += 1e-3; y0 -= 1e-3; }}
  const X = x => L + (w - L - R) * (x - x0) / (x1 - x0), Y = y => h - B - (h - T - B) * (y - y0) / (y1 - y0);
  s += "<line x1='" + L + "' y1='" + (h - B) + "' x2='" + (w - R) + "' y2='" + (h - B) + "' stroke='#444'/>" +
       "<line x1='" + L + "' y1='" + T + "' x2='" + L + "' y2='" + (h - B) + "' stroke='#444'/>";
  for (const t of ticks(y0, y1, 3)) s += "<text x='" + (L - 4) + "' y='" + (Y(t) + 4) + "' font-size='11' text-anchor='end'>" +
    num(logy ? Math.pow(10, t) : t, logy) + "</text><line x1='" + (L - 3) + "' x2='" + L + "' y1='" + Y(t) + "' y2='" + Y(t) + "' stroke='#444'/>";
  for (const t of ticks(x0, x1, 3)) s += "<text x='" + X(t) + "' y='" + (h - B + 14) + "' font-size='11' text-anchor='middle'>" +
    Math.round(t) + "</text>";
  s += "<text x='" + ((L + w - R) / 2) + "' y='" + (h - 6) + "' font-size='11' text-anchor='middle'>iteration</text>" +
       "<text x='12' y='" + ((T + h - B) / 2) + "' font-size='11' text-anchor='middle' transform='rotate(-90 12 " +
       ((T + h - B) / 2) + ")'>" + unit + "</text>";
  return s + "<polyline fill='none' stroke='#c41f1f' stroke-width='1.6' points='" +
    xs.map((x, i) => X(x).toFixed(1) + "," + Y(ys[i]).toFixed(1)).join(" ") + "'/></svg>";
}}
function toggle(tr) {{
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("curves")) {{ next.remove(); return; }}
  const c = DATA.curves[tr.dataset.name], row = document.createElement("tr"), td = document.createElement("td");
  row.className = "curves"; td.colSpan = keys.length;
  td.innerHTML = c ? "<div class='curve-row'>" + [["training loss", c.loss, "loss", false], ["validation top-1", c.acc, "top-1", false],
    ["learning rate", c.lr, "rate (log)", true]].map(([t, p, u, l]) => chart(p, t, u, l, 330, 190)).join("") + "</div>" :
    "no logs for this net";
  row.appendChild(td); tr.after(row);
}}
function overview() {{
  const host = document.getElementById("overview"); let html = "";
  for (const fam of DATA.families) {{
    const nets = DATA.nets.filter(n => n.family === fam && DATA.curves[n.name]);
    if (!nets.length) continue;
    html += "<div class='family'><h3>" + fam + " (" + nets.length + ")</h3><div class='grid'>";
    for (const n of nets) {{
      const [first, last, v] = DATA.curves[n.name].acc, end = n.max_iter || last || 1;
      const pts = v.map((y, i) => (100 * (v.length > 1 ? first + (last - first) * i / (v.length - 1) : first) / end).toFixed(1) +
        "," + (58 - 56 * Math.max(0, Math.min(1, y))).toFixed(1)).join(" ");
      html += "<div class='mini" + (n.health ? " flag" : "") + "' data-name='" + n.name + "' title='" + n.name + ": " +
        (n.top10 === null ? "no tests" : "mean of 10 best " + n.top10.toFixed(3)) + "'>" + n.name +
        "<svg viewBox='0 0 100 60' preserveAspectRatio='none'><line x1='0' y1='58' x2='100' y2='58' stroke='#bbb'/>" +
        "<polyline fill='none' stroke='#c41f1f' stroke-width='1.5' vector-effect='non-scaling-stroke' points='" + pts + "'/></svg></div>";
    }}
    html += "</div></div>";
  }}
  host.innerHTML = html || "<p>no net has logs</p>";
  host.querySelectorAll(".mini").forEach(m => m.addEventListener("click", () => {{
    const f = document.getElementById("filter"); f.value = m.dataset.name; render();
    const tr = body.querySelector("tr.net"); if (tr) {{ toggle(tr); tr.scrollIntoView(); }} }}));
}}
heads.forEach(h => h.addEventListener("click", () => {{
  sortDir = sortKey === h.dataset.key ? -sortDir : 1; sortKey = h.dataset.key;
  heads.forEach(x => x.classList.remove("asc", "desc")); h.classList.add(sortDir > 0 ? "asc" : "desc"); render(); }}));
document.getElementById("filter").addEventListener("input", render);
render(); overview();
</script></main></body></html>
"""
