"""The paper's figures as the authors' notebook drew them (their PDFs: shared/convnet_transfer/plots),
each with its data beside it: ``<figure>.csv`` holds every point, mean and region drawn, so a reader
can re-plot or check a number without tf.

Figure 2 top (``fig2_top``, the authors' result_transfer): every net as a marker; Figure 2 bottom
(``fig2_bottom``, result_transfer_lines_notext, and ``fig2_bottom_annotated``, result_transfer_lines):
the means, the shaded regions and their explanations numbered 2–5 as in the paper's text; Figure 3
(``fig3``, result_random_nm_combined): the man-made/natural split, random untrained filters, and the
relative accuracy ``acc − ref``; the reduced-data plot (``reduced``, result_reduced), linear and
log–log. PDFs embed TrueType fonts; legends are placed where there is no data.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import atomic  # noqa: E402
from .study import Study  # noqa: E402

plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "font.size": 11, "axes.labelsize": 11,
                     "legend.fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10,
                     "legend.numpoints": 1, "legend.scatterpoints": 1})

# The authors' legend: label, marker, face, edge, x offset, "+" glyph.
STYLE = {
    "baseB": ("baseB", "o", "white", "black", 0.0, False),
    "selffer_BnB": ("selffer BnB", "o", "#0000ff", "#0000b4", -0.25, False),
    "selffer_BnB_plus": ("selffer BnB$^+$", "o", "#a9b6f5", "#2a3a9c", -0.10, True),
    "transfer_AnB": ("transfer AnB", "D", "#ff0000", "#b00000", 0.10, False),
    "transfer_AnB_plus": ("transfer AnB$^+$", "D", "#f7b7b7", "#a04040", 0.25, True),
}
LINE = {"selffer_BnB": "#0000ff", "selffer_BnB_plus": "#a9b6f5", "transfer_AnB": "#ff0000",
        "transfer_AnB_plus": "#f7a8a8"}
REGIONS = {
    2: ("2: Performance drops\ndue to fragile\nco-adaptation", "#8c8cff"),
    3: ("3: Fine-tuning recovers co-adapted interactions", "#c8c8ff"),
    4: ("4: Performance\ndrops due to\nrepresentation\nspecificity", "#ff7070"),
    5: ("5: Transfer + fine-tuning improves generalization", "#ffc8c8"),
}
ORANGE, OLIVE = ("#ff8c1a", "#b36200"), ("#b5c21b", "#6c7410")
LAYER_LABEL = "Layer $n$ at which network is chopped and retrained"
FADE = 0.35


class Data:
    """The rows of a figure's data file: what was drawn, where, from how many nets."""

    COLUMNS = ["panel", "series", "kind", "x", "y", "y_low", "y_high", "nets", "of", "source"]

    def __init__(self):
        self.rows = []

    def add(self, panel, series, kind, x, y=None, y_low=None, y_high=None, nets=None, of=None, source="mine"):
        self.rows.append([panel, series, kind, x, y, y_low, y_high, nets, of, source])

    def text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.COLUMNS)
        for r in self.rows:
            w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in r])
        return buf.getvalue()


def _counts(study: Study, summary: dict, series: str) -> dict:
    """x -> (nets with results, nets the design has) for one series (a diverged net has none)."""
    out = {}
    for net in study.nets.values():
        if net.series == series:
            have, want = out.get(str(net.x), (0, 0))
            out[str(net.x)] = (have + _usable(summary, net.name), want + 1)
    return out


def _usable(summary: dict, name: str) -> bool:
    """Does net ``name`` have a result a figure may draw (logs, a statistic, and it did not diverge)?"""
    m = summary["nets"].get(name)
    return bool(m) and m.get("health") != "diverged" and m.get("top1_top10_mean") is not None


def _left_out_note(fig, summary) -> None:
    """Say, on the figure, which nets it leaves out because they diverged."""
    gone = [f"{n} ({m['diverged_at']})" for n, m in summary["nets"].items() if m.get("health") == "diverged"]
    if gone:
        fig.text(0.01, 0.995, "left out, diverged at iteration: " + ", ".join(gone[:6]) + (" …" if len(gone) > 6 else ""),
                 fontsize=8, color="#b00000", va="top")


def _xy(points: dict):
    xs = sorted(points, key=float)
    return np.array([float(x) for x in xs]), np.array([points[x] for x in xs], dtype=float)


def _limits(values, step: float = 0.02, pad: float = 0.005):
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return 0.0, 1.0
    lo, hi = math.floor((min(values) - pad) / step) * step, math.ceil((max(values) + pad) / step) * step
    return lo, hi if hi > lo else lo + step


