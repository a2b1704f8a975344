"""The paper's figures from a results summary (results.summarize), optionally overlaid with another.

Figure 2 top: every net as a marker; Figure 2 bottom: the mean lines with shaded regions (with and
without the numbered annotations); Figure 3: man-made/natural split, random frozen filters and the
relative-accuracy panel; the supplementary reduced-data plot; training curves of single nets.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .study import Study  # noqa: E402

# (label, marker, face colour, edge colour, x offset): the paper's Figure 2 legend.
STYLE = {
    "baseB": ("baseB", "o", "white", "black", 0.0),
    "selffer_BnB": ("selffer BnB", "o", "#1f3fb4", "#1f3fb4", -0.15),
    "selffer_BnB_plus": ("selffer BnB$^+$", "o", "#8fb4ff", "#3f6fd4", -0.05),
    "transfer_AnB": ("transfer AnB", "D", "#b41f1f", "#b41f1f", 0.05),
    "transfer_AnB_plus": ("transfer AnB$^+$", "D", "#ff9f9f", "#d43f3f", 0.15),
}
FADE = 0.3


def _xy(points: dict):
    xs = sorted(points, key=float)
    return np.array([float(x) for x in xs]), np.array([points[x] for x in xs], dtype=float)


def _save(fig, out: Path, stem: str, formats) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        tmp = out / f".{stem}.tmp.{fmt}"
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def _layers_axis(ax, study: Study, ylabel="Top-1 accuracy (higher is better)"):
    ax.set_xlim(-0.5, len(study.arch.learnable) - 0.5)
    ax.set_xticks(range(len(study.arch.learnable)))
    ax.set_xlabel("Layer n at which network is chopped and retrained")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def fig2_top(study, summary, other=None, other_label="other"):
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, data, alpha in ((None, summary, 1.0), (other_label, other, FADE)):
        if data is None:
            continue
        groups = {}
        for name, m in data["nets"].items():
            if name not in study.nets:
                continue
            net = study.net(name)
            if net.series in STYLE:
                groups.setdefault(net.series, []).append((net.x, m["top1_top10_mean"]))
        for s, (text, marker, face, edge, dx) in STYLE.items():
            pts = groups.get(s)
            if not pts:
                continue
            x, y = np.array(pts, dtype=float).T
            ax.scatter(x + dx, y, marker=marker, facecolor=face, edgecolor=edge, s=40, alpha=alpha, zorder=3,
                       label=text if label is None else f"{text} ({label})")
    _layers_axis(ax, study)
    ax.legend(loc="lower left", fontsize=8, ncol=2 if other else 1)
    ax.set_title("Figure 2 (top): every network")
    return fig


def fig2_bottom(study, summary, annotate, other=None, other_label="other"):
    fig, ax = plt.subplots(figsize=(8, 5))
    series = summary["series"]
    base = series.get("baseB", {}).get("0")
    n = len(study.arch.learnable)
    xs = np.arange(0, n)
    lines = {}
    for s, (text, marker, face, edge, _) in STYLE.items():
        if s == "baseB" or s not in series:
            continue
        x, y = _xy(series[s])
        if base is not None:
            x, y = np.concatenate([[0], x]), np.concatenate([[base], y])
        lines[s] = (x, y)
        ax.plot(x, y, marker=marker, color=edge, markerfacecolor=face, label=text, lw=2, zorder=3)
        if other and s in other["series"]:
            ox, oy = _xy(other["series"][s])
            ob = other["series"].get("baseB", {}).get("0")
            if ob is not None:
                ox, oy = np.concatenate([[0], ox]), np.concatenate([[ob], oy])
            ax.plot(ox, oy, marker=marker, color=edge, markerfacecolor=face, alpha=FADE, lw=1.5, ls="--",
                    label=f"{text} ({other_label})")
    if base is not None:
        ax.axhline(base, color="black", lw=1, ls=":", label="baseB")
        ax.scatter([0], [base], marker="o", facecolor="white", edgecolor="black", s=60, zorder=4)
    if "selffer_BnB" in lines and base is not None:
        x, y = lines["selffer_BnB"]
        ax.fill_between(x, y, base, where=y < base, color="#1f3fb4", alpha=0.12, interpolate=True)
        if "transfer_AnB" in lines:
            x2, y2 = lines["transfer_AnB"]
            common = np.intersect1d(x, x2)
            yb = np.interp(common, x, y)
            ya = np.interp(common, x2, y2)
            ax.fill_between(common, ya, yb, where=ya < yb, color="#b41f1f", alpha=0.12, interpolate=True)
    if annotate and lines:
        notes = [
            ("selffer_BnB", "1", "Performance drops due to fragile co-adaptation"),
            ("transfer_AnB", "2", "Performance drops due to representation specificity"),
            ("selffer_BnB_plus", "3", "Fine-tuning recovers co-adapted interactions"),
            ("transfer_AnB_plus", "4", "Transfer + fine-tuning improves generalization"),
        ]
        text = []
        for s, num, what in notes:
            if s in lines:
                x, y = lines[s]
                i = 1 + int(np.argmin(y[1:])) if num in "12" and len(y) > 1 else len(x) - 1
                ax.annotate(num, (x[i], y[i]), xytext=(6, -14 if num in "12" else 8), textcoords="offset points",
                            fontsize=12, fontweight="bold", color=STYLE[s][3])
                text.append(f"{num}: {what}")
        ax.text(0.02, 0.02, "\n".join(text), transform=ax.transAxes, fontsize=8, va="bottom",
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    ax.set_xticks(xs)
    _layers_axis(ax, study)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("Figure 2 (bottom): means" + (", annotated" if annotate else ""))
    return fig


def fig3(study, summary, other=None, other_label="other"):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))

    def line(ax, data, s, color, label, alpha=1.0, ls="-"):
        if s in data["series"]:
            ax.plot(*_xy(data["series"][s]), "o" + ls, color=color, alpha=alpha, label=label)

    for data, alpha, ls, suffix in ((summary, 1.0, "-", ""), (other, FADE, "--", f" ({other_label})")):
        if data is None:
            continue
        line(axes[0], data, "natman_to_natural", "#1b9e77", "man-made \u2192 natural" + suffix, alpha, ls)
        line(axes[0], data, "natman_to_manmade", "#d95f02", "natural \u2192 man-made" + suffix, alpha, ls)
        line(axes[1], data, "random_frozen", "#7570b3", "random, untrained filters" + suffix, alpha, ls)
        for s, color, label in (("transfer_AnB", "#b41f1f", "transfer AnB"),
                                ("natman_to_natural", "#1b9e77", "man-made \u2192 natural"),
                                ("natman_to_manmade", "#d95f02", "natural \u2192 man-made"),
                                ("random_frozen", "#7570b3", "random filters")):
            pts = data["series"].get(s, {})
            ref = (data["series"].get("baseB", {}) if s == "transfer_AnB" else pts).get("0")
            if not pts or not ref:
                continue
            x, y = _xy(pts)
            if s == "transfer_AnB":
                x, y = np.concatenate([[0], x]), np.concatenate([[ref], y])
            axes[2].plot(x, y / ref - 1, "o" + ls, color=color, alpha=alpha, label=label + suffix)
    axes[0].set_title("Man-made/natural split")
    axes[1].set_title("Random, untrained filters")
    axes[2].set_title("Relative top-1 accuracy")
    for ax in axes[:2]:
        _layers_axis(ax, study)
    _layers_axis(axes[2], study, "Relative top-1 accuracy (vs. n = 0)")
    axes[2].axhline(0, color="black", lw=1, ls=":")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("Figure 3")
    return fig


def fig_reduced(study, summary, other=None, other_label="other"):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, log in zip(axes, (False, True)):
        for data, alpha, ls, label in ((summary, 1.0, "-", "reduced training set"),
                                       (other, FADE, "--", f"reduced ({other_label})")):
            if data is None or "reduced" not in data["series"]:
                continue
            x, y = _xy(data["series"]["reduced"])
            ax.plot(x, y, "o" + ls, color="#333333", alpha=alpha, label=label)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel("Training images per class" + (" (log)" if log else ""))
        ax.set_ylabel("Top-1 accuracy")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Supplementary: accuracy against training-set size")
    return fig


def plot_all(study, summary, out, formats=("png",), other=None, other_label="other") -> list[Path]:
    out = Path(out)
    figs = [
        ("fig2_top", fig2_top(study, summary, other, other_label)),
        ("fig2_bottom", fig2_bottom(study, summary, False, other, other_label)),
        ("fig2_bottom_annotated", fig2_bottom(study, summary, True, other, other_label)),
        ("fig3", fig3(study, summary, other, other_label)),
        ("reduced", fig_reduced(study, summary, other, other_label)),
    ]
    return [p for stem, fig in figs for p in _save(fig, out, stem, formats)]


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
