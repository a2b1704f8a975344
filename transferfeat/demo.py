"""The miniature study end to end: synth -> split -> db -> mean -> render -> run -> results -> figures."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from .datasets import build_db, compute_mean, write_mean
from .errors import Error
from .netdir import dataset_dir
from .plots import plot_all
from .render import Renderer
from .results import parse_root, summarize
from .runner import Pool
from .splits import make_splits
from .study import Net, Study
from .synth import synthesize

# One split pair: the base nets, and frozen and fine-tuned transfer (AnB) and selffer (BnB) nets, n = 1..7.
DEFAULT_NETS = ("half0A", "half0B", "transfer0A0B_1_*", "transfer0A0A_1_*", "transfer-ft0A0B_1_*", "transfer-ft0A0A_1_*")


def with_bases(study: Study, nets: list[Net]) -> list[Net]:
    names = {n.name for n in nets}
    for n in nets:
        if n.base:
            names.add(n.base)
    return [n for n in study.nets.values() if n.name in names]


def prepare_data(study: Study, out: Path, nets: list[Net], echo: Callable = print) -> Path:
    """Synthetic images, list files, databases and means for ``nets`` under ``out`` (reused when present)."""
    ds = study.config.datasets
    if ds.valid_per_class is None or not study.config.input.resize:
        raise Error(f"study {study.config.name!r} needs datasets.valid_per_class and input.resize for synthetic data")
    images = out / "synth"
    if not (images / "whole_valid" / "files.txt").is_file():
        partial = out / "synth.partial"
        shutil.rmtree(partial, ignore_errors=True)
        size = study.config.input.resize
        info = synthesize(partial, ds.classes, ds.train_per_class, ds.valid_per_class, (size, size), seed=0)
        partial.rename(images)
        echo(f"synth: {info['classes']} classes, {info['train']} train and {info['valid']} val images in {images}")
    data = out / "data"
    needed = sorted({d for n in nets for d in (n.train, n.valid)})
    if not all((dataset_dir(data, d) / "files.txt").is_file() for d in needed):
        written, _ = make_splits(study, images, data)
        echo(f"split: {len(written)} list files in {data}")
    for d in needed:
        db = dataset_dir(data, d) / "lmdb"
        if not db.exists():
            part = "train" if d.endswith("_train") else "val"
            r = build_db(dataset_dir(data, d) / "files.txt", images / part, db, classes=ds.classes, progress=False)
            echo(f"db: {d}: {r.written} records")
    for d in sorted({n.mean for n in nets}):
        path = dataset_dir(data, d) / "mean.binaryproto"
        if not path.exists():
            write_mean(compute_mean(dataset_dir(data, d) / "lmdb", progress=False), path)
            echo(f"mean: {path}")
    return data


def demo(out, patterns=None, study: Study = None, workers: int = None, echo: Callable = print, interval=15.0):
    """Run the miniature study into ``out``; returns the results summary."""
    out = Path(out)
    study = study or Study.load("mini")
    nets = with_bases(study, study.select(patterns or DEFAULT_NETS))
    echo(f"demo: {len(nets)} nets of study {study.config.name!r} into {out}")
    data = prepare_data(study, out, nets, echo)
    results = out / "results"
    Renderer(study).render_all(nets, results, data)
    workers = workers or os.cpu_count() or 1
    summary = Pool(study, results, nets, [None] * workers, retries=1, threads=1, echo=echo, interval=interval).run()
    if summary.failed or summary.interrupted:
        raise Error(f"demo: {len(summary.failed)} failed, {len(summary.interrupted)} interrupted: "
                    f"{', '.join(list(summary.failed) + summary.interrupted)}; run it again to resume")
    result = summarize(study, parse_root(study, results))
    for p in plot_all(study, result, out / "figures"):
        echo(f"wrote {p}")
    return result
