"""`tf report`: one self-contained HTML file a researcher can mail to a co-author.

Inline SVG figures (the paper's, as `tf plot` draws them), a table of every net (sortable and
filterable without a server), each net's training curves on demand (drawn from compact data in the
page), the nets that are missing, failed or blocked, and provenance. No external request of any kind.
"""
from __future__ import annotations

import hashlib
import html
import io
import json
import re
import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from . import atomic


def _svg(fig) -> str:
    import matplotlib
    import matplotlib.pyplot as plt
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):          # text stays text: small files
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)   # RDF, dates
    return text


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
    from .netspec import learning_rate, read_solver
    from .errors import Error
    try:
        solver = read_solver(d.solver)
    except (Error, OSError):
        return [0, 0, []]
    its = np.linspace(0, max(iterations, 1), 60).astype(int)
    step = lambda it: sum(it >= v for v in solver["stepvalue"])   # noqa: E731
    return _thin(its, [learning_rate(solver, int(it), step(it)) for it in its])


def _versions(engines) -> dict:
    out = {}
    for name in ("transferfeat", "torch", "numpy", "matplotlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    if "caffe" in engines:
        try:
            from .engines.caffe import find_tool, version as caffe_version
            out["caffe"] = caffe_version(find_tool("caffe"))
        except Exception as e:                                       # noqa: BLE001 - provenance only
            out["caffe"] = f"not found ({e.__class__.__name__})"
    return out


def build(folder, summary: dict, logs: dict, rows: list, other: dict = None, labels=("mine", "other")) -> str:
    """The report's HTML text. ``rows``: `tf status` rows; ``logs``: net -> NetLog (for curves)."""
    from .plots import figures
    study = folder.study
    figs = [(stem, _svg(fig)) for stem, fig, _ in figures(study, summary, other, labels)]
    state = {r["name"]: r for r in rows}
    nets = []
    for net in study.nets.values():
        m = summary["nets"].get(net.name, {})
        o = (other or {}).get("nets", {}).get(net.name, {})
        best10 = m.get("top1_top10_mean")
        nets.append({"name": net.name, "family": net.family, "base": net.base or "", "n": net.n,
                     "engine": m.get("engine") or state.get(net.name, {}).get("engine") or "",
                     "status": state.get(net.name, {}).get("status", "no logs"),
                     "iterations": m.get("iterations"), "last": m.get("top1_last"), "best": m.get("top1_best"),
                     "top10": best10, "delta": (best10 - o["top1_top10_mean"]) if best10 is not None and o else None})
    curves = {name: {"loss": _thin(*log.loss), "acc": _thin(list(log.accuracy), list(log.accuracy.values())),
                     "lr": _thin(*log.lr) if len(log.lr[0]) else _schedule(folder.net(name), log.iterations)}
              for name, log in logs.items()}
    attention = [r for r in rows if r["state"] in ("failed", "diverged", "blocked", "damaged", "unverified")]
    attention += [{"name": n, "status": "ended at chance level (mean of its 10 best tests "
                   f"{m['top1_top10_mean']:.4f} for {m['classes']} classes)"}
                  for n, m in summary["nets"].items() if m.get("health") == "at chance"]
    missing = summary.get("missing", [])
    study_text = folder.study.path.read_bytes()
    provenance = {"generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results folder": str(folder.root.resolve()),
                  "study": f"{study.config.name} ({study.path.name}, sha256 {hashlib.sha256(study_text).hexdigest()[:16]}…)",
                  "nets": f"{len(summary['nets'])} of {len(study.nets)} with logs",
                  **{k: v for k, v in _versions({n["engine"] for n in nets}).items()}}
    if other is not None:
        provenance["compared with"] = labels[1]
    return PAGE.format(
        title=html.escape(f"transferfeat report: {study.config.name} — {labels[0]}"),
        heading=html.escape(f"{study.config.name}: {labels[0]}"),
        figures="\n".join(f'<figure id="{stem}">{svg}<figcaption>{html.escape(CAPTIONS[stem])}</figcaption></figure>'
                          for stem, svg in figs),
        attention="".join(f"<li><b>{html.escape(r['name'])}</b>: {html.escape(r['status'])}</li>" for r in attention)
        or "<li>none</li>",
        missing=html.escape(" ".join(missing)) or "none",
        provenance="".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in provenance.items()),
        delta_head="<th data-key='delta' data-type='num'>Δ top-1 vs " + html.escape(labels[1]) + "</th>" if other else "",
        data=json.dumps({"nets": nets, "curves": curves, "compare": other is not None}, separators=(",", ":")),
    )


def write(folder, summary, logs, rows, out, other=None, labels=("mine", "other")) -> int:
    text = build(folder, summary, logs, rows, other, labels)
    atomic.write_text(out, text)
    return len(text.encode())


