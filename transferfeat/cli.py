"""The `tf` command: thin click wrappers over the library. Only this module turns domain errors
(transferfeat.errors.Error) into ClickException."""
from __future__ import annotations

import functools
import os
import json
from pathlib import Path

import click

from .errors import Error
from .study import STUDY_COPY, STUDY_ENV, Study


def domain(f):
    """Run a command body, turning domain errors and OS errors into clean click errors."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except Error as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from None
    return wrapper


def study_of(ctx: click.Context, root=None) -> Study:
    """The study: --study / $TF_STUDY, else the copy a results folder keeps (render writes it), else paper."""
    obj = ctx.find_root().obj
    path = obj["study_path"]
    if not path and root is not None and (Path(root) / STUDY_COPY).is_file():
        path = Path(root) / STUDY_COPY
    key = ("study", str(path))
    if key not in obj:
        obj[key] = Study.load(path)
    return obj[key]


def table(rows: list[list], header: list[str]) -> str:
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--study", "study_path", envvar=STUDY_ENV, metavar="FILE",
              help=f"Study config (YAML), or a packaged one by name ('paper', 'mini'). Default: paper; env {STUDY_ENV}.")
@click.version_option(package_name="transferfeat")
@click.pass_context
def main(ctx, study_path):
    """transferfeat: the networks of Yosinski et al. (2014), rendered, trained by Caffe, and plotted."""
    ctx.obj = {"study_path": study_path}


@main.command("list")
@click.argument("globs", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@domain
def list_cmd(ctx, globs, fmt):
    """List the study's nets (all, or those matching GLOBS)."""
    study = study_of(ctx)
    nets = study.select(globs)
    if fmt == "json":
        click.echo(json.dumps([n.to_dict(study.arch) for n in nets], indent=1))
        return
    rows = [[n.name, n.family, n.base or "-", n.n, "ft" if n.fine_tune else ("frozen" if n.n else "-"),
             n.train, n.valid, n.classes] for n in nets]
    click.echo(table(rows, ["name", "family", "base", "n", "layers 1..n", "train", "valid", "classes"]))
    click.echo(f"{len(nets)} nets")