def _no_data(ax, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="#888888")


def _partial_note(fig, study, summary, series_list) -> None:
    """Say, on the figure, which means stand on fewer nets than the design has."""
    notes = []
    for s in series_list:
        for x, (have, want) in sorted(_counts(study, summary, s).items(), key=lambda kv: float(kv[0])):
            if 0 < have < want:
                notes.append(f"{STYLE.get(s, (s,))[0].replace('$^+$', '+')} n={x}: {have} of {want}")
    if notes:
        text = "means over fewer nets than the design: " + ", ".join(notes[:6]) + (" …" if len(notes) > 6 else "")
        fig.text(0.01, 0.005, text, fontsize=7, color="#666666", va="bottom")


def _layers_axis(ax, study: Study, ylabel="Top-1 accuracy (higher is better)", xlabel=True):
    n = len(study.arch.learnable)
    ax.set_xlim(-0.2, n - 1 + 0.35)
    ax.set_xticks(range(n))
    if xlabel:
        ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel(ylabel)


def _plus(ax, x, y, alpha=1.0):
    return ax.scatter(x, y, marker="+", s=30, c="black", linewidths=1.0, zorder=5, alpha=alpha)


def _legend(ax, **kw):
    """A legend where it covers no data (matplotlib's 'best' weighs lines and markers)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=kw.pop("loc", "best"), frameon=True, fancybox=False, **kw)


def fig2_top(study, summary, other=None, labels=("mine", "other"), points=None, lines=()):
    """Every net as a marker. For the presentation frames: ``points``, the series shown as markers, and
    ``lines``, the series shown as mean lines with their regions, on the axes of the whole figure."""
    from matplotlib.legend_handler import HandlerTuple
    fig, ax = plt.subplots(figsize=(9, 5))
    data = Data()
    everything, handles = [], []
    for source, s_data, alpha in ((labels[0], summary, 1.0), (labels[1], other, FADE)):
        if s_data is None:
            continue
        for s, (text, marker, face, edge, dx, plus) in STYLE.items():
            pts = [(study.net(n).x, m["top1_top10_mean"]) for n, m in s_data["nets"].items()
                   if n in study.nets and study.net(n).series == s and _usable(s_data, n)]
            everything += [y for _, y in pts]
            if not pts or (points is not None and s not in points):
                continue
            x, y = np.array(pts, dtype=float).T
            h = ax.scatter(x + dx, y, marker=marker, facecolor=face, edgecolor=edge, s=60, alpha=alpha, zorder=4,
                           linewidths=1.2)
            handles.append(((h, _plus(ax, x + dx, y, alpha)) if plus else h,
                            text if source == labels[0] else f"{text} ({source})"))
            for xi, yi in pts:
                data.add("top", s, "net", xi, yi, source=source)
    if lines:
        base, drawn, _ = _mean_lines(ax, study, summary, lines, data)
        if base is not None and drawn:
            _regions(ax, drawn, base, data, annotate=False)
            shown = [t for _, t in handles]
            if STYLE["baseB"][0] not in shown:
                handles.append((plt.Line2D([], [], color="black", ls="--", marker="o", mfc="white"), STYLE["baseB"][0]))
            handles += [(h, t) for h, t in zip(*ax.get_legend_handles_labels()) if t not in shown]
            order = [v[0] for v in STYLE.values()]
            handles.sort(key=lambda ht: order.index(ht[1]) if ht[1] in order else len(order))
    if not everything:
        _no_data(ax)
    ax.set_ylim(*_limits(everything))
    _layers_axis(ax, study, xlabel=points is not None)      # the authors' frames have it, their Figure 2 top not
    if handles:
        ax.legend(*zip(*handles), loc="best", frameon=True, fancybox=False, ncol=2 if other else 1,
                  handler_map={tuple: HandlerTuple(ndivide=1, pad=0)})
    fig.tight_layout()
    _left_out_note(fig, summary)
    return fig, data


def _means(study, summary, series):
    """x -> mean top-1 of a series; x = 0 is baseB, where the paper's lines start."""
    base = summary["series"].get("baseB", {}).get("0")
    pts = dict(summary["series"].get(series, {}))
    if base is not None and pts:
        pts = {"0": base, **pts}
    return pts


