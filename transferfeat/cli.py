"""The `tf` command: thin click wrappers over the library. Only this module turns domain errors
(transferfeat.errors.Error) into ClickException."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from .errors import Error
from .study import STUDY_ENV, Study


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


def study_of(ctx: click.Context) -> Study:
    obj = ctx.find_root().obj
    if "study" not in obj:
        obj["study"] = Study.load(obj["study_path"])
    return obj["study"]


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
    for net in nets:
        r.render(net, out, data_root=data_root, images=images)
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