@main.command()
@click.argument("globs", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Results folder.")
@click.option("--dialect", type=click.Choice(["caffe1", "v0"]), default="caffe1", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Datasets folder (default: OUT/../data).")
@click.option("--image-data", is_flag=True, help="caffe1: ImageData layers reading JPEGs from the list files.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="With --image-data: the folder holding train/ and val/.")
@click.pass_context
@domain
def render(ctx, globs, out, dialect, data_root, image_data, images):
    """Write each net's folder: solver, train and val prototxt, links to base net and data."""
    from .render import Renderer
    study = study_of(ctx)
    r = Renderer(study, dialect, image_data=image_data)
    nets = study.select(globs)
    r.render_all(nets, out, data_root, images)
    click.echo(f"rendered {len(nets)} nets ({dialect}) into {out}")


@main.command()
@click.argument("globs", nargs=-1)
@click.option("--gpus", default="1,4,8,64", show_default=True, help="GPU counts, comma-separated.")
@click.option("--days-per-net", type=float, default=9.5, show_default=True,
              help="Days for a full-length net (the paper: ~9.5 on a K20).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@domain
def plan(ctx, globs, gpus, days_per_net, fmt):
    """The dependency DAG and schedule estimates: per-net dependencies against block barriers."""
    from .plan import plan as make_plan
    study = study_of(ctx)
    nets = study.select(globs)
    try:
        counts = [int(g) for g in gpus.split(",")]
        assert all(c > 0 for c in counts)
    except (ValueError, AssertionError):
        raise click.BadParameter(f"{gpus!r} is not a comma-separated list of positive GPU counts", param_hint="--gpus")
    result = make_plan(study, nets, counts, days_per_net)
    dag = {n.name: list(n.requires) for n in nets}
    if fmt == "json":
        click.echo(json.dumps({"requires": dag, "schedules": [
            {"gpus": a.gpus, "per_net": {"makespan_days": a.makespan, "utilisation": a.utilisation},
             "blocks": {"makespan_days": b.makespan, "utilisation": b.utilisation}} for a, b in result]}, indent=1))
        return
    roots = [n for n in nets if not n.requires]
    click.echo(f"{len(nets)} nets: {len(roots)} with no prerequisite (block one), {len(nets) - len(roots)} after a base net")
    for base in roots:
        deps = [n.name for n in study.dependants(base.name) if n.name in dag]
        if deps:
            click.echo(f"  {base.name} <- {len(deps)}: {' '.join(deps)}")
    click.echo()
    rows = [[a.gpus, f"{a.makespan:.1f}", f"{a.utilisation:.0%}", f"{b.makespan:.1f}", f"{b.utilisation:.0%}",
             f"{b.makespan / a.makespan:.2f}x" if a.makespan else "-"] for a, b in result]
    click.echo(table(rows, ["gpus", "per-net days", "util", "blocks days", "util", "blocks/per-net"]))


def _size(value):
    """Parse 'WxH' (or 'N' for a square) into (W, H)."""
    if value is None:
        return None
    try:
        w, _, h = value.lower().partition("x")
        size = (int(w), int(h or w))
        assert size[0] > 0 and size[1] > 0
        return size
    except (ValueError, AssertionError):
        raise click.BadParameter(f"{value!r} is not WxH") from None


data_root_option = click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default="data",
                                 show_default=True, help="Datasets folder: <dataset>/files.txt, lmdb/, mean.binaryproto.")


@main.command()
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
              help="Folder holding whole_train/files.txt and/or whole_valid/files.txt.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Datasets folder.")
@click.pass_context
@domain
def split(ctx, source, out):
    """Write the list files of every derived dataset (halves, natman halves, reduced sets)."""
    from .splits import make_splits
    written, skipped = make_splits(study_of(ctx), source, out)
    for w in written:
        line = f"{w.dataset:<20} {w.lines:>8} lines  {w.verdict}"
        click.echo(click.style(line, fg="red", bold=True) if w.verdict.startswith("MISMATCH") else line)
    for s in skipped:
        click.echo(f"skipped {s}", err=True)
    bad = sum(w.verdict.startswith("MISMATCH") for w in written)
    if bad:
        click.echo(click.style(f"WARNING: {bad} list(s) differ from the paper's", fg="red", bold=True), err=True)
    if not written:
        raise click.ClickException(f"no list written: {source} has neither whole_train/ nor whole_valid/files.txt")


@main.command()
@click.argument("datasets", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dataset of the study.")
@data_root_option
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Image folder: train/ and val/ for datasets; the list's root with --list.")
@click.option("--list", "list_file", type=click.Path(dir_okay=False, path_type=Path), help="Low-level form: a list file.")
@click.option("--out", type=click.Path(path_type=Path), help="Low-level form: the LMDB to write.")
@click.option("--resize", help="WxH; 0 keeps the size. Default: the study's input.resize for datasets, none with --list.")
@click.option("--encoded", is_flag=True, help="Store the image files' own bytes.")
@click.option("--shuffle/--no-shuffle", default=True, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, help="Decoding threads (default: one per core).")
@click.option("--max-skip", type=float, default=0.01, show_default=True,
              help="Fail when more than this fraction of images cannot be read.")
@click.pass_context
@domain
def db(ctx, datasets, all_, data_root, images, list_file, out, resize, encoded, shuffle, seed, workers, max_skip):
    """Build Caffe LMDB databases (Datum records) from list files."""
    from .datasets import build_db
    from .netdir import dataset_dir
    study = study_of(ctx)
    size = None if resize in (None, "0") else _size(resize)
    if list_file or out:
        if not (list_file and out and images) or datasets or all_:
            raise click.UsageError("the low-level form needs --list, --images and --out, and no DATASET")
        jobs = [(list_file, images, out)]
    else:
        if all_ == bool(datasets):
            raise click.UsageError("name DATASETs or give --all (or use --list/--images/--out)")
        if images is None:
            raise click.UsageError("--images DIR (holding train/ and val/) is needed")
        if resize is None and study.config.input.resize:
            size = (study.config.input.resize,) * 2
        names = study.datasets() if all_ else list(datasets)
        known = set(study.datasets())
        for n in names:
            if n not in known:
                raise click.BadParameter(f"{n!r} is not a dataset of study {study.config.name!r} "
                                         f"(e.g. {', '.join(sorted(known)[:4])}…)", param_hint="DATASET")
        jobs = [(dataset_dir(data_root, n) / "files.txt", images / ("train" if n.endswith("_train") else "val"),
                 dataset_dir(data_root, n) / "lmdb") for n in names]
    for lst, img, dest in jobs:
        if dest.exists() and not list_file:
            click.echo(f"{dest}: exists, skipped")
            continue
        r = build_db(lst, img, dest, classes=study.config.datasets.classes, resize=size, encoded=encoded,
                     shuffle=shuffle, seed=seed, workers=workers, max_skip=max_skip, log=click.echo)
        resumed = f", resumed at record {r.resumed_at}" if r.resumed_at else ""
        click.echo(f"{dest}: {r.written} records, {len(r.skipped)} skipped{resumed}")
        for line, f, reason in r.skipped[:20]:
            click.echo(f"  skipped {lst}:{line} {f}: {reason}", err=True)
        if r.skipped:
            click.echo(f"  report: {dest / 'tf-report.json'}", err=True)


@main.command()
@click.argument("dataset", required=False)
@click.option("--db", "db_path", type=click.Path(file_okay=False, path_type=Path), help="An LMDB instead of a dataset.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Mean file to write.")
@data_root_option
@click.pass_context
@domain
def mean(ctx, dataset, db_path, out, data_root):
    """Write a database's mean image as a BlobProto (as compute_image_mean does)."""
    from .datasets import compute_mean, write_mean
    from .netdir import dataset_dir
    if bool(dataset) == bool(db_path):
        raise click.UsageError("give a DATASET or --db DB")
    if dataset:
        study = study_of(ctx)
        if dataset not in study.datasets():
            raise click.BadParameter(f"{dataset!r} is not a dataset of study {study.config.name!r}", param_hint="DATASET")
        db_path = dataset_dir(data_root, dataset) / "lmdb"
        out = out or dataset_dir(data_root, dataset) / "mean.binaryproto"
    elif out is None:
        raise click.UsageError("--db needs --out FILE")
    m = compute_mean(db_path)
    write_mean(m, out)
    means = m.reshape(m.shape[0], -1).mean(axis=1)
    click.echo(f"{out}: {'x'.join(map(str, m.shape))}, channel means " + " ".join(f"{v:.3f}" for v in means))


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@domain
def inspect(path, fmt):
    """Describe a .binaryproto, an LMDB or a .caffemodel."""
    from .datasets import inspect_path
    info = inspect_path(path)
    if fmt == "json":
        click.echo(json.dumps(info, indent=1))
        return
    for k, v in info.items():
        if k == "layers":
            click.echo("layers:")
            for l in v:
                click.echo(f"  {l['name']:<12} {l['type']:<14} " + " ".join("x".join(map(str, b)) for b in l["blobs"]))
        else:
            click.echo(f"{k}: {v}")


@main.command()
@click.option("--classes", type=int, default=20, show_default=True)
@click.option("--train-per-class", type=int, default=120, show_default=True)
@click.option("--valid-per-class", type=int, default=30, show_default=True)
@click.option("--size", default="32x32", show_default=True, help="WxH of the images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@domain
def synth(classes, train_per_class, valid_per_class, size, seed, out):
    """Generate a learnable JPEG data set in ILSVRC layout (train/, val/, whole_*/files.txt)."""
    from .synth import synthesize
    info = synthesize(out, classes, train_per_class, valid_per_class, _size(size), seed)
    click.echo(f"{out}: {info['classes']} classes, {info['train']} train and {info['valid']} val images")


def rendered(study: Study, root: Path, globs) -> list:
    """The nets GLOBS select; with no GLOB, every net rendered under ``root``."""
    from .netdir import NetDir
    if globs:
        return study.select(globs)
    nets = [n for n in study.nets.values() if NetDir(root, n.name).solver.is_file()]
    if not nets:
        raise Error(f"no rendered net under {root}: run `tf render … --out {root}` first")
    return nets


root_option = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default="results",
                           show_default=True, help="Results folder: one sub-folder per net.")


def _summary(ctx, root, use_cache=True):
    from .results import parse_root, summarize
    if not root.is_dir():
        raise Error(f"results folder {root} does not exist")
    study = study_of(ctx, root)
    return study, summarize(study, parse_root(study, root, use_cache=use_cache))


def _fmt(v, digits=4):
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


RESULT_COLUMNS = ["iterations", "tests", "classes", "top1_last", "top1_best", "top1_top10_mean",
                  "val_loss_bottom10_mean", "train_loss_bottom10_mean"]


@main.command()
@root_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table")
@click.option("--no-cache", is_flag=True, help="Parse every log again.")
@click.option("--compare", type=click.Path(file_okay=False, path_type=Path),
              help="Another results folder: print both values and the difference for every series point.")
@click.pass_context
@domain
def results(ctx, root, fmt, no_cache, compare):
    """Per-net metrics and the paper's series from the Caffe logs under --root."""
    import csv
    import io
    from .results import compare as compare_rows
    study, summary = _summary(ctx, root, not no_cache)
    if compare:
        other = _summary(ctx, compare, not no_cache)[1]
        rows = compare_rows(summary, other)
        if fmt == "json":
            click.echo(json.dumps([dict(zip(["series", "x", "mine", "other", "diff"], r)) for r in rows], indent=1))
        else:
            click.echo(table([[s, x, _fmt(a), _fmt(b), _fmt(d)] for s, x, a, b, d in rows],
                             ["series", "x", str(root), str(compare), "difference"]))
        return
    if fmt == "json":
        click.echo(json.dumps(summary, indent=1))
        return
    rows = [[name] + [_fmt(m[c]) for c in RESULT_COLUMNS] for name, m in summary["nets"].items()]
    header = ["net"] + RESULT_COLUMNS
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header] + rows)
        click.echo(buf.getvalue(), nl=False)
        return
    if fmt == "markdown":
        click.echo("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for r in rows:
            click.echo("| " + " | ".join(r) + " |")
    else:
        click.echo(table(rows, header))
    click.echo()
    srows = [[s, " ".join(f"{x}:{v:.3f}" for x, v in pts.items())] for s, pts in summary["series"].items()]
    click.echo(table(srows, ["series", "x:mean top-1 (mean of 10 best tests)"]))
    if summary["missing"]:
        click.echo(f"\n{len(summary['missing'])} nets without logs: {' '.join(summary['missing'])}")


@main.group(invoke_without_command=True)
@root_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="figures", show_default=True)
@click.option("--format", "formats", default="png", show_default=True, help="Comma-separated: png,pdf,svg.")
@click.option("--compare", type=click.Path(file_okay=False, path_type=Path),
              help="Overlay another results folder (e.g. the authors' logs), faded.")
@click.option("--no-cache", is_flag=True)
@click.pass_context
@domain
def plot(ctx, root, out, formats, compare, no_cache):
    """The paper's figures (2 top, 2 bottom, 3, reduced data); `plot curves NET…` for training curves."""
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("png", "pdf", "svg")]
    if bad or not fmts:
        raise click.BadParameter(f"{formats!r}: choose from png, pdf, svg", param_hint="--format")
    ctx.obj["plot"] = dict(root=root, out=out, formats=fmts)
    if ctx.invoked_subcommand:
        return
    from .plots import plot_all
    study, summary = _summary(ctx, root, not no_cache)
    if not summary["nets"]:
        raise Error(f"no net of study {study.config.name!r} has logs under {root}")
    other = _summary(ctx, compare, not no_cache)[1] if compare else None
    paths = plot_all(study, summary, out, fmts, other, other_label=compare.name if compare else "other")
    for p in paths:
        click.echo(f"wrote {p}")
    if summary["missing"]:
        click.echo(f"{len(summary['missing'])} of {len(study.nets)} nets have no logs yet and are left out: "
                   + " ".join(summary["missing"][:20]) + (" …" if len(summary["missing"]) > 20 else ""))