def _mean_lines(ax, study, summary, series, data, other=None, labels=("mine", "other")):
    """A mean line per series from baseB at n = 0, and baseB's dashed line and open circle:
    (baseB, {series: (x, y)} drawn, values drawn)."""
    base = summary["series"].get("baseB", {}).get("0")
    lines, values = {}, []
    for s in ("selffer_BnB_plus", "transfer_AnB_plus", "selffer_BnB", "transfer_AnB"):
        pts = _means(study, summary, s) if s in series else {}
        if not pts:
            continue
        x, y = _xy(pts)
        lines[s] = (x, y)
        values += list(y)
        ax.plot(x, y, color=LINE[s], lw=1.6, zorder=3, label=STYLE[s][0])
        counts = _counts(study, summary, s)
        for xi, yi in zip(x, y):
            have, want = counts.get(f"{xi:g}", (None, None)) if xi else _counts(study, summary, "baseB").get("0", (None, None))
            data.add("means", s, "mean", float(xi), float(yi), nets=have, of=want)
        if other is not None and _means(study, other, s):
            ox, oy = _xy(_means(study, other, s))
            values += list(oy)
            ax.plot(ox, oy, color=LINE[s], lw=1.2, ls="--", alpha=FADE + 0.2, zorder=2, label=f"{STYLE[s][0]} ({labels[1]})")
            for xi, yi in zip(ox, oy):
                data.add("means", s, "mean", float(xi), float(yi), source=labels[1])
    if base is not None and lines:
        values.append(base)
        ax.axhline(base, color="black", lw=1.5, ls="--", zorder=3)
        ax.scatter([0], [base], s=90, facecolor="white", edgecolor="black", linewidths=2, zorder=6)
    return base, lines, values


def fig2_bottom(study, summary, annotate, other=None, labels=("mine", "other")):
    """The means: a line per series from baseB at n = 0, the regions between them, numbered 2–5."""
    fig, ax = plt.subplots(figsize=(9, 5))
    data = Data()
    base, lines, values = _mean_lines(ax, study, summary, tuple(LINE), data, other, labels)
    ax.set_ylim(*_limits(values))
    if base is None or not lines:
        _no_data(ax, "no data" if base is None and not lines else "no baseB, so no regions")
    else:
        _regions(ax, lines, base, data, annotate)
    _layers_axis(ax, study)
    if not annotate:
        _legend(ax)
    _partial_note(fig, study, summary, list(lines))
    fig.tight_layout()
    _left_out_note(fig, summary)
    return fig, data


def _regions(ax, lines, base, data, annotate):
    """The paper's regions: 2 (BnB below baseB), 3 (BnB+ above baseB), 4 (AnB below BnB), 5 (AnB+ above baseB).
    ``annotate``: each region's explanation, where the region is tall enough on the axes to point at."""
    lo_y, hi_y = ax.get_ylim()
    line_height = 0.05 * (hi_y - lo_y)               # about one line of the explanations' text, in data units
    visible = set()

    def fill(number, x, low, high):
        ax.fill_between(x, low, high, where=high > low, color=REGIONS[number][1], alpha=0.45, lw=0,
                        interpolate=True, zorder=1)
        for xi, lo, hi in zip(x, low, high):
            if hi > lo:
                data.add("means", f"region {number}", "region", float(xi), None, float(lo), float(hi))
        if np.max(np.asarray(high) - np.asarray(low), initial=0) >= 0.4 * line_height:
            visible.add(number)
    x_end = max(x[-1] for x, _ in lines.values())
    b = lambda x: np.full(len(x), base)   # noqa: E731
    spots = {}
    if "transfer_AnB_plus" in lines:
        x, y = lines["transfer_AnB_plus"]
        fill(5, x, b(x), y)
        spots[5] = (x_end, max(y.max(), base), "right", "bottom")
    if "selffer_BnB_plus" in lines:
        x, y = lines["selffer_BnB_plus"]
        fill(3, x, b(x), y)
        top = max(y.max(), base)
        if 5 in spots:                               # between the two lines, or under 5's text where they are close
            five = max(spots[5][1], top)
            spots[5] = (x_end, five, "right", "bottom")
            spots[3] = ((x_end, (top + five) / 2, "right", "center") if five - top >= 1.5 * line_height
                        else (x_end, five - 0.2 * line_height, "right", "top"))
        else:
            spots[3] = (x_end, top, "right", "bottom")
    if "selffer_BnB" in lines:
        x, y = lines["selffer_BnB"]
        fill(2, x, y, b(x))
        i = int(np.argmin(y))
        spots[2] = (x[i], (y[i] + base) / 2 + (base - y[i]) * 0.1, "right", "center")
        if "transfer_AnB" in lines:
            xa, ya = lines["transfer_AnB"]
            common = np.intersect1d(x, xa)
            yb, yaa = np.interp(common, x, y), np.interp(common, xa, ya)
            fill(4, common, yaa, yb)
            j = len(common) - 1
            spots[4] = (common[j] - 0.05, yb[j] - 0.3 * (yb[j] - yaa[j]), "right", "center")
    if annotate:
        top = max((y + 1.3 * line_height for n, (_, y, _, va) in spots.items() if n in visible and va == "bottom"),
                  default=hi_y)
        if top > hi_y:                               # room above the lines for the top explanation
            ax.set_ylim(lo_y, math.ceil(top / 0.02) * 0.02)
        for number, (x, y, ha, va) in spots.items():
            if number not in visible:
                continue
            ax.text(x, y, REGIONS[number][0], ha=ha, va=va, fontsize=12 if number in (3, 5) else 11, zorder=7)


