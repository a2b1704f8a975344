"""The `tf` command: each command parses its options, calls one library function and formats the
answer. Only this module turns domain errors (transferfeat.errors.Error) into click errors.

One vocabulary: --root is the results folder, --data-root the data folder, --format the output
format, --gpus GPU indices, --parallel nets at once, --threads decoding threads.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import click

from .. import formats
from ..errors import Error
from ..folder import StudyFolder
from ..study import STUDY_ENV, Study
from .params import (GPU, Count, Dir, File, Finite, Seed, caffe_option, comma_ints, data_root_option, domain, engine_options, fmt_option,
                     globs_argument, image_formats, root_option, size_of)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--study", "study_path", envvar=STUDY_ENV, metavar="FILE",
              help=f"Study config (YAML), or a packaged one by name ('paper', 'mini'). Default: the results "
                   f"folder's copy, else paper; env {STUDY_ENV}.")
@click.version_option(package_name="transferfeat")
@click.pass_context
def main(ctx, study_path):
    """transferfeat: the networks of Yosinski et al. (2014), rendered, trained and plotted."""
    ctx.obj = {"study_path": study_path}


def command(*args, group=None, context=True, **kwargs):
    """A command of ``group`` (default: tf) run through ``domain``, given the click context first."""
    return lambda f: (group or main).command(*args, **kwargs)(click.pass_context(domain(f)) if context else domain(f))


def study_of(ctx, root=None) -> Study:
    """--study / $TF_STUDY, else the copy a results folder keeps (render writes it), else paper."""
    obj = ctx.find_root().obj
    path = obj["study_path"] or (StudyFolder.study_file(root) if root is not None else None)
    if ("study", str(path)) not in obj:
        obj[("study", str(path))] = Study.load(path)
    return obj[("study", str(path))]


def folder_of(ctx, root: Path, must_exist: bool = False) -> StudyFolder:
    if must_exist and not root.is_dir():
        raise Error(f"results folder {root} does not exist")
    return StudyFolder(root, study_of(ctx, root))


def folder_label(path: Path) -> str:
    path = path.resolve()
    return f"{path.parent.name}/{path.name}"


def compared(ctx, study, root, compare, label, compare_label, no_cache):
    """The compared study's summary (None without --compare; a warning when it has no logs) and the
    (mine, other) labels."""
    other = summary_of(ctx, compare, not no_cache)[1] if compare else None
    if other is not None and not other["nets"]:
        click.echo(f"warning: {compare} has no logs of study {study.config.name!r}: nothing to compare", err=True)
    return other, (label or folder_label(root), compare_label or (folder_label(compare) if compare else "other"))


def engine_of(engine="caffe", precision="fp32", caffe=None):
    from ..engines import get
    return get(engine, caffe=caffe, precision=precision)


@command("list")
@globs_argument
@fmt_option("table", "json")
def list_cmd(ctx, globs, fmt):
    """List the study's nets (all, or those matching the globs).  Example: tf list 'transfer-ft*'"""
    study = study_of(ctx)
    nets = study.select(globs)
    if fmt == "json":
        return click.echo(formats.as_json([n.to_dict(study.arch) for n in nets]))
    click.echo(formats.table([[n.name, n.family, n.base or "-", n.n, "ft" if n.fine_tune else ("frozen" if n.n else "-"),
                               n.train, n.valid, n.classes] for n in nets],
                             ["name", "family", "base", "n", "layers 1..n", "train", "valid", "classes"]))
    click.echo(f"{len(nets)} nets")


@command()
@globs_argument
@root_option
@data_root_option
@click.option("--dialect", type=click.Choice(["caffe1", "v0"]), default="caffe1", show_default=True,
              help="caffe1: Caffe 1.0 syntax and LMDB; v0: the 2014 files byte for byte (LevelDB).")