@plot.command()
@click.argument("nets", nargs=-1, required=True)
@click.pass_context
@domain
def curves(ctx, nets):
    """Train loss, val accuracy and learning rate against iteration (all segments) for NETs."""
    from .logs import parse_files
    from .netdir import NetDir
    from .plots import plot_curves
    opts = ctx.obj["plot"]
    study = study_of(ctx, opts["root"])
    logs = {}
    for net in study.select(nets):
        files = NetDir(opts["root"], net.name).logs()
        if not files:
            click.echo(f"{net.name}: no logs under {opts['root']}", err=True)
            continue
        logs[net.name] = parse_files(files)
    if not logs:
        raise Error("none of the selected nets has logs")
    for p in plot_curves(logs, opts["out"], opts["formats"]):
        click.echo(f"wrote {p}")


caffe_option = click.option("--caffe", type=click.Path(dir_okay=False, path_type=Path), envvar="TF_CAFFE",
                            help="The caffe binary (default: $TF_CAFFE, PATH, then scripts/install-caffe.sh's).")


@main.command()
@click.argument("net")
@root_option
@click.option("--gpu", type=int, help="GPU index (default: CPU).")
@click.option("--cpu", is_flag=True, help="Train on the CPU (the default).")
@caffe_option
@click.pass_context
@domain
def train(ctx, net, root, gpu, cpu, caffe):
    """Train one net with `caffe train`; resume it from its latest snapshot if it was interrupted."""
    from .runner import train as train_net
    if gpu is not None and cpu:
        raise click.UsageError("--gpu and --cpu exclude each other")
    study = study_of(ctx, root)
    status = train_net(study, root, study.net(net), caffe, gpu, echo=click.echo)
    if status == "interrupted":
        ctx.exit(130)