def fig3(study, summary, other=None, labels=("mine", "other")):
    """Man-made/natural split and random filters (top), and top-1 relative to each reference, ``acc − ref`` (bottom)."""
    fig = plt.figure(figsize=(8.5, 6.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.7], hspace=0.3, wspace=0.2)
    top_l, top_r, bottom = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    data = Data()
    drawn = {"natman": False, "random": False, "relative": False}
    for source, s_data, alpha, ls in ((labels[0], summary, 1.0, "-"), (labels[1], other, FADE, "--")):
        if s_data is None:
            continue
        series = s_data["series"]
        for s in ("natman_to_natural", "natman_to_manmade"):
            drawn["natman"] |= _reference_line(top_l, series.get(s, {}), "h", *ORANGE, alpha, ls, data, "natman", s, source)
        drawn["random"] |= _reference_line(top_r, series.get("random_frozen", {}), "v", *OLIVE, alpha, ls, data,
                                           "random", "random_frozen", source)
        rel = {}
        base = series.get("baseB", {}).get("0")
        if base is not None and series.get("transfer_AnB"):
            rel["mean AnB, random splits"] = ({"0": 0.0, **{x: v - base for x, v in series["transfer_AnB"].items()}},
                                              "D", ("#ff0000", "#b00000"))
        nm = [{x: v - pts["0"] for x, v in pts.items()} for pts in (series.get("natman_to_natural", {}),
                                                                       series.get("natman_to_manmade", {})) if "0" in pts]
        if nm:
            xs = sorted(set.intersection(*(set(p) for p in nm)), key=float)
            rel["mean AnB, m/n split"] = ({x: float(np.mean([p[x] for p in nm])) for x in xs}, "h", ORANGE)
        rf = series.get("random_frozen", {})
        if "0" in rf:
            rel["random features"] = ({x: v - rf["0"] for x, v in rf.items()}, "v", OLIVE)
        for label, (pts, marker, (face, edge)) in rel.items():
            x, y = _xy(pts)
            bottom.plot(x, y, color=face, ls=ls, marker=marker, markerfacecolor=face,
                        markeredgecolor="black" if marker != "v" else edge, ms=9, alpha=alpha, zorder=3,
                        label=label if source == labels[0] else f"{label} ({source})")
            for xi, yi in zip(x, y):
                data.add("relative", label, "acc - ref", float(xi), float(yi), source=source)
            drawn["relative"] = True
    if drawn["relative"]:
        bottom.scatter([0], [0], s=90, facecolor="white", edgecolor="black", linewidths=2, zorder=6, label="reference")
    top_l.set_title("Man-made/Natural split", fontsize=12)
    top_r.set_title("Random, untrained filters", fontsize=12)
    for ax, key in ((top_l, "natman"), (top_r, "random"), (bottom, "relative")):
        _layers_axis(ax, study, xlabel=ax is bottom, ylabel="Top-1 accuracy" if ax is top_l else "")
        if not drawn[key]:
            _no_data(ax)
    top_r.set_ylabel("")
    bottom.set_ylabel("Relative top-1 accuracy (higher is better)")
    bottom.set_ylim(-0.30, 0.03)
    top_r.set_ylim(bottom=0)
    handles, names = bottom.get_legend_handles_labels()
    if handles:
        order = sorted(range(len(names)), key=lambda i: names[i] != "reference")
        bottom.legend([handles[i] for i in order], [names[i] for i in order], loc="lower center",
                      bbox_to_anchor=(0.55, 0.02), frameon=True, fancybox=False)
    return fig, data