@click.option("--image-data", is_flag=True, help="caffe1: ImageData layers reading JPEGs from the list files.")
@click.option("--images", type=Dir, help="With --image-data: the folder holding train/ and val/ (or the class folders given to tf split --folder).")
def render(ctx, globs, root, data_root, dialect, image_data, images):
    """Write each net's folder: solver, train and val prototxt, links to base net and data.

    Example: tf render --root results --data-root data
    """
    from ..render import Renderer
    study = study_of(ctx, root)
    nets = study.select(globs)
    Renderer(study, dialect, image_data=image_data).render_all(nets, root, data_root, images)
    click.echo(f"rendered {len(nets)} nets ({dialect}) into {root}")


@command()
@globs_argument
@click.option("--gpu-counts", default="1,4,8,64", show_default=True, help="GPU counts to plan for, comma-separated.")
@click.option("--days-per-net", type=Finite(0, min_open=True),
              help="Days for a full-length net [default: 9.5, the paper's on a K20].")
@click.option("--images-per-second", type=Finite(0, min_open=True),
              help="A GPU's training speed instead (bench_engine.py's, or a log's img/s).")
@click.option("--measured", is_flag=True, help="The speed the nets' logs under --root show (median).")
@root_option
@fmt_option("table", "json")
def plan(ctx, globs, gpu_counts, days_per_net, images_per_second, measured, root, fmt):
    """The dependency DAG, the study's GPU-hours and wall days on N GPUs: per-net dependencies
    against block barriers.

    Example: tf plan --images-per-second 4470 --gpu-counts 1,8,64
    """
    from ..plan import describe, estimate
    from ..results import measured_speed
    if sum(v is not None and v is not False for v in (days_per_net, images_per_second, measured)) > 1:
        raise click.UsageError("give one of --days-per-net, --images-per-second and --measured")
    study = study_of(ctx, root if measured else None)
    nets = study.select(globs)
    if measured:
        images_per_second, n = measured_speed(study, root)
        speed = f"{images_per_second:,.0f} img/s, the median of {n} nets' logs under {root}"
    elif images_per_second:
        speed = f"{images_per_second:,.0f} img/s"
    else:
        days_per_net = days_per_net or 9.5
        speed = f"{days_per_net:g} days for a full-length net"
    result = estimate(study, nets, comma_ints(gpu_counts, "positive GPU counts", 1), days_per_net, images_per_second)
    data, lines = describe(study, nets, result, speed)
    click.echo(formats.as_json(data) if fmt == "json" else "\n".join(lines))


@command()
@click.option("--source", type=Dir, help="Folder holding whole_train/ and/or whole_valid/files.txt (default: .).")
@click.option("--folder", type=Dir, help="Your own images instead: FOLDER/<class>/*, validation from FOLDER/val/<class>/* "
                                         "or held out; writes the whole lists and classes.txt into the data root.")
@click.option("--valid-fraction", type=Finite(0, 1, min_open=True, max_open=True), default=0.1, show_default=True,
              help="With --folder and no val/: the fraction of each class held out for validation.")
@click.option("--seed", type=Seed, default=0, show_default=True, help="With --folder: the held-out draw's seed.")
@data_root_option
def split(ctx, source, folder, valid_fraction, seed, data_root):
    """Write the list files of every derived dataset (halves, natman halves, reduced sets).

    Example: tf split --source ILSVRC12 --data-root data      (or: tf split --folder my_images --data-root data)
    """
    from ..splits import folder_lists, make_splits
    if source and folder:
        raise click.UsageError("give --source or --folder, not both")
    study = study_of(ctx)
    if folder:
        f = folder_lists(folder, data_root, study.config.datasets.classes, valid_fraction, seed)
        how = "held out of each class" if f.held_out else f"from {folder / 'val'}"
        click.echo(f"{folder}: {len(f.classes)} classes, {f.train} train images, {f.valid} validation images ({how}), "
                   f"{len(f.skipped)} files skipped")
        for s in f.skipped[:20]:
            click.echo(f"  skipped {folder / s}", err=True)
        source = data_root
    written, skipped = make_splits(study, source or ".", data_root)
    for w in written:
        line = f"{w.dataset:<20} {w.lines:>8} lines  {w.verdict}"
        click.echo(click.style(line, fg="red", bold=True) if w.mismatch else line)
    for s in skipped:
        click.echo(f"skipped {s}", err=True)
    if any(w.mismatch for w in written):
        click.echo(click.style(f"WARNING: {sum(w.mismatch for w in written)} list(s) differ from the paper's",
                               fg="red", bold=True), err=True)
    if not written:
        raise Error(f"no list written: {source} has neither whole_train/ nor whole_valid/files.txt")


