"""The paper's figures as the authors' notebook drew them (their PDFs: shared/convnet_transfer/plots;
their notebook: plots/transfer_plots.ipynb in yosinski/convnet_transfer), each with its data beside
it: ``<figure>.csv`` holds every point, mean and region drawn, with the nets behind it, so a reader
can re-plot or check a number without tf.

Figure 2 top (``fig2_top``, the authors' result_transfer): every net as a marker; Figure 2 bottom
(``fig2_bottom``, result_transfer_lines_notext, and ``fig2_bottom_annotated``, result_transfer_lines):
the means, the shaded regions and their explanations numbered 2–5 as in the paper's text; Figure 3
(``fig3``, result_random_nm_combined): the man-made/natural split, random untrained filters, and the
relative accuracy ``acc − ref``; the reduced-data plot (``reduced``, result_reduced), linear and
log–log; the presentation build-up ``pres_00…06`` (result_transfer_pres_*).

The look is theirs: matplotlib's "classic" style (the 1.x defaults they ran), font size 16, their
figure sizes, marker sizes (14, diamonds 12, the "+" 8 with a 2-point stroke), offsets, colours,
fills, axis limits and the positions of the regions' explanations, placed by the same rules on
other data. Two deliberate differences: Figure 2 top names its x axis (the paper's shares Figure 2
bottom's), and a mean over fewer nets than the design is an open marker with one legend entry
(the authors' own figures do not mark the 22 fine-tuned nets whose logs are missing).
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.legend_handler import HandlerTuple  # noqa: E402

from . import atomic  # noqa: E402
from .study import Study  # noqa: E402

RC = {"font.size": 16, "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "legend.numpoints": 1,
      "legend.scatterpoints": 1, "savefig.dpi": 100}
MS, MS_D, MS_P = 14, 12, 8          # marker sizes: circles and hexagons, diamonds, the "+"
# label, marker, face colour, size, x offset in Figure 2 top, "+" over it
SERIES = {
    "baseB": ("baseB", "o", "w", MS, 0.0, False),
    "selffer_BnB": ("selffer BnB", "o", "b", MS, -0.25, False),
    "selffer_BnB_plus": ("selffer BnB$^+$", "o", "#aaaaff", MS, -0.09, True),
    "transfer_AnB": ("transfer AnB", "D", "r", MS_D, 0.09, False),
    "transfer_AnB_plus": ("transfer AnB$^+$", "D", "#ffaaaa", MS_D, 0.27, True),
}
LINE = {"selffer_BnB": "b", "transfer_AnB": "r", "selffer_BnB_plus": "#aaaaff", "transfer_AnB_plus": "#ffaaaa"}
FILL = {5: "#ffeeee", 2: "#eeeeff", 4: "#ffcccc"}          # region 3 lies inside 5's fill, as in the paper
REGIONS = {2: "2: Performance drops\n due to fragile\n co-adaptation", 3: "3: Fine-tuning recovers co-adapted interactions",
           4: "4: Performance\ndrops due to\n representation\nspecificity",
           5: "5: Transfer + fine-tuning improves generalization"}
ORANGE, YELLOW = "#ff8800", "y"
LAYER_LABEL = "Layer $n$ at which network is chopped and retrained"
UNIT_LABEL = "Unit $n$ (up to cut point) at which network is chopped and retrained"
TEXT = 20                           # the regions' explanations
FADE = 0.35                         # a compared study (--compare)
PARTIAL = "mean of fewer nets than the design"


@contextlib.contextmanager
def style():
    """The authors' look: matplotlib 1.x's defaults ("classic") and their font size."""
    with plt.style.context("classic"), matplotlib.rc_context(RC):
        yield


class Data:
    """The rows of a figure's data file: what was drawn, where, from which nets."""

    COLUMNS = ["panel", "series", "kind", "n", "x", "y", "y_low", "y_high", "nets", "of", "net_names", "source"]

    def __init__(self):
        self.rows = []

    def add(self, panel, series, kind, n, y=None, x=None, y_low=None, y_high=None, nets=None, of=None, names=(),
            source=""):
        """One drawn thing: ``n`` the study's value (layer, images per class), ``x`` where it was drawn."""
        self.rows.append([panel, series, kind, n, n if x is None else x, y, y_low, y_high, nets, of,
                          ";".join(names), source])

    def text(self, header: dict) -> str:
        buf = io.StringIO()
        for k, v in header.items():
            buf.write(f"# {k}: {v}\n")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.COLUMNS)
        for r in self.rows:
            w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in r])
        return buf.getvalue()