def _reference_line(ax, pts: dict, marker, face, edge, alpha, ls, data, panel, series, source) -> bool:
    """A series drawn as the authors did: an open circle for its reference (n = 0), then markers from n = 1."""
    if not pts:
        return False
    x, y = _xy(pts)
    ref = x == 0
    ax.plot(x[~ref], y[~ref], ls=ls, color=face, marker=marker, markerfacecolor=face, markeredgecolor=edge if
            marker == "v" else "black", ms=8, alpha=alpha, zorder=3)
    ax.scatter(x[ref], y[ref], s=80, facecolor="white", edgecolor="black", linewidths=1.8, alpha=alpha, zorder=4)
    for xi, yi in zip(x, y):
        data.add(panel, series, "reference" if xi == 0 else "mean", float(xi), float(yi), source=source)
    return True


def fig_reduced(study, summary, other=None, labels=("mine", "other")):
    """Top-1 against training images per class: linear (top) and log–log (bottom)."""
    fig, axes = plt.subplots(2, 1, figsize=(7, 6))
    data = Data()
    for ax, log in zip(axes, (False, True)):
        for source, s_data, alpha, ls in ((labels[0], summary, 1.0, "-"), (labels[1], other, FADE, "--")):
            pts = (s_data or {}).get("series", {}).get("reduced")
            if not pts:
                continue
            x, y = _xy(pts)
            ax.plot(x, y, ls=ls, color="#0000ff", marker="o", markerfacecolor="#0000ff", ms=8, alpha=alpha,
                    label=None if not other else source)
            if not log:
                for xi, yi in zip(x, y):
                    data.add("reduced", "reduced", "mean", float(xi), float(yi), source=source)
        if not ax.lines:
            _no_data(ax)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("Number of examples per class" + (" (log)" if log else " (linear)"))
        ax.set_ylabel("Top-1 accuracy")
        if other:
            _legend(ax)
    fig.tight_layout()
    return fig, data


# The authors' presentation build-up, result_transfer_pres_00…06: (series as markers, series as mean lines).
PRES = ((("baseB", "selffer_BnB", "transfer_AnB"), ()),
        (("baseB", "selffer_BnB", "transfer_AnB"), ("selffer_BnB", "transfer_AnB")),
        ((), ("selffer_BnB", "transfer_AnB")),
        (("selffer_BnB_plus",), ("selffer_BnB", "transfer_AnB")),
        ((), ("selffer_BnB", "transfer_AnB", "selffer_BnB_plus")),
        (("transfer_AnB_plus",), ("selffer_BnB", "transfer_AnB", "selffer_BnB_plus")),
        ((), ("selffer_BnB", "transfer_AnB", "selffer_BnB_plus", "transfer_AnB_plus")))


def _save(fig, out: Path, stem: str, formats, data: Data = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
        atomic.write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    if data is not None:
        atomic.write_text(out / f"{stem}.csv", data.text())
        paths.append(out / f"{stem}.csv")
    return paths


def figures(study, summary, other=None, labels=("mine", "other")) -> list:
    """(stem, figure, data) of the paper's figures."""
    return [("fig2_top", *fig2_top(study, summary, other, labels)),
            ("fig2_bottom", *fig2_bottom(study, summary, False, other, labels)),
            ("fig2_bottom_annotated", *fig2_bottom(study, summary, True, other, labels)),
            ("fig3", *fig3(study, summary, other, labels)),
            ("reduced", *fig_reduced(study, summary, other, labels))]


def plot_all(study, summary, out, formats=("png",), other=None, labels=("mine", "other"), build=False) -> list[Path]:
    """Every figure in ``formats`` with its data file; ``build``: also the authors' presentation frames
    ``pres_00…06`` (Figure 2 on fixed axes: the nets, then their means, then BnB⁺, then AnB⁺)."""
    out = Path(out)
    paths = [p for stem, fig, data in figures(study, summary, other, labels) for p in _save(fig, out, stem, formats, data)]
    if build:
        for i, (points, lines) in enumerate(PRES):
            fig, _ = fig2_top(study, summary, None, labels, points=points, lines=lines)
            paths += _save(fig, out, f"pres_{i:02d}", formats)
    return paths


def plot_curves(logs: dict, out, formats=("png",)) -> list[Path]:
    """Train loss, val accuracy and learning rate against iteration, one figure per net."""
    paths = []
    for name, log in logs.items():
        fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
        axes[0].plot(*log.loss, lw=0.6, color="#555555")
        axes[0].set_ylabel("train loss")
        acc = log.accuracy
        axes[1].plot(list(acc), list(acc.values()), color="#b41f1f")
        axes[1].set_ylabel("val top-1")
        axes[2].plot(*log.lr, color="#1f3fb4")
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
