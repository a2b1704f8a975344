"""The miniature study end to end: synth -> split -> db -> mean -> render -> run -> results ->
figures -> report."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from .databases import build_db, study_builds

from .mean import study_mean
from .engines import Engine
from .errors import Error
from .folder import DatasetFolder, StudyFolder
from .plots import plot_all
from .render import Renderer
from .report import write as write_report
from .logcache import parse_root
from .results import summarize
from .schedulers.local import Pool
from .splits import make_splits
from .state import status_rows
from .study import Net, Study
from .synth import synthesize

# One split pair: the base nets, and frozen and fine-tuned transfer (AnB) and selffer (BnB) nets, n = 1..7.
DEFAULT_NETS = ("half0A", "half0B", "transfer0A0B_1_*", "transfer0A0A_1_*", "transfer-ft0A0B_1_*", "transfer-ft0A0A_1_*")


def prepare_data(study: Study, out: Path, nets: list[Net], echo: Callable = print) -> Path:
    """Synthetic images, list files, databases and means for ``nets`` under ``out`` (reused when present)."""
    ds = study.config.datasets
    if ds.valid_per_class is None or not study.config.input.resize:
        raise Error(f"study {study.config.name!r} needs datasets.valid_per_class and input.resize for synthetic data")
    images = out / "synth"
    if not DatasetFolder(images, "whole_valid").files.is_file():
        partial = out / "synth.partial"
        shutil.rmtree(partial, ignore_errors=True)
        size = study.config.input.resize
        info = synthesize(partial, ds.classes, ds.train_per_class, ds.valid_per_class, (size, size), seed=0)
        partial.rename(images)
        echo(f"synth: {info['classes']} classes, {info['train']} train and {info['valid']} val images in {images}")
    data = out / "data"
    needed = sorted({d for n in nets for d in (n.train, n.valid)})
    if not all(DatasetFolder(data, d).files.is_file() for d in needed):
        written, _ = make_splits(study, images, data)
        echo(f"split: {len(written)} list files in {data}")
    for name, files, folder, db in study_builds(study, needed, data, images):
        if not db.exists():
            r = build_db(files, folder, db, classes=ds.classes, progress=False)
            echo(f"db: {name}: {r.written} records")
    for d in sorted({n.mean for n in nets}):
        if not DatasetFolder(data, d).mean.exists():
            path, _ = study_mean(study, d, data, progress=False)
            echo(f"mean: {path}")
    return data


def demo(out, engine: Engine, patterns=None, study: Study = None, parallel: int = None, echo: Callable = print,
         interval=15.0) -> dict:
    """Run the miniature study into ``out``; returns the results summary."""
    out = Path(out)
    study = study or Study.load("mini")
    nets = study.with_bases(study.select(patterns or DEFAULT_NETS))
    echo(f"demo: {len(nets)} nets of study {study.config.name!r} into {out}")
    data = prepare_data(study, out, nets, echo)
    results = out / "results"
    Renderer(study).render_all(nets, results, data)
    parallel = parallel or os.cpu_count() or 1
    folder = StudyFolder(results, study)
    summary = Pool(folder, nets, [None] * parallel, engine, retries=1, threads=1, echo=echo, interval=interval).run()
    if summary.failed or summary.interrupted:
        raise Error(f"demo: {len(summary.failed)} failed, {len(summary.interrupted)} interrupted: "
                    f"{', '.join(list(summary.failed) + summary.interrupted)}; run it again to resume")
    logs = parse_root(study, results)
    result = summarize(study, logs)
    label = f"{out.name}/results"
    for p in plot_all(study, result, out / "figures", labels=(label, "other")):
        echo(f"wrote {p}")
    size = write_report(folder, result, logs, status_rows(folder, nets, logs), out / "report.html", labels=(label, "other"))
    echo(f"wrote {out / 'report.html'} ({size / 1024:.0f} KB)")
    return result


def closing_lines(study: Study, summary: dict, out: Path, seconds: float, engine: str) -> list[str]:
    """The demo's three closing lines: what was trained, what the result shows, where to look."""
    s, nets = summary["series"], summary["nets"]
    minutes, secs = divmod(round(seconds), 60)
    lines = [f"trained: {len(nets)} nets of the {study.config.name} study ({study.config.datasets.classes} synthetic "
             f"classes split into halves A and B) with {engine} on this machine's CPU, in {minutes} min {secs} s"]
    base = s.get("baseB", {}).get("0")
    anb, plus = s.get("transfer_AnB", {}), s.get("transfer_AnB_plus", {})
    if base is not None and anb:
        first, last = min(anb, key=float), max(anb, key=float)
        falls = first != last and anb[last] < anb[first] - 0.03
        verdict = (f"falls from {anb[first]:.3f} at n = {first} to {anb[last]:.3f} at n = {last}" if falls else
                   f"is {anb[first]:.3f} at n = {first}" if first == last else
                   f"stays at {min(anb.values()):.3f}–{max(anb.values()):.3f} for n = {first}…{last}")
        what = f"units 1..n ({', '.join(study.arch.cuts)})" if study.arch.cuts else "layers 1..n"
        text = (f"shows: a net on half B whose {what} were copied from half A's net and frozen (transfer AnB) "
                f"{verdict}, against {base:.3f} for the base nets")
        if plus:
            text += f"; with those layers fine-tuned (AnB+) it is at {min(plus.values()):.3f}–{max(plus.values()):.3f}"
        if falls and plus and min(plus.values()) > anb[last] + 0.03:
            text += " — the paper's Figure 2: features grow specific with depth, and fine-tuning recovers them"
        lines.append(text)
    elif base is not None:
        lines.append(f"shows: the base nets reach top-1 {base:.3f} (chance: {1 / study.config.datasets.classes:.3f})")
    lines.append(f"see: the figures in {out / 'figures'} (fig2_top.png every net, fig2_bottom_annotated.png the means) "
                 f"and the report {out / 'report.html'} (open it in a browser)")
    return lines