@main.command()
@click.argument("globs", nargs=-1)
@root_option
@click.option("--gpus", help="GPU indices, comma-separated: one net per GPU.")
@click.option("--cpu-workers", type=int, help="Train this many nets at once on the CPU.")
@click.option("--retries", type=int, default=1, show_default=True, help="Retries of a crashed net (from its snapshot).")
@click.option("--interval", type=float, default=10.0, show_default=True, help="Seconds between progress reports.")
@caffe_option
@click.pass_context
@domain
def run(ctx, globs, root, gpus, cpu_workers, retries, interval, caffe):
    """Train the selected nets (all rendered ones by default), each as soon as its own base net is done."""
    from .runner import Pool
    if bool(gpus) == bool(cpu_workers):
        raise click.UsageError("give --gpus 0,1,… or --cpu-workers N")
    try:
        devices = [int(g) for g in gpus.split(",")] if gpus else [None] * cpu_workers
    except ValueError:
        raise click.BadParameter(f"{gpus!r} is not a list of GPU indices", param_hint="--gpus") from None
    if not devices:
        raise click.BadParameter("need at least one device", param_hint="--cpu-workers")
    study = study_of(ctx, root)
    nets = rendered(study, root, globs)
    threads = max(1, (os.cpu_count() or 1) // len(devices)) if cpu_workers else None
    pool = Pool(study, root, nets, devices, caffe, retries, threads, echo=click.echo, interval=interval)
    s = pool.run()
    click.echo(f"\n{len(s.done)} done, {len(s.skipped)} already done, {len(s.failed)} failed, "
               f"{len(s.blocked)} blocked, {len(s.interrupted)} interrupted")
    for name, f in s.failed.items():
        click.echo(f"failed {name} (exit code {f['exit_code']}):\n    " + "\n    ".join(f["last_lines"]))
    for name, base in s.blocked.items():
        click.echo(f"blocked {name}: waits for {base}")
    if s.interrupted:
        ctx.exit(130)
    if s.failed:
        ctx.exit(1)


@main.command()
@click.argument("globs", nargs=-1)
@root_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@domain
def status(ctx, globs, root, fmt):
    """Every net: pending, blocked on X, running, done or failed, with iteration and val accuracy."""
    from .results import parse_root
    from .runner import status as net_status
    study = study_of(ctx, root)
    nets = study.select(globs)
    rows = net_status(study, root, nets, parse_root(study, root) if root.is_dir() else {})
    from .slurm import job_states
    jobs = job_states(study, root, nets) if root.is_dir() else {}
    for r in rows:
        r["slurm"] = jobs.get(r["name"])
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(table([[r["name"], r["status"], f"{r['iteration']}/{r['max_iter']}", _fmt(r["top1_latest"]),
                       _fmt(r["top1_best"])] + ([r["slurm"] or "-"] if jobs else []) for r in rows],
                     ["net", "status", "iteration", "val top-1", "best"] + (["slurm"] if jobs else [])))
    counts = {}
    for r in rows:
        key = r["status"].split(" (")[0].split(" on ")[0]        # "blocked on X" -> "blocked"
        counts[key] = counts.get(key, 0) + 1
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@caffe_option
@domain
def doctor(fmt, caffe):
    """What tf will use (Caffe tools, GPUs, SLURM) and how to fix what is missing."""
    import shutil
    from . import caffe as cf
    tools, missing = {}, []
    for t in cf.TOOLS:
        try:
            tools[t] = str(cf.find_tool(t, caffe))
        except cf.CaffeNotFound as e:
            tools[t] = None
            missing.append({"what": t, "why": str(e), "fix": cf.INSTALL_HINT})
    version = cf.version(Path(tools["caffe"])) if tools["caffe"] else None
    sbatch = shutil.which("sbatch")
    slurm = {"sbatch": sbatch, "squeue": shutil.which("squeue"), "scancel": shutil.which("scancel")}
    if not sbatch:
        missing.append({"what": "slurm", "why": "sbatch not found (only `tf submit` needs it)",
                        "fix": "apt-get install slurm-client, or run on your cluster's login node"})
    info = {"tools": tools, "caffe_version": version, "gpus": cf.gpus(), "slurm": slurm, "missing": missing}
    if fmt == "json":
        click.echo(json.dumps(info, indent=1))
        return
    for t, p in tools.items():
        click.echo(f"{t:<20} {p or 'MISSING'}")
    click.echo(f"{'caffe version':<20} {version or '-'}")
    click.echo(f"{'gpus':<20} {', '.join(g['name'] for g in info['gpus']) or 'none (CPU training)'}")
    click.echo(f"{'slurm':<20} {sbatch or 'not found'}")
    for m in missing:
        click.echo(f"\nmissing {m['what']}: {m['why']}\n  fix: {m['fix']}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="demo", show_default=True)
@click.option("--nets", "patterns", multiple=True, help="Net globs ('*' for all 170). Default: one split pair.")
@click.option("--workers", type=int, help="Nets trained at once (default: all cores).")
@click.pass_context
@domain
def demo(ctx, out, patterns, workers):
    """The miniature study end to end with real Caffe on the CPU: data, nets, results, figures."""
    import time
    from .demo import demo as run_demo
    obj = ctx.find_root().obj
    study = Study.load(obj["study_path"] or "mini")
    t0 = time.time()
    summary = run_demo(out, patterns, study, workers, echo=click.echo)
    click.echo()
    rows = [[s, " ".join(f"{x}:{v:.3f}" for x, v in pts.items())] for s, pts in summary["series"].items()]
    click.echo(table(rows, ["series", "x:mean top-1 (mean of 10 best tests)"]))
    base = [m["top1_top10_mean"] for n, m in summary["nets"].items() if study.net(n).family == "half"]
    chance = 1 / min(m["classes"] for m in summary["nets"].values())
    if base:
        click.echo(f"\nbase nets: top-1 {min(base):.3f}..{max(base):.3f} ({min(base) / chance:.1f}x chance {chance:.3f})")
    click.echo(f"demo finished in {time.time() - t0:.0f}s: results in {out / 'results'}, figures in {out / 'figures'}")



@main.command()
@click.argument("globs", nargs=-1)
@root_option
@click.option("--partition")
@click.option("--gres", help="e.g. gpu:1 (then nets train on the job's GPU; without it, on the CPU).")
@click.option("--time", "time_limit", help="D-HH:MM:SS; the job snapshots and requeues itself before it.")
@click.option("--account")
@click.option("--cpus-per-task", type=int)
@click.option("--mem")
@click.option("--extra", multiple=True, help='One more sbatch option (repeatable), e.g. --extra=--qos=long.')
@click.option("--dry-run", is_flag=True, help="Print the scripts and the dependency graph; touch nothing.")
@caffe_option
@click.pass_context
@domain
def submit(ctx, globs, root, partition, gres, time_limit, account, cpus_per_task, mem, extra, dry_run, caffe):
    """One SLURM job per net; a transfer net runs after its base net's job (afterok)."""
    from .slurm import Resources, submit as do_submit
    study = study_of(ctx, root)
    res = Resources(partition, gres, time_limit, account, cpus_per_task, mem, tuple(extra))
    s = do_submit(study, root, rendered(study, root, globs), res, dry_run=dry_run, caffe=caffe, echo=click.echo)
    click.echo("\n# dependency graph" if dry_run else "")
    for name, (job, dep) in s.submitted.items():
        base = study.net(name).base
        click.echo(f"{name:<26} {job:<12}" + (f" afterok {dep} ({base})" if dep else ""))
    for name, why in s.skipped.items():
        click.echo(f"{name:<26} skipped: {why}")
    click.echo(f"{len(s.submitted)} {'would be submitted' if dry_run else 'submitted'}, {len(s.skipped)} skipped")


@main.command()
@click.argument("globs", nargs=-1, required=True)
@root_option
@click.pass_context
@domain
def cancel(ctx, globs, root):
    """Cancel the selected nets' SLURM jobs and those of the nets that depend on them."""
    from .slurm import cancel as do_cancel
    study = study_of(ctx, root)
    done = do_cancel(study, root, study.select(globs), echo=click.echo)
    click.echo(f"{len(done)} job(s) cancelled")


if __name__ == "__main__":
    main()