# --------------------------------------------------------------------------- what the figures draw

def _nets(study: Study, summary: dict, series: str) -> dict:
    """x -> ([nets with a usable result], [nets the design has]) for one series."""
    out = {}
    for net in study.nets.values():
        if net.series == series:
            have, want = out.setdefault(str(net.x), ([], []))
            want.append(net.name)
            if _usable(summary, net.name):
                have.append(net.name)
    return out


def _usable(summary: dict, name: str) -> bool:
    """Does net ``name`` have a result a figure may draw (logs, a statistic, and it did not diverge)?"""
    m = summary["nets"].get(name)
    return bool(m) and m.get("health") != "diverged" and m.get("top1_top10_mean") is not None


def _means(study, summary, series) -> dict:
    """x -> (mean, nets, design) of a series; x = 0 is baseB, where the paper's lines start."""
    counts, pts = _nets(study, summary, series), summary["series"].get(series, {})
    base = summary["series"].get("baseB", {}).get("0")
    out = {x: (v, counts.get(x, ([], []))[0], counts.get(x, ([], []))[1]) for x, v in pts.items()}
    if base is not None and out:
        have, want = _nets(study, summary, "baseB").get("0", ([], []))
        out = {"0": (base, have, want), **out}
    return dict(sorted(out.items(), key=lambda kv: float(kv[0])))


def _left_out_note(fig, summary) -> None:
    """Say, on the figure, which nets it leaves out because they diverged."""
    gone = [f"{n} ({m['diverged_at']})" for n, m in summary["nets"].items() if m.get("health") == "diverged"]
    if gone:
        fig.text(0.125, 0.965, "left out, diverged at iteration: " + ", ".join(gone[:5]) + (" …" if len(gone) > 5 else ""),
                 fontsize=12, color="#b00000", va="top")


def _no_data(ax, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="#888888")


def _layers_axis(ax, study: Study, ylabel="Top-1 accuracy (higher is better)", xlabel=True, left=-0.2):
    n = len(study.arch.units)
    ax.set_xlim(left, n - 1 + 0.3)
    ax.set_xticks(range(n))
    if study.arch.cuts and xlabel:          # a graph's cut points by name: n = 1 is the first unit's end
        ax.set_xticklabels(["0"] + [f"{k}\n{c}" for k, c in enumerate(study.arch.cuts[:n - 1], 1)])
        ax.figure.subplots_adjust(bottom=max(ax.figure.subplotpars.bottom, 0.15))     # room for two-line ticks
    if xlabel:
        ax.set_xlabel(UNIT_LABEL if study.arch.cuts else LAYER_LABEL, fontsize=16)
    if ylabel:
        ax.set_ylabel(ylabel)


def _marker(ax, x, y, series, alpha=1.0, dx=0.0, plus=None):
    """One series' markers as the authors drew them (a Line2D without a line; "+" laid over)."""
    label, marker, face, size, _, has_plus = SERIES[series]
    kw = dict(mew=2, mec="k") if face == "w" else {}
    h = ax.plot(np.asarray(x, float) + dx, y, ls="", marker=marker, color=face, markersize=size, alpha=alpha, **kw)[0]
    if plus if plus is not None else has_plus:
        p = ax.plot(np.asarray(x, float) + dx, y, ls="", marker="+", color="k", mew=2, markersize=MS_P, alpha=alpha)[0]
        return (h, p)
    return h