def db_jobs(study, datasets, all_, data_root, images, list_file, out, resize):
    """``tf db``'s two forms: (jobs as ``study_builds`` gives them, resize (W, H) or None)."""
    from ..databases import study_builds
    if list_file or out:
        if not (list_file and out and images) or datasets or all_:
            raise Error("the low-level form needs --list, --images and --out, and no DATASET")
        return [(str(out), Path(list_file), Path(images), Path(out))], resize
    if all_ == bool(datasets) or images is None:
        raise Error("name DATASETs or give --all, with --images DIR (or use --list/--images/--out)")
    if resize is None and study.config.input.resize:
        resize = (study.config.input.resize,) * 2
    return study_builds(study, study.datasets() if all_ else datasets, data_root, images), resize or None


@command()
@click.argument("datasets", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dataset of the study.")
@data_root_option
@click.option("--images", type=Dir, help="Image folder: train/ and val/ (or the class folders given to tf split --folder) for datasets; the list's root with --list.")
@click.option("--list", "list_file", type=File, help="Low-level form: a list file.")
@click.option("--out", type=click.Path(path_type=Path), help="Low-level form: the LMDB to write.")
@click.option("--resize", help="WxH; 0 keeps the size. Default: the study's input.resize for datasets, none with --list.")
@click.option("--encoded", is_flag=True, help="Store the image files' own bytes (re-encoded when resized).")
@click.option("--shuffle/--no-shuffle", default=True, show_default=True, help="Shuffle the records (seeded).")
@click.option("--seed", type=Seed, default=0, show_default=True, help="Shuffle seed.")
@click.option("--threads", type=Count, help="Decoding threads (default: one per core).")
@click.option("--max-skip", type=Finite(0, 1), default=0.01, show_default=True, help="Fail when more than this fraction of images cannot be read.")
@click.option("--no-space-check", is_flag=True, help="Start even when the disk seems to lack room for the estimate.")
@click.option("--store", is_flag=True, help="Instead of a database per dataset: one image store (store/train, store/val) "
                                            "and every dataset as an index into it (the torch engine reads them; Caffe "
                                            "needs per-dataset databases).")
@click.option("--rebuild", is_flag=True, help="Build again a database whose list changed since (a new tf split) or that "
                                              "was built with other settings (without it: an error).")
def db(ctx, datasets, all_, data_root, images, list_file, out, resize, encoded, shuffle, seed, threads, max_skip,
       no_space_check, store, rebuild):
    """Build Caffe LMDB databases (Datum records) from list files, as convert_imageset does.

    Example: tf db --all --data-root data --images ILSVRC12      (or: tf db --store --data-root data --images ILSVRC12)
    """
    from ..databases import build_db, reuse
    study = study_of(ctx)
    if store:
        from ..store import build_store, sizes
        if datasets or list_file or out or images is None:
            raise click.UsageError("--store takes --images DIR and --data-root, and builds for every dataset")
        size = size_of(resize) if resize is not None else ((study.config.input.resize,) * 2 if study.config.input.resize else None)
        s = sizes(study, data_root, images, size or None, encoded)
        click.echo(f"disk for study {study.config.name!r}: a database per dataset {formats.nbytes(s['datasets'])}; the "
                   f"store {formats.nbytes(s['store'])} and its indexes {formats.nbytes(s['indexes'])}")
        build_store(study, data_root, images, size or None, encoded, threads, log=click.echo, max_skip=max_skip,
                    check_space=not no_space_check, rebuild=rebuild)
        return
    jobs, size = db_jobs(study, datasets, all_, data_root, images, list_file, out, None if resize is None else size_of(resize))
    for _, lst, img, dest in jobs:
        if not list_file and reuse(dest, lst, rebuild, click.echo, resize=size, encoded=encoded, shuffle=shuffle,
                                   seed=seed):
            continue
        r = build_db(lst, img, dest, classes=study.config.datasets.classes, resize=size, encoded=encoded,
                     shuffle=shuffle, seed=seed, threads=threads, max_skip=max_skip, log=click.echo,
                     check_space=not no_space_check)
        click.echo(f"{dest}: {r.written} records, {len(r.skipped)} skipped" + (f", resumed at record {r.resumed_at}" if r.resumed_at else ""))
        for line, f, reason in r.skipped[:20]:
            click.echo(f"  skipped {lst}:{line} {f}: {reason}", err=True)


@command()
@click.argument("dataset", required=False)
@click.option("--db", "db_path", type=Dir, help="An LMDB instead of a dataset (needs --out).")
@click.option("--out", type=File, help="Mean file to write (default: the dataset's mean.binaryproto).")
@data_root_option
def mean(ctx, dataset, db_path, out, data_root):
    """Write a database's mean image as a BlobProto (as compute_image_mean does).

    Example: tf mean half0A_train --data-root data
    """
    from ..mean import compute_mean, study_mean, write_mean
    if bool(dataset) == bool(db_path) or (db_path and not out):
        raise click.UsageError("give a DATASET, or --db DB with --out FILE")
    if dataset:
        out, m = study_mean(study_of(ctx), dataset, data_root, out)
    else:
        write_mean(m := compute_mean(db_path), out)
    click.echo(f"{out}: {'x'.join(map(str, m.shape))}, channel means " + " ".join(f"{v:.3f}" for v in m.reshape(m.shape[0], -1).mean(axis=1)))


@command(context=False)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@fmt_option("text", "json")
def inspect(path, fmt):
    """Describe a .binaryproto, an LMDB or a .caffemodel."""
    from ..databases import inspect_path
    info = inspect_path(path)
    if fmt == "json":
        return click.echo(formats.as_json(info))
    click.echo("\n".join([f"{k}: {v}" for k, v in info.items() if k != "layers"] + [
        f"  {l['name']:<12} {l['type']:<14} " + " ".join("x".join(map(str, b)) for b in l["blobs"]) for l in info.get("layers", [])]))


@command(context=False)
@click.option("--classes", type=click.IntRange(2), default=20, show_default=True, help="Number of classes.")
@click.option("--train-per-class", type=Count, default=120, show_default=True, help="Training images per class.")
@click.option("--valid-per-class", type=Count, default=30, show_default=True, help="Validation images per class.")
@click.option("--size", default="32x32", show_default=True, help="WxH of the images.")
@click.option("--seed", type=Seed, default=0, show_default=True, help="Random seed.")
@click.option("--out", type=Dir, required=True, help="Folder to write (ILSVRC layout).")
def synth(classes, train_per_class, valid_per_class, size, seed, out):
    """Generate a learnable JPEG data set in ILSVRC layout (train/, val/, whole_*/files.txt)."""
    from ..synth import synthesize
    info = synthesize(out, classes, train_per_class, valid_per_class, size_of(size), seed)
    click.echo(f"{out}: {info['classes']} classes, {info['train']} train and {info['valid']} val images")


@command()
@click.argument("net")
@root_option
@click.option("--gpu", type=GPU, help="GPU index (default: train on the CPU).")
@engine_options
def train(ctx, net, root, gpu, engine, precision, caffe):
    """Train one net; resume it from its latest whole snapshot if it was interrupted.

    Example: tf train transfer0A0B_1_3 --root results --gpu 0
    """
    from ..training import train as train_net
    folder = folder_of(ctx, root)
    if train_net(folder, folder.study.net(net), engine_of(engine, precision, caffe), gpu, echo=click.echo) == "interrupted":
        ctx.exit(130)


@command("test")
@click.argument("net")
@root_option
@click.option("--weights", type=File, help="The caffemodel to score (default: the net's verified final snapshot).")
@click.option("--iterations", type=click.IntRange(1), help="Batches to score (default: the solver's test_iter).")
@click.option("--gpu", type=GPU, help="GPU index (default: the CPU).")
@engine_options
def test_cmd(ctx, net, root, weights, iterations, gpu, engine, precision, caffe):
    """Score a snapshot on the net's val net and print what `caffe test` prints, with either engine.

    Example: tf test half0A --root results --engine torch
    """
    from ..training import score
    folder = folder_of(ctx, root)
    ctx.exit(score(folder, folder.study.net(net), engine_of(engine, precision, caffe), weights, iterations, gpu, click.echo))


@command()
@globs_argument
@root_option
@click.option("--gpus", help="GPU indices, comma-separated: one net per GPU.")
@click.option("--parallel", type=click.IntRange(1), help="Without --gpus: train this many nets at once on the CPU.")
@click.option("--retries", type=click.IntRange(0), default=1, show_default=True, help="Retries of a crashed net (from its snapshot).")
@click.option("--interval", type=Finite(0, min_open=True), default=10.0, show_default=True, help="Seconds between progress reports.")
@engine_options
def run(ctx, globs, root, gpus, parallel, retries, interval, engine, precision, caffe):
    """Train the selected nets (all rendered ones by default), each as soon as its own base net is done.

    Example: tf run --root results --gpus 0,1,2,3
    """
    from ..schedulers.local import Pool
    if bool(gpus) == bool(parallel):
        raise click.UsageError("give --gpus 0,1,… or --parallel N")
    devices = comma_ints(gpus, "GPU indices") if gpus else [None] * parallel
    folder = folder_of(ctx, root)
    threads = max(1, (os.cpu_count() or 1) // len(devices)) if parallel else None
    s = Pool(folder, folder.select(globs), devices, engine_of(engine, precision, caffe), retries, threads, click.echo,
             interval).run()
    click.echo("\n".join(s.lines()))
    if s.interrupted or s.failed:
        ctx.exit(130 if s.interrupted else 1)


@command()
@globs_argument
@root_option
@fmt_option("table", "json")
def status(ctx, globs, root, fmt):
    """Every net: pending, blocked on X, running, done or failed, with iteration and val accuracy.

    Example: tf status --root results
    """
    from ..logcache import parse_root
    from ..schedulers.slurm import job_states
    from ..state import status_rows, status_text
    folder = folder_of(ctx, root, must_exist=True)
    nets = folder.select(()) and folder.select(globs)
    rows, jobs = status_rows(folder, nets, parse_root(folder.study, root)), job_states(folder, nets)
    for r in rows:
        r["slurm"] = jobs.get(r["name"])
    click.echo(formats.as_json(rows) if fmt == "json" else status_text(rows))


def summary_of(ctx, root: Path, use_cache: bool = True):
    from ..logcache import parse_root
    from ..results import summarize
    folder = folder_of(ctx, root, must_exist=True)
    return folder.study, summarize(folder.study, parse_root(folder.study, root, use_cache=use_cache))


@command()
@root_option
@fmt_option("table", "csv", "markdown", "json")
@click.option("--no-cache", is_flag=True, help="Parse every log again.")
@click.option("--compare", type=Dir, help="Another results folder: both values and the difference for every series point.")
def results(ctx, root, fmt, no_cache, compare):
    """Per-net metrics and the paper's series from the training logs under --root.

    Example: tf results --root results --format markdown
    """
    from ..results import text
    study, summary = summary_of(ctx, root, not no_cache)
    if not summary["nets"] and not compare and not folder_of(ctx, root).rendered():
        raise Error(f"no rendered net and no logs of study {study.config.name!r} under {root}")
    other = summary_of(ctx, compare, not no_cache)[1] if compare else None
    click.echo(text(study, summary, fmt, other, (str(root), str(compare))))


@main.group(invoke_without_command=True)
@root_option
@click.option("--out", type=Dir, default="figures", show_default=True, help="Folder for the figures.")
@click.option("--image-format", default="png", show_default=True, help="Comma-separated: png,pdf,svg.")
@click.option("--compare", type=Dir, help="Overlay another results folder (e.g. the authors' logs), faded.")
@click.option("--label", help="This study's name on the figures (default: the folder's parent/name).")
@click.option("--compare-label", help="The compared study's name (default: its folder's parent/name).")
@click.option("--build", is_flag=True, help="Also the presentation build-up of Figure 2 (pres_00…), on fixed axes.")
@click.option("--no-cache", is_flag=True, help="Parse every log again.")
@click.pass_context
@domain
def plot(ctx, root, out, image_format, compare, label, compare_label, build, no_cache):
    """The paper's figures (2 top, 2 bottom, 3, reduced data); `plot curves NET…` for training curves.

    Example: tf plot --root results --out figures --image-format png,pdf
    """
    ctx.obj["plot"] = dict(root=root, out=out, image_format=image_format)
    if ctx.invoked_subcommand:
        return
    from ..plots import plot_all
    fmts = image_formats(image_format)
    study, summary = summary_of(ctx, root, not no_cache)
    if not summary["nets"]:
        raise Error(f"no net of study {study.config.name!r} has logs under {root}")
    other, labels = compared(ctx, study, root, compare, label, compare_label, no_cache)
    for p in plot_all(study, summary, out, fmts, other, labels, build=build):
        click.echo(f"wrote {p}")
    if summary["missing"]:
        click.echo(f"{len(summary['missing'])} of {len(study.nets)} nets have no logs yet and are left out: "
                   + " ".join(summary["missing"][:20]) + (" …" if len(summary["missing"]) > 20 else ""))


@command("curves", group=plot)
@click.argument("nets", nargs=-1, required=True)
@click.option("--root", type=Dir, help="Results folder (default: the one given to `plot`, else results).")
@click.option("--out", type=Dir, help="Folder for the figures (default: the one given to `plot`, else figures).")
@click.option("--image-format", help="Comma-separated: png,pdf,svg (default: the one given to `plot`, else png).")
def curves(ctx, nets, root, out, image_format):
    """Train loss, val accuracy and learning rate against iteration (all log segments) for NETs.

    Example: tf plot curves half0A --root results
    """
    from ..logs import parse_files
    from ..plots import plot_curves
    opts = ctx.obj["plot"]
    folder = folder_of(ctx, root or opts["root"])
    chosen = folder.study.select(nets)
    logs = {n.name: parse_files(folder.net(n.name).logs()) for n in chosen if folder.net(n.name).logs()}
    for n in chosen:
        if n.name not in logs:
            click.echo(f"{n.name}: no logs under {folder.root}", err=True)
    if not logs:
        raise Error("none of the selected nets has logs")
    for p in plot_curves(logs, out or opts["out"], image_formats(image_format or opts["image_format"])):
        click.echo(f"wrote {p}")


@command()
@root_option
@click.option("--out", type=File, default="report.html", show_default=True, help="The HTML file to write.")
@click.option("--compare", type=Dir, help="Another results folder: its figures overlaid, deltas in the table.")
@click.option("--label", help="This study's name in the report (default: the folder's parent/name).")
@click.option("--compare-label", help="The compared study's name (default: its folder's parent/name).")
@click.option("--no-cache", is_flag=True, help="Parse every log again.")
def report(ctx, root, out, compare, label, compare_label, no_cache):
    """One self-contained HTML file: the figures, every net (sortable, filterable), curves, provenance.

    Example: tf report --root results --out report.html --compare ../shared/convnet_transfer/results
    """
    from ..report import write
    from ..logcache import parse_root
    from ..results import summarize
    from ..state import status_rows
    folder = folder_of(ctx, root, must_exist=True)
    logs = parse_root(folder.study, root, use_cache=not no_cache)
    summary = summarize(folder.study, logs)
    if not summary["nets"] and not folder.rendered():         # nets that failed before a test still get a report
        raise Error(f"no net of study {folder.study.config.name!r} is rendered or has logs under {root}")
    other, labels = compared(ctx, folder.study, root, compare, label, compare_label, no_cache)
    size = write(folder, summary, logs, status_rows(folder, list(folder.study.nets.values()), logs), out, other, labels)
    click.echo(f"wrote {out} ({size / 1024:.0f} KB)")


@command(context=False)
@fmt_option("text", "json")
@caffe_option
def doctor(fmt, caffe):
    """What tf will use (Caffe's tools, torch, GPUs, SLURM, the log cache) and how to fix what is missing."""
    from ..doctor import diagnose, lines
    info = diagnose(engine_of("caffe", caffe=caffe))
    click.echo(formats.as_json(info) if fmt == "json" else "\n".join(lines(info)))


@command()
@click.option("--out", type=Dir, default="demo", show_default=True, help="Folder for data, results and figures.")
@click.option("--nets", "patterns", multiple=True, help="Net globs, repeatable ('*' for all 170). Default: one split pair.")
@click.option("--parallel", type=click.IntRange(1), help="Nets trained at once (default: one per core).")
@engine_options
def demo(ctx, out, patterns, parallel, engine, precision, caffe):
    """The miniature study end to end on the CPU: data, nets, results, figures.  Example: tf demo --out demo"""
    from ..demo import closing_lines, demo as run_demo
    study, t0 = Study.load(ctx.find_root().obj["study_path"] or "mini"), time.time()
    summary = run_demo(out, engine_of(engine, precision, caffe), patterns, study, parallel, echo=click.echo)
    click.echo("\n" + formats.series_tables(study, summary["series"]))
    click.echo("\n" + "\n".join(closing_lines(study, summary, out, time.time() - t0, engine)))


@command()
@globs_argument
@root_option
@click.option("--partition", help="sbatch --partition.")
@click.option("--gres", help="sbatch --gres, e.g. gpu:1 (then nets train on the job's GPU; without it, on the CPU).")
@click.option("--time", "time_limit", help="D-HH:MM:SS; the job snapshots and requeues itself before it.")
@click.option("--account", help="sbatch --account.")
@click.option("--cpus-per-task", type=Count, help="sbatch --cpus-per-task.")
@click.option("--mem", help="sbatch --mem, e.g. 32G.")
@click.option("--extra", multiple=True, help='One more sbatch option (repeatable), e.g. --extra=--qos=long.')
@click.option("--dry-run", is_flag=True, help="Print the scripts and the dependency graph; touch nothing.")
@engine_options
def submit(ctx, globs, root, partition, gres, time_limit, account, cpus_per_task, mem, extra, dry_run, engine, precision,
           caffe):
    """One SLURM job per net; a transfer net runs after its base net's job (afterok).

    Example: tf submit --root results --gres gpu:1 --time 10-00:00:00
    """
    from ..schedulers.slurm import Resources, submit as do_submit
    folder = folder_of(ctx, root)
    res = Resources(partition, gres, time_limit, account, cpus_per_task, mem, tuple(extra))
    s = do_submit(folder, folder.select(globs), res, engine_of(engine, precision, caffe), dry_run=dry_run, echo=click.echo)
    click.echo("\n".join(s.lines(folder.study, dry_run)))
    if s.failed:
        raise Error("sbatch refused " + "; ".join(f"{n}: {why}" for n, why in s.failed.items()))


@command()
@click.argument("globs", nargs=-1, required=True, metavar="NET|GLOB...")
@root_option
def cancel(ctx, globs, root):
    """Cancel the selected nets' SLURM jobs and those of the nets that depend on them."""
    from ..schedulers.slurm import cancel as do_cancel
    folder = folder_of(ctx, root)
    click.echo(f"{len(do_cancel(folder, folder.study.select(globs), echo=click.echo))} job(s) cancelled")

