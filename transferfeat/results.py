"""Per-net metrics and the paper's series, from the logs under a results folder.

The paper's statistic for a net is the mean of its 10 highest top-1 validation accuracies; a series
point is the mean of that statistic over the nets at that point. A net that diverged (health.py) is
scored on its tests before the divergence, marked, and left out of every series; one that ended at
chance is marked.
"""
from __future__ import annotations

import numpy as np

from .errors import Error
from .health import divergence, near_chance
from .logcache import parse_root
from .study import Net, Study

COLUMNS = ["iterations", "tests", "classes", "top1_last", "top1_best", "top1_top10_mean",
           "val_loss_bottom10_mean", "train_loss_bottom10_mean", "engine", "health"]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else None


def metrics(log, net: Net, outputs: int, batch: int) -> dict:
    """A net's numbers from its log; a diverged net's from its tests before the divergence.
    ``outputs``: the width of its last layer (what its loss is over); ``batch``: its training batch."""
    diverged = divergence(log, outputs)
    until = diverged.iteration if diverged else float("inf")
    acc = [v for it, v in log.accuracy.items() if it < until]
    vloss = [v for it, v in log.val_loss.items() if it < until]
    its, loss = log.loss
    loss = loss[(its < until) & np.isfinite(loss)]
    top10 = _mean(sorted(acc, reverse=True)[:10])
    out = {
        "iterations": log.iterations,
        "tests": len(acc),
        "classes": net.classes,
        "top1_last": acc[-1] if acc else None,
        "top1_best": max(acc) if acc else None,
        "top1_top10_mean": top10,
        "val_loss_bottom10_mean": _mean(sorted(vloss)[:10]),
        "train_loss_bottom10_mean": float(np.sort(loss)[:10].astype(np.float64).mean()) if len(loss) else None,
        "engine": log.engines,
        "images_per_second": log.images_per_second(batch),
        "health": "diverged" if diverged else ("at chance" if near_chance(top10, net.classes) else "ok"),
    }
    if diverged:
        out.update(diverged_at=diverged.iteration, diverged=str(diverged))
    return out


def measured_speed(study: Study, root) -> tuple[float, int]:
    """(images/s, how many nets): the median training speed of the nets whose logs under ``root`` show one."""
    batch = study.config.input.train_batch
    rates = [r for r in (log.images_per_second(batch) for log in parse_root(study, root).values()) if r]
    if not rates:
        raise Error(f"{root}: no net's log shows a training speed (display lines, or timestamps)")
    return float(np.median(rates)), len(rates)


def summarize(study: Study, logs: dict) -> dict:
    """The ``tf results --format json`` document: per-net metrics, series means and missing nets."""
    nets, points = {}, {}
    outputs = study.config.datasets.classes
    for net in study.nets.values():
        log = logs.get(net.name)
        if log is None or not log.accuracy:
            continue
        nets[net.name] = m = metrics(log, net, outputs, study.config.input.train_batch)
        if net.series and m["health"] != "diverged" and m["top1_top10_mean"] is not None:
            points.setdefault(net.series, {}).setdefault(net.x, []).append(m["top1_top10_mean"])
    series = {s: {str(x): _mean(v) for x, v in sorted(points[s].items())} for s in study.series() if s in points}
    missing = [n.name for n in study.nets.values() if n.name not in nets]
    return {"nets": nets, "series": series, "missing": missing}


def text(study: Study, summary: dict, fmt: str = "table", other: dict = None, labels=("mine", "other")) -> str:
    """``tf results``: per-net metrics (and the series, in a table), or the series against ``other``."""
    from .formats import as_json, cell, rows_as, series_tables
    if other is not None:
        rows = compare(study, summary, other)
        if fmt == "json":
            return as_json([dict(zip(["series", "x", "mine", "other", "diff"], r)) for r in rows])
        return rows_as(fmt, [[s, x] + [cell(v) for v in r] for s, x, *r in rows], ["series", "x", *labels, "difference"])
    if fmt == "json":
        return as_json(summary)
    text = rows_as(fmt, [[name] + [cell(m[c]) for c in COLUMNS] for name, m in summary["nets"].items()], ["net"] + COLUMNS)
    if fmt != "table":
        return text
    text += "\n\n" + series_tables(study, summary["series"])
    if summary["missing"]:
        text += f"\n\n{len(summary['missing'])} nets without logs: {' '.join(summary['missing'])}"
    return text


def compare(study: Study, mine: dict, other: dict) -> list[tuple]:
    """(series, x, mine, other, mine - other) for every point either has."""
    rows = []
    for s in study.series():
        a, b = mine["series"].get(s, {}), other["series"].get(s, {})
        for x in sorted(set(a) | set(b), key=lambda v: float(v)):
            va, vb = a.get(x), b.get(x)
            rows.append((s, x, va, vb, va - vb if va is not None and vb is not None else None))
    return rows


def headlines(study: Study, summary: dict) -> list[dict]:
    """The numbers the paper states, from these logs: (key, label, value, compared with, what it shows).
    Only those the logs have the series for."""
    s = summary["series"]
    out = []
    base = s.get("baseB", {}).get("0")

    def add(key, label, value, ref, means):
        out.append({"key": key, "label": label, "value": value, "reference": ref, "means": means})
    if base is not None:
        add("base", "base nets, top-1", base, None, "nets trained from scratch on half B (baseB, n = 0)")
    anb = s.get("transfer_AnB", {})
    if base is not None and anb:
        last = max(anb, key=float)
        add("anb", f"transfer AnB at n = {last}", anb[last], base,
            f"layers 1–{last} copied from a net trained on the other half and frozen: the drop from baseB is the "
            f"cost of specificity and of broken co-adaptation")
    bnb = s.get("selffer_BnB", {})
    if base is not None and bnb:
        worst = min(bnb, key=lambda x: bnb[x])
        add("bnb", f"selffer BnB, lowest (n = {worst})", bnb[worst], base,
            "layers copied from a net of the same half and frozen: a dip below baseB is fragile co-adaptation (region 2)")
    plus = s.get("transfer_AnB_plus", {})
    if base is not None and plus:
        mean_plus = sum(plus.values()) / len(plus)
        add("anb_plus", "transfer AnB+ (fine-tuned), mean over n", mean_plus, base,
            "the copied layers fine-tuned: above baseB, transfer plus fine-tuning generalizes better (region 5)")
    nm = [(x, v) for x, v in ((s.get(k, {}), k) for k in ("natman_to_natural", "natman_to_manmade"))]
    drops = [pts[max(pts, key=float)] - pts["0"] for pts, _ in nm if "0" in pts and len(pts) > 1]
    if drops and base is not None and anb:
        last = max(anb, key=float)
        add("natman", f"man-made/natural split, mean drop at n = {last}", sum(drops) / len(drops), anb[last] - base,
            "transfer between dissimilar halves (man-made and natural classes) loses more than between random halves")
    rf = s.get("random_frozen", {})
    if "0" in rf and len(rf) > 1:
        worst = min((x for x in rf if x != "0"), key=lambda x: rf[x])
        add("random", f"random frozen layers 1–{worst}", rf[worst], rf["0"],
            "untrained, frozen lower layers: performance collapses, so learned features matter even at layer 1–3")
    return out