def _legend(ax, handles, labels, **kw):
    if handles:
        ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=1, pad=0)}, **kw)


# --------------------------------------------------------------------------- Figure 2

def _limits(values, step: float = 0.02):
    """The y range matplotlib 1.x's autoscaling picks for Figure 2: whole ticks of 0.02 around the data."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return 0.0, 1.0
    lo, hi = math.floor(min(values) / step + 1e-9) * step, math.ceil(max(values) / step - 1e-9) * step
    return lo, hi if hi > lo else lo + step


def fig2_top(study, summary, other=None, labels=("mine", "other"), points=None, lines=(), frame=None):
    """Every net as a marker. For the presentation frames (``frame``, 0–6): ``points``, the series shown
    as markers (at ±0.09, as in the authors' frames), and ``lines``, the series shown as mean lines with
    their regions, on the axes of the whole figure."""
    fig = plt.figure(figsize=(15, 8))
    ax = fig.add_subplot(111)
    data = Data()
    everything, marks = [], {}
    for source, s_data, alpha in ((labels[0], summary, 1.0), (labels[1], other, FADE)):
        if s_data is None:
            continue
        for s in SERIES:
            counts = _nets(study, s_data, s)
            everything += [s_data["nets"][n]["top1_top10_mean"] for have, _ in counts.values() for n in have]
            if points is not None and s not in points:
                continue
            dx = SERIES[s][4] if frame is None else 0.09 * np.sign(SERIES[s][4])
            xs, ys = [], []
            for x, (have, want) in counts.items():
                for n in have:
                    xs.append(float(x))
                    ys.append(s_data["nets"][n]["top1_top10_mean"])
                    data.add("top", s, "net", float(x), ys[-1], x=float(x) + dx, names=[n], source=source)
            if xs:
                marks[(s, source)] = _marker(ax, xs, ys, s, alpha, dx)
    means = _mean_lines(ax, study, summary, lines, data, labels[0]) if lines else None
    if means and means.base is not None and means.lines:
        _regions(ax, means, data, annotate=False)
    if not everything:
        _no_data(ax)
    ax.set_ylim(*_limits(everything))                       # the same axes in every frame
    _layers_axis(ax, study)
    handles, names = [], []
    for s in SERIES:
        for source in (labels[0], labels[1]):
            h = marks.get((s, source))
            if means and source == labels[0]:
                if s == "baseB" and "baseB" in means.handles:          # the dashed line, with the circles
                    h = (means.handles["baseB"][0], h) if h is not None else means.handles["baseB"]
                elif h is None:
                    h = means.handles.get(s)
            if h is not None:
                handles.append(h)
                names.append(SERIES[s][0] if source == labels[0] else f"{SERIES[s][0]} ({source})")
    _legend(ax, handles, names, loc="lower left", ncol=2 if other else 1)
    _left_out_note(fig, summary)
    return fig, data


class Means:
    """What ``_mean_lines`` drew: baseB's mean, the legend handles, each series' (x, y), a partial
    mean's open marker (None: every mean stands on the nets the design has), every value drawn."""

    def __init__(self, base, source):
        self.base, self.source, self.handles, self.lines, self.partial, self.values = base, source, {}, {}, None, []


def _mean_lines(ax, study, summary, series, data, source, other=None, other_label="other") -> Means:
    """A mean line per series from baseB at n = 0, baseB's dashed line to the last n and its open
    circle; a mean over fewer nets than the design an open marker."""
    m = Means(summary["series"].get("baseB", {}).get("0"), source)
    last = len(study.arch.units) - 1
    if m.base is not None:
        dash = ax.plot([0, last], [m.base, m.base], "--", color="k", lw=2)[0]
        m.values.append(m.base)
    for s in ("selffer_BnB", "transfer_AnB", "selffer_BnB_plus", "transfer_AnB_plus"):
        pts = _means(study, summary, s) if s in series else {}
        if not pts or (m.base is not None and len(pts) < 2):
            continue
        x = np.array([float(k) for k in pts])
        y = np.array([v for v, _, _ in pts.values()])
        m.handles[s] = ax.plot(x, y, color=LINE[s], lw=2)[0]
        m.lines[s] = (x, y)
        m.values += list(y)
        for xi, (v, have, want) in zip(x, pts.values()):
            data.add("means", s, "mean", float(xi), float(v), nets=len(have), of=len(want), names=have, source=source)
            if 0 < len(have) < len(want) and xi > 0:
                ax.plot([xi], [v], ls="", marker="o", mfc="w", mec=LINE[s], mew=1.5, markersize=7, zorder=5)
                m.partial = plt.Line2D([], [], ls="", marker="o", mfc="w", mec="0.35", mew=1.5, markersize=7)
        o = _means(study, other, s) if other is not None else {}
        if o:
            ox, oy = [float(k) for k in o], [v for v, _, _ in o.values()]
            ax.plot(ox, oy, color=LINE[s], lw=1.5, ls="--", alpha=FADE + 0.2)
            m.values += oy
            for xi, (v, have, want) in zip(ox, o.values()):
                data.add("means", s, "mean", xi, v, nets=len(have), of=len(want), names=have, source=other_label)
    if m.base is not None:
        circle = ax.plot(0, m.base, "o", color="w", mew=2, markersize=MS, zorder=6)[0]
        m.handles["baseB"] = (dash, circle)
    return m


def _regions(ax, means: Means, data, annotate):
    """The paper's fills (region 5: base to AnB⁺, over which region 3 lies; 2: base to BnB; 4: BnB to
    AnB) and, ``annotate``, their explanations where each region shows, placed by the authors' rules."""
    lines, base = means.lines, means.base
    if "transfer_AnB_plus" in lines:
        x, y = lines["transfer_AnB_plus"]
        ax.fill_between(x, base, y, color=FILL[5], lw=0, zorder=0)
        data.add("means", "region 5", "region", None, y_low=base, y_high=float(y.max()), source=means.source)
    if "selffer_BnB_plus" in lines:
        x, y = lines["selffer_BnB_plus"]
        data.add("means", "region 3", "region", None, y_low=base, y_high=float(y.max()), source=means.source)
    if "selffer_BnB" in lines:
        x, y = lines["selffer_BnB"]
        ax.fill_between(x, base, y, color=FILL[2], lw=0, zorder=0)
        data.add("means", "region 2", "region", None, y_low=float(y.min()), y_high=base, source=means.source)
        if "transfer_AnB" in lines:
            xa, ya = lines["transfer_AnB"]
            common = np.intersect1d(x, xa)
            yb, yaa = np.interp(common, x, y), np.interp(common, xa, ya)
            ax.fill_between(common, yb, yaa, color=FILL[4], lw=0, zorder=0)
            data.add("means", "region 4", "region", None, y_low=float(yaa.min()), y_high=float(yb.max()), source=means.source)
    if annotate:
        _explanations(ax, lines, base)


def _explanations(ax, lines, base):
    """The regions' texts at the places the authors chose for their data (5 and 3 from n = 2.5 just
    above the AnB⁺ and BnB⁺ lines, 2 centred in region 2 left of its deepest point, 4 right-aligned in
    region 4 at the last n), each only where its region shows, never over another."""
    fig = ax.figure
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    per_point = (hi - lo) / (ax.get_window_extent().height * 72 / fig.dpi)
    line = TEXT * 1.25 * per_point                       # one line of the explanations, in data units
    span = hi - lo
    x_end = max(x[-1] for x, _ in lines.values())
    start = 2.5 * x_end / 7
    spots = {}
    span_of = {s: y[x >= start] for s, (x, y) in lines.items() if (x >= start).any()}
    clear_of_all = max((v.max() for v in span_of.values()), default=base) + 0.005 * span

    def clear(y0):                                   # the line of text from y0 up meets no line on its span
        return all(v.max() < y0 or v.min() > y0 + line for v in span_of.values())
    if "selffer_BnB_plus" in lines:
        x, y = lines["selffer_BnB_plus"]
        if y.max() - base > 0.2 * line:
            y3 = max(span_of.get("selffer_BnB_plus", y).max(), base) + 0.005 * span
            spots[3] = (start, y3 if clear(y3) else clear_of_all, "left")
    if "transfer_AnB_plus" in lines:
        x, y = lines["transfer_AnB_plus"]
        if y.max() - base > 0.2 * line:
            y5 = max(y.max() + 0.02 * span, clear_of_all)
            if 3 in spots:
                y5 = max(y5, spots[3][1] + 1.3 * line)
            spots[5] = (start, y5, "left")
    if "selffer_BnB" in lines:
        x, y = lines["selffer_BnB"]
        deep = base - y
        if deep.max() > 2.5 * line:
            k = int(np.argmax(deep))
            spots[2] = (x[k] - 0.3 * x_end / 7, base - 0.6 * deep[k], "center")
        if "transfer_AnB" in lines:
            xa, ya = lines["transfer_AnB"]
            gap = y[-1] - ya[-1]
            if gap > 3.5 * line:
                spots[4] = (x_end - 0.1 * x_end / 7, (y[-1] + ya[-1]) / 2, "right")
    top = max([y + line for n, (_, y, _) in spots.items() if n in (3, 5)], default=hi)
    if top > hi:
        ax.set_ylim(lo, top)
    for number, (x, y, ha) in sorted(spots.items()):
        ax.text(x, y, REGIONS[number], ha=ha, fontsize=TEXT, zorder=7)


def fig2_bottom(study, summary, annotate, other=None, labels=("mine", "other")):
    """The means: a line per series from baseB at n = 0, the regions between them (``annotate``: their
    explanations, numbered 2–5). No legend, as the paper's has none (but for partial means)."""
    fig = plt.figure(figsize=(15, 8))
    ax = fig.add_subplot(111)
    data = Data()
    means = _mean_lines(ax, study, summary, tuple(LINE), data, labels[0], other, labels[1])
    lo, hi = _limits(means.values)
    ax.set_ylim(lo, hi - 0.005 if hi - 0.005 >= max(means.values, default=lo) else hi)   # the authors' trim
    _layers_axis(ax, study)
    if means.base is None or not means.lines:
        _no_data(ax, "no data" if means.base is None and not means.lines else "no baseB, so no regions")
    else:
        _regions(ax, means, data, annotate)
    if means.partial is not None:
        _legend(ax, [means.partial], [PARTIAL], loc="lower left", fontsize=14)
    _left_out_note(fig, summary)
    return fig, data


# --------------------------------------------------------------------------- Figure 3 and the reduced data

def fig3(study, summary, other=None, labels=("mine", "other")):
    """Man-made/natural split and random filters (top), and top-1 relative to each reference, ``acc − ref`` (bottom)."""
    fig = plt.figure(figsize=(14, 10))
    top_l, top_r = plt.subplot2grid((3, 2), (0, 0), fig=fig), plt.subplot2grid((3, 2), (0, 1), fig=fig)
    bottom = plt.subplot2grid((3, 2), (1, 0), colspan=2, rowspan=2, fig=fig)
    data = Data()
    drawn = {"natman": False, "random": False, "relative": False}
    handles = {}
    for source, s_data, alpha, ls in ((labels[0], summary, 1.0, "-"), (labels[1], other, FADE, "--")):
        if s_data is None:
            continue
        series = s_data["series"]
        for s in ("natman_to_natural", "natman_to_manmade"):
            drawn["natman"] |= _reference_line(top_l, study, s_data, s, "h", ORANGE, MS, alpha, ls, data, "natman", source)
        drawn["random"] |= _reference_line(top_r, study, s_data, "random_frozen", "v", YELLOW, MS, alpha, ls, data,
                                           "random", source)
        rf = series.get("random_frozen", {})
        if "0" in rf:
            pts = {x: v - rf["0"] for x, v in rf.items()}
            handles[("random", source)] = _relative(bottom, pts, "v", YELLOW, MS, alpha, ls)
            _relative_rows(data, "random features", pts, _nets(study, s_data, "random_frozen"), source)
        nm = [(s, {x: v - pts["0"] for x, v in pts.items()}) for s, pts in
              (("natman_to_natural", series.get("natman_to_natural", {})),
               ("natman_to_manmade", series.get("natman_to_manmade", {}))) if "0" in pts]
        if nm:
            xs = sorted(set.intersection(*(set(p) for _, p in nm)), key=float)
            pts = {x: float(np.mean([p[x] for _, p in nm])) for x in xs}
            handles[("natman", source)] = _relative(bottom, pts, "h", ORANGE, MS, alpha, ls)
            counts = {x: tuple(sum((_nets(study, s_data, s).get(x, ([], []))[i] for s, _ in nm), []) for i in (0, 1))
                      for x in xs}
            _relative_rows(data, "mean AnB, m/n split", pts, counts, source)
        base = series.get("baseB", {}).get("0")
        if base is not None and series.get("transfer_AnB"):
            pts = {"0": 0.0, **{x: v - base for x, v in series["transfer_AnB"].items()}}
            handles[("random splits", source)] = _relative(bottom, pts, "D", "r", MS_D, alpha, ls)
            counts = {**_nets(study, s_data, "transfer_AnB"), "0": _nets(study, s_data, "baseB").get("0", ([], []))}
            _relative_rows(data, "mean AnB, random splits", pts, counts, source)
        drawn["relative"] |= any(k[1] == source for k in handles)
    if drawn["relative"]:
        handles["reference"] = bottom.plot(0, 0, "o", color="w", mew=2, markersize=MS, zorder=6)[0]
    top_l.set_title("Man-made/Natural split")
    top_r.set_title("Random, untrained filters")
    top_l.set_ylabel("Top-1 accuracy")
    for ax, key in ((top_l, "natman"), (top_r, "random")):
        _layers_axis(ax, study, ylabel=None, xlabel=False, left=-0.3)
        if not drawn[key]:
            _no_data(ax)
    if drawn["natman"]:
        top_l.set_ylim(top_l.get_ylim()[0], top_l.get_ylim()[1] + 0.001)
    if drawn["random"]:
        top_r.set_ylim(top_r.get_ylim()[0], top_r.get_ylim()[1] + 0.01)
    _layers_axis(bottom, study, ylabel="Relative top-1 accuracy (higher is better)")
    bottom.set_ylim(-0.30, 0.03)
    if not drawn["relative"]:
        _no_data(bottom)
    order = [("reference", "reference")] + [(k, n) for k, n in (("random splits", "mean AnB, random splits"),
                                                               ("natman", "mean AnB, m/n split"),
                                                               ("random", "random features"))]
    hs, names = [], []
    for key, name in order:
        for source in (labels[0], labels[1]):
            h = handles.get(key if key == "reference" else (key, source))
            if h is not None and (key != "reference" or source == labels[0]):
                hs.append(h)
                names.append(name if source == labels[0] or key == "reference" else f"{name} ({source})")
    _legend(bottom, hs, names, bbox_to_anchor=(0.79, 0.39), loc="upper right")
    _left_out_note(fig, summary)
    return fig, data


def _reference_line(ax, study, s_data, series, marker, color, size, alpha, ls, data, panel, source) -> bool:
    """A series drawn as the authors did: its line from the reference (n = 0) on, markers from n = 1,
    and the reference as an open circle on top."""
    pts = s_data["series"].get(series, {})
    if not pts:
        return False
    x = np.array([float(k) for k in pts])
    y = np.array(list(pts.values()))
    ax.plot(x, y, ls=ls, color=color, lw=2, alpha=alpha)
    ax.plot(x[x > 0], y[x > 0], ls="", marker=marker, color=color, markersize=size, alpha=alpha)
    ax.plot(x[x == 0], y[x == 0], "o", color="w", mew=2, markersize=MS, alpha=alpha, zorder=6)
    counts = _nets(study, s_data, series)
    for xi, yi in zip(x, y):
        have, want = counts.get(f"{xi:g}", ([], []))
        data.add(panel, series, "reference" if xi == 0 else "mean", float(xi), float(yi), nets=len(have),
                 of=len(want), names=have, source=source)
    return True


def _relative(ax, pts, marker, color, size, alpha, ls):
    x = np.array([float(k) for k in sorted(pts, key=float)])
    y = np.array([pts[k] for k in sorted(pts, key=float)])
    line = ax.plot(x, y, ls=ls, color=color, lw=2, alpha=alpha)[0]
    marks = ax.plot(x[x > 0], y[x > 0], ls="", marker=marker, color=color, markersize=size, alpha=alpha)[0]
    return (line, marks)


def _relative_rows(data, series, pts, counts, source):
    for x in sorted(pts, key=float):
        have, want = counts.get(x, ([], []))
        data.add("relative", series, "acc - ref", float(x), float(pts[x]), nets=len(have), of=len(want),
                 names=list(have), source=source)


def fig_reduced(study, summary, other=None, labels=("mine", "other")):
    """Top-1 against training images per class: linear (top) and log–log (bottom), clipped at the data."""
    fig = plt.figure(figsize=(12, 10))
    axes = [plt.subplot2grid((2, 1), (0, 0), fig=fig), plt.subplot2grid((2, 1), (1, 0), fig=fig)]
    data = Data()
    for ax, log in zip(axes, (False, True)):
        for source, s_data, alpha, ls in ((labels[0], summary, 1.0, "-"), (labels[1], other, FADE, "--")):
            pts = (s_data or {}).get("series", {}).get("reduced")
            if not pts:
                continue
            x = np.array([float(k) for k in pts])
            y = np.array(list(pts.values()))
            (ax.loglog if log else ax.plot)(x, y, marker="o", ls=ls, color="b", lw=2, ms=MS, alpha=alpha,
                                            label=None if not other else source)
            if not log:
                counts = _nets(study, s_data, "reduced")
                for xi, yi in zip(x, y):
                    have, want = counts.get(f"{xi:g}", ([], []))
                    data.add("reduced", "reduced", "mean", float(xi), float(yi), nets=len(have), of=len(want),
                             names=have, source=source)
        if not ax.lines:
            _no_data(ax)
        else:
            widest = max(float(k) for s in (summary, other) if s for k in s["series"].get("reduced", {}))
            ax.set_xlim(ax.get_xlim()[0], 1.04 * widest)              # the authors': 1350 for 1300
        ax.set_xlabel("Number of examples per class" + (" (log)" if log else " (linear)"))
        ax.set_ylabel("Top-1 accuracy")
        if other and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
    _left_out_note(fig, summary)
    return fig, data


# The authors' presentation build-up, result_transfer_pres_00…06: (series as markers, series as mean lines).
PRES = ((("baseB", "selffer_BnB", "transfer_AnB"), ()),
        (("baseB", "selffer_BnB", "transfer_AnB"), ("selffer_BnB", "transfer_AnB")),
        ((), ("selffer_BnB", "transfer_AnB")),
        (("selffer_BnB_plus",), ("selffer_BnB", "transfer_AnB")),
        ((), ("selffer_BnB", "transfer_AnB", "selffer_BnB_plus")),
        (("transfer_AnB_plus",), ("selffer_BnB", "transfer_AnB", "selffer_BnB_plus")),
        ((), ("selffer_BnB", "transfer_AnB", "selffer_BnB_plus", "transfer_AnB_plus")))


# --------------------------------------------------------------------------- files

def provenance(study: Study, labels) -> dict:
    try:
        tf = version("transferfeat")
    except PackageNotFoundError:
        tf = "?"
    return {"study": f"{study.config.name} ({study.path.name})", "source": labels[0],
            "drawn by": f"transferfeat {tf}, {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "columns": "n: the study's value (layer, images per class); x: where it was drawn (with Figure 2 "
                       "top's offsets); nets/of: nets behind a mean and nets the design has; net_names: those nets"}


def _save(fig, out: Path, stem: str, formats, data: Data = None, header: dict = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with style():
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            atomic.write_bytes(path, buf.getvalue())
            paths.append(path)
    plt.close(fig)
    if data is not None:
        atomic.write_text(out / f"{stem}.csv", data.text({"figure": stem, **(header or {})}))
        paths.append(out / f"{stem}.csv")
    return paths


def figures(study, summary, other=None, labels=("mine", "other")) -> list:
    """(stem, figure, data) of the paper's figures (data None where another figure's file holds it)."""
    with style():
        bottom, bottom_data = fig2_bottom(study, summary, False, other, labels)
        return [("fig2_top", *fig2_top(study, summary, other, labels)),
                ("fig2_bottom", bottom, bottom_data),
                ("fig2_bottom_annotated", fig2_bottom(study, summary, True, other, labels)[0], None),
                ("fig3", *fig3(study, summary, other, labels)),
                ("reduced", *fig_reduced(study, summary, other, labels))]


def frames(study, summary, labels=("mine", "other")) -> list:
    """(stem, figure, data) of the authors' presentation build-up of Figure 2, on one set of axes."""
    with style():
        return [(f"pres_{i:02d}", *fig2_top(study, summary, None, labels, points=points, lines=lines, frame=i))
                for i, (points, lines) in enumerate(PRES)]


def plot_all(study, summary, out, formats=("png",), other=None, labels=("mine", "other"), build=False) -> list[Path]:
    """Every figure in ``formats`` with its data file; ``build``: also the authors' presentation frames
    ``pres_00…06`` (Figure 2 on fixed axes: the nets, then their means, then BnB⁺, then AnB⁺)."""
    out = Path(out)
    header = provenance(study, labels)
    paths = []
    for stem, fig, data in figures(study, summary, other, labels) + (frames(study, summary, labels) if build else []):
        extra = {"also drawn by": "fig2_bottom_annotated"} if stem == "fig2_bottom" else {}
        paths += _save(fig, out, stem, formats, data, {**header, **extra})
    return paths


def plot_curves(logs: dict, out, formats=("png",)) -> list[Path]:
    """Train loss, val accuracy and learning rate against iteration, one figure per net."""
    paths = []
    for name, log in logs.items():
        with style():
            fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
            axes[0].plot(*log.loss, lw=0.6, color="#555555")
            axes[0].set_ylabel("train loss")
            acc = log.accuracy
            axes[1].plot(list(acc), list(acc.values()), color="r", lw=2)
            axes[1].set_ylabel("val top-1")
            axes[2].plot(*log.lr, color="b", lw=2)
            axes[2].set_ylabel("learning rate")
            if len(log.lr[1]) and (log.lr[1] > 0).all():
                axes[2].set_yscale("log")
            for s in log.segments[1:]:
                if s.first_iter is not None:
                    for ax in axes:
                        ax.axvline(s.first_iter, color="black", lw=0.5, ls=":")
            axes[2].set_xlabel("iteration (dotted: a resumed segment starts)")
            fig.suptitle(f"{name}: {len(log.segments)} log segment(s)")
        paths += _save(fig, Path(out), f"curves_{name}", formats)
    return paths