CAPTIONS = {
    "fig2_top": "Figure 2 (top): each net's top-1 (mean of its 10 best tests).",
    "fig2_bottom": "Figure 2 (bottom): the means, from baseB at n = 0.",
    "fig2_bottom_annotated": "Figure 2 (bottom), annotated with the paper's regions 2–5.",
    "fig3": "Figure 3: the man-made/natural split, random untrained filters, and accuracy relative to each reference.",
    "reduced": "Top-1 against the number of training images per class.",
}

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
figure {{ margin: 1em 0; }} figure svg {{ max-width: 100%; height: auto; }} figcaption {{ color: #555; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ padding: 2px 8px; text-align: left; }}
#nets th {{ cursor: pointer; background: #f0f0f0; position: sticky; top: 0; }}
#nets th.asc::after {{ content: " ▲"; }} #nets th.desc::after {{ content: " ▼"; }}
#nets tr:nth-child(even) {{ background: #fafafa; }} #nets td.num {{ text-align: right; }}
#nets tr.net:hover {{ background: #eef; cursor: pointer; }}
tr.curves td {{ background: #fff; }} svg.curve {{ width: 32%; height: 160px; }}
#filter {{ width: 20em; padding: 4px; }}
</style></head><body>
<h1>{heading}</h1>
<h2>Figures</h2>
{figures}
<h2>Every net</h2>
<p><input id="filter" type="search" placeholder="filter: a name, family, engine or status">
<span id="shown"></span>. Click a column to sort it, a net to see its training curves.</p>
<table id="nets"><thead><tr>
<th data-key="name">net</th><th data-key="family">family</th><th data-key="base">base</th>
<th data-key="n" data-type="num">n</th><th data-key="engine">engine</th><th data-key="status">status</th>
<th data-key="iterations" data-type="num">iterations</th><th data-key="last" data-type="num">top-1 last</th>
<th data-key="best" data-type="num">best</th><th data-key="top10" data-type="num">mean of 10 best</th>{delta_head}
</tr></thead><tbody></tbody></table>
<h2>Needs attention</h2><ul id="attention">{attention}</ul>
<h2>Nets without logs</h2><p id="missing">{missing}</p>
<h2>Provenance</h2><table id="provenance">{provenance}</table>
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const body = document.querySelector("#nets tbody");
const heads = Array.from(document.querySelectorAll("#nets th"));
const keys = heads.map(h => h.dataset.key);
let sortKey = null, sortDir = 1;
const fmt = (k, v) => v === null || v === undefined ? "" :
  (typeof v === "number" && !["n", "iterations"].includes(k) ? (k === "delta" && v > 0 ? "+" : "") + v.toFixed(4) : String(v));
function render() {{
  const q = document.getElementById("filter").value.trim().toLowerCase();
  let rows = DATA.nets.filter(r => !q || ["name", "family", "engine", "status", "base"].some(k => String(r[k]).toLowerCase().includes(q)));
  if (sortKey) rows.sort((a, b) => {{
    const x = a[sortKey], y = b[sortKey];
    if (x === y) return 0; if (x === null || x === "") return 1; if (y === null || y === "") return -1;
    return (x < y ? -1 : 1) * sortDir; }});
  body.replaceChildren(...rows.map(r => {{
    const tr = document.createElement("tr"); tr.className = "net"; tr.dataset.name = r.name;
    for (const k of keys) {{ const td = document.createElement("td"); td.textContent = fmt(k, r[k]);
      if (typeof r[k] === "number") td.className = "num"; tr.appendChild(td); }}
    tr.addEventListener("click", () => toggle(tr)); return tr; }}));
  document.getElementById("shown").textContent = rows.length + " of " + DATA.nets.length + " nets";
}}
function polyline(curve, w, h, logy) {{
  const [first, last, values] = curve;
  if (!values.length) return "<text x='10' y='40'>no data</text>";
  const points = values.map((v, i) => [values.length > 1 ? first + (last - first) * i / (values.length - 1) : first, v]);
  const ys = points.map(p => logy ? Math.log10(Math.max(p[1], 1e-12)) : p[1]);
  const x0 = points[0][0], x1 = points[points.length - 1][0] || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const X = x => 30 + (w - 40) * (x - x0) / ((x1 - x0) || 1), Y = y => h - 20 - (h - 30) * (y - y0) / ((y1 - y0) || 1);
  return "<polyline fill='none' stroke='#b41f1f' stroke-width='1.5' points='" +
    points.map((p, i) => X(p[0]).toFixed(1) + "," + Y(ys[i]).toFixed(1)).join(" ") + "'/>" +
    "<text x='2' y='12' font-size='10'>" + (logy ? Math.pow(10, y1).toPrecision(2) : y1.toPrecision(3)) + "</text>" +
    "<text x='2' y='" + (h - 22) + "' font-size='10'>" + (logy ? Math.pow(10, y0).toPrecision(2) : y0.toPrecision(3)) + "</text>" +
    "<text x='" + (w - 10) + "' y='" + (h - 4) + "' font-size='10' text-anchor='end'>iteration " + x1 + "</text>";
}}
function toggle(tr) {{
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("curves")) {{ next.remove(); return; }}
  const c = DATA.curves[tr.dataset.name], row = document.createElement("tr"), td = document.createElement("td");
  row.className = "curves"; td.colSpan = keys.length;
  td.innerHTML = c ? [["train loss", c.loss, false], ["val top-1", c.acc, false], ["learning rate", c.lr, true]].map(
    ([t, p, l]) => "<svg class='curve' viewBox='0 0 300 160' role='img' aria-label='" + t + "'><text x='150' y='12' " +
    "font-size='11' text-anchor='middle'>" + t + "</text>" + polyline(p, 300, 160, l) + "</svg>").join("") :
    "no logs for this net";
  row.appendChild(td); tr.after(row);
}}
heads.forEach(h => h.addEventListener("click", () => {{
  sortDir = sortKey === h.dataset.key ? -sortDir : 1; sortKey = h.dataset.key;
  heads.forEach(x => x.classList.remove("asc", "desc")); h.classList.add(sortDir > 0 ? "asc" : "desc"); render(); }}));
document.getElementById("filter").addEventListener("input", render);
render();
</script></body></html>
"""
