"""Per-net metrics and the paper's series, from the logs under a results folder.

The paper's statistic for a net is the mean of its 10 highest top-1 validation accuracies; a series
point is the mean of that statistic over the nets at that point.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .folder import StudyFolder, segment_order
from .logs import merge, parse_segment
from .study import Net, Study

CACHE_VERSION = 4
COLUMNS = ["iterations", "tests", "classes", "top1_last", "top1_best", "top1_top10_mean",
           "val_loss_bottom10_mean", "train_loss_bottom10_mean", "engine"]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else None


def metrics(log, net: Net) -> dict:
    acc = list(log.accuracy.values())
    vloss = list(log.val_loss.values())
    loss = log.loss[1]
    return {
        "iterations": log.iterations,
        "tests": len(acc),
        "classes": net.classes,
        "top1_last": acc[-1] if acc else None,
        "top1_best": max(acc) if acc else None,
        "top1_top10_mean": _mean(sorted(acc, reverse=True)[:10]),
        "val_loss_bottom10_mean": _mean(sorted(vloss)[:10]),
        "train_loss_bottom10_mean": float(np.sort(loss)[:10].astype(np.float64).mean()) if len(loss) else None,
        "engine": log.engines,
    }


# --------------------------------------------------------------------------- cache and parsing

def cache_dir() -> Path:
    """Where parsed logs are kept: ``$XDG_CACHE_HOME/transferfeat/logs`` (one file per results folder)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transferfeat" / "logs"


def _cache_path(root: Path) -> Path:
    return cache_dir() / (hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16] + ".pickle")


def _key(p: Path):
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


def _parse_for_results(path):
    return parse_segment(path, lr=False)


def parse_root(study: Study, root, use_cache: bool = True, workers: int = None) -> dict:
    """Net name -> merged NetLog, for every net of the study with log files under ``root``."""
    root = Path(root)
    folder = StudyFolder(root, study)
    files = {net.name: folder.net(net.name).logs() for net in study.nets.values()}
    files = {k: v for k, v in files.items() if v}
    cache_file = _cache_path(root)
    cache = {}
    if use_cache and cache_file.is_file():
        try:
            with open(cache_file, "rb") as f:
                data = pickle.load(f)
            cache = data["segments"] if data.get("version") == CACHE_VERSION else {}
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, AttributeError):
            cache = {}
    keys = {p: _key(p) for paths in files.values() for p in paths}
    todo = [p for p, k in keys.items() if k not in cache]
    if todo:
        todo.sort(key=lambda p: -p.stat().st_size)       # big files first: better balance across workers
        if len(todo) > 4 and (workers or os.cpu_count() or 1) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                parsed = list(pool.map(_parse_for_results, todo, chunksize=1))
        else:
            parsed = [_parse_for_results(p) for p in todo]
        for p, seg in zip(todo, parsed):
            cache[keys[p]] = seg
        if use_cache:
            from . import atomic
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            live = {k: cache[k] for k in keys.values()}
            atomic.write_bytes(cache_file, pickle.dumps({"version": CACHE_VERSION, "segments": live},
                                                         protocol=pickle.HIGHEST_PROTOCOL))
    return {name: merge([cache[keys[p]] for p in sorted(paths, key=segment_order)]) for name, paths in files.items()}


def summarize(study: Study, logs: dict) -> dict:
    """The ``tf results --format json`` document: per-net metrics, series means and missing nets."""
    nets, points = {}, {}
    for net in study.nets.values():
        log = logs.get(net.name)
        if log is None or not log.accuracy:
            continue
        nets[net.name] = metrics(log, net)
        if net.series:
            points.setdefault(net.series, {}).setdefault(net.x, []).append(nets[net.name]["top1_top10_mean"])
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
