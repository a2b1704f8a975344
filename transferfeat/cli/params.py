"""Option values and shared options of the `tf` command: one vocabulary across commands."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import click

from .. import engines
from ..engines.torchnet import PRECISIONS
from ..errors import Error

Dir, File = click.Path(file_okay=False, path_type=Path), click.Path(dir_okay=False, path_type=Path)


def domain(f):
    """Domain and OS errors become one-line click errors (never a traceback)."""
    @functools.wraps(f)
    def body(*a, **kw):
        try:
            return f(*a, **kw)
        except Error as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")) from None
    return body


class Finite(click.FloatRange):
    """A number in a range, never nan or infinity (which click's FloatRange lets through)."""
    name = "number"

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


Count = click.IntRange(1)                # threads, classes, images: at least one
Seed = click.IntRange(0, 2**32 - 1)      # numpy's RandomState takes these
GPU = click.IntRange(0)


def comma_ints(value: str, what: str, minimum: int = 0) -> list[int]:
    try:
        out = [int(v) for v in value.split(",")]
        assert out and all(v >= minimum for v in out)
        return out
    except (ValueError, AssertionError):
        raise click.BadParameter(f"{value!r} is not a comma-separated list of {what}") from None


def size_of(value):
    """'WxH' (or 'N' for a square) -> (W, H); '0' -> False (keep the size)."""
    if value == "0":
        return False
    try:
        w, _, h = value.lower().partition("x")
        size = (int(w), int(h or w))
        assert size[0] > 0 and size[1] > 0
        return size
    except (ValueError, AttributeError, AssertionError):
        raise click.BadParameter(f"{value!r} is not WxH") from None


def image_formats(value: str) -> list[str]:
    fmts = [f.strip() for f in value.split(",") if f.strip()]
    if not fmts or any(f not in ("png", "pdf", "svg") for f in fmts):
        raise click.BadParameter(f"{value!r}: choose from png, pdf, svg", param_hint="--image-format")
    return fmts


def fmt_option(*choices):
    return click.option("--format", "fmt", type=click.Choice(choices), default=choices[0], show_default=True,
                        help="Output format.")


root_option = click.option("--root", type=Dir, default="results", show_default=True,
                           help="Results folder: one sub-folder per net, and the study's copy.")


data_root_option = click.option("--data-root", type=Dir, default="data", show_default=True,
                                help="Data folder: <dataset>/files.txt, lmdb/, mean.binaryproto.")


caffe_option = click.option("--caffe", type=File, envvar="TF_CAFFE",
                            help="The caffe binary (default: $TF_CAFFE, PATH, then scripts/install-caffe.sh's).")


globs_argument = click.argument("globs", nargs=-1, metavar="[NET|GLOB]...")


engine_option = click.option("--engine", type=click.Choice(engines.names()), envvar="TF_ENGINE", default="caffe",
                             show_default=True, help="What trains: real Caffe, or PyTorch with Caffe's semantics (env TF_ENGINE).")
precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
                                show_default=True, help="torch engine: strict fp32 (the default), or TF32/bf16 on GPUs.")


def engine_options(f):
    """--engine, --precision and --caffe: which engine trains, and its settings."""
    return engine_option(precision_option(caffe_option(f)))
