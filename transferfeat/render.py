"""Render each net's folder (solver, train and val prototxt, links) from Jinja templates and the study.

Python decides *what* a net is (layer names, blobs, multipliers, links); the templates under
``templates/<dialect>/`` decide only how a dialect spells it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import jinja2
import yaml

from . import atomic
from .errors import Error
from .folder import SNAPSHOT_PREFIX, SOLVER, TRAIN, VAL, DatasetFolder, NetFolder, StudyFolder, image_folder, relpath
from .layers import STUDY, STUDY_FIELDS, TABLE
from .prototxt import quote
from .resources import templates_dir
from .study import Net, Study

# What differs between dialects beyond spelling: the database kind and how padding is expressed.
DIALECTS = {
    "caffe1": SimpleNamespace(db="lmdb", padding_layers=False),
    "v0": SimpleNamespace(db="leveldb", padding_layers=True),
}
LR_MULT, DECAY_MULT = (1.0, 2.0), (1.0, 0.0)   # weights, biases (CaffeNet's convention)
SCALE_LR = (1.0, 1.0)                          # a Scale's factor and bias: learned, no weight decay
FROZEN = (0.0, 0.0)
NEW = "-new"
OTHER_TYPES = {"data": "Data", "softmax_loss": "SoftmaxWithLoss", "softmax": "Softmax", "accuracy": "Accuracy"}


def num(value, trailing_dot=1):
    """Format a number as the 2014 files did: ints as ints, whole floats as ``1.``, else shortest repr.

    ``num(0)`` drops the trailing dot (``1``) for the Caffe 1.0 dialect.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer():
            return f"{int(value)}." if trailing_dot else str(int(value))
        return repr(value)
    return str(value)


@dataclass
class LayerContext:
    name: str
    type: str                                   # the study's type (conv, …), or data/softmax_loss/softmax/accuracy
    params: list = field(default_factory=list)
    bottoms: list = field(default_factory=list)
    tops: list = field(default_factory=list)
    filler: dict = None
    lr_mult: tuple = ()
    decay_mult: tuple = ()

    @property
    def kind(self):
        """The layer's row of the layer table (its Caffe 1.0 type and parameter block)."""
        return STUDY.get(self.type) or TABLE[OTHER_TYPES[self.type]]

    @property
    def fields(self) -> list:
        """(Caffe 1.0 field name, value) of the layer's parameter block."""
        return [(STUDY_FIELDS.get(k, k), v) for k, v in self.params]


@dataclass
class NetContext:
    arch_name: str
    phase: str
    input: object
    batch: int
    mirror: bool
    links: SimpleNamespace
    image_data: bool
    layers: list


def layers(study: Study, net: Net, phase: str, padding_layers: bool) -> list[LayerContext]:
    """The net's layers for ``phase`` ('train' or 'val'), with renamed blobs and learning rates.

    A layer reads the blob of the layer before it, or of the layers its ``bottom`` names; ReLU and
    Dropout work in place, every other layer writes a blob of its own name. A BatchNorm's blobs
    are statistics (lr 0 always); a frozen one normalises with its stored statistics in training
    too (``use_global_stats``), so that frozen units compute exactly the base net's features."""
    arch = study.arch
    frozen, renamed = set(net.frozen(arch)), set(net.renamed(arch))
    out = [LayerContext("data", "data", tops=["data", "label"])]
    blob, blob_of = "data", {}
    for layer in arch.layers:
        bottoms = [blob_of[b] for b in layer.bottoms] or [blob]
        params = [(k, v) for k, v in layer.params if k not in ("weight_std", "bias")]
        if layer.type in ("relu", "dropout"):
            out.append(LayerContext(layer.name, layer.type, params, bottoms, bottoms[:1]))
            blob = blob_of[layer.name] = bottoms[0]
            continue
        if padding_layers and layer.get("pad"):
            pad = layer.name.replace("conv", "pad", 1)
            out.append(LayerContext(pad, "padding", [("pad", layer.get("pad"))], bottoms, [pad]))
            params = [(k, v) for k, v in params if k != "pad"]
            bottoms = [pad]
        name = layer.name + NEW if layer.name in renamed else layer.name
        ctx = LayerContext(name, layer.type, params, bottoms, [name])
        is_frozen = layer.name in frozen
        if layer.type == "batchnorm":
            ctx.lr_mult = ctx.decay_mult = FROZEN + (0.0,)
            if is_frozen and phase == "train":
                ctx.params = [("use_global_stats", True)] + params
        elif layer.type == "scale" and phase == "train":
            blobs = 1 + bool(layer.get("bias_term"))
            ctx.lr_mult, ctx.decay_mult = (FROZEN if is_frozen else SCALE_LR)[:blobs], FROZEN[:blobs]
        elif layer.learnable and phase == "train":
            blobs = 1 + (layer.get("bias_term") is not False)
            ctx.filler = {"weight_std": layer.get("weight_std"), "bias": layer.get("bias") if blobs > 1 else None}
            ctx.lr_mult = (FROZEN if is_frozen else LR_MULT)[:blobs]
            ctx.decay_mult = (FROZEN if is_frozen else DECAY_MULT)[:blobs]
        out.append(ctx)
        blob = blob_of[layer.name] = name
    if phase == "train":
        out.append(LayerContext("loss", "softmax_loss", bottoms=[blob, "label"]))
    else:
        out.append(LayerContext("prob", "softmax", bottoms=[blob], tops=["prob"]))
        out.append(LayerContext("accuracy", "accuracy", bottoms=["prob", "label"], tops=["accuracy"]))
    return out


def _caffe1_val_tail(ctx: list[LayerContext]) -> list[LayerContext]:
    """Caffe 1.0 val nets report accuracy and loss (the 2014 nets' test scores #0 and #1)."""
    body, logits = ctx[:-2], ctx[-2].bottoms[0]
    return body + [LayerContext("accuracy", "accuracy", bottoms=[logits, "label"], tops=["accuracy"]),
                   LayerContext("loss", "softmax_loss", bottoms=[logits, "label"], tops=["loss"])]


def _db_or_index(d: DatasetFolder, kind: str) -> Path:
    """The dataset's database, or its index into the image store when that is how it was built."""
    return d.index if kind == "lmdb" and d.index.is_dir() and not d.lmdb.exists() else d.db(kind)


class Renderer:
    def __init__(self, study: Study, dialect: str = "caffe1", image_data: bool = False):
        if dialect not in DIALECTS:
            raise Error(f"unknown dialect {dialect!r} (valid: {', '.join(DIALECTS)})")
        if image_data and dialect != "caffe1":
            raise Error("ImageData layers exist only in the caffe1 dialect")
        if dialect == "v0":
            beyond = [l.name for l in study.arch.layers if STUDY[l.type].caffe1_only or l.bottoms or
                      any(k in STUDY[l.type].caffe1_keys for k, _ in l.params)]
            if beyond:
                spelt = [t for t, k in STUDY.items() if k.caffe1_only] + ["bottom:"] + [
                    f"{t} {key}" for t, k in STUDY.items() for key in k.caffe1_keys]
                raise Error(f"the 2014 dialect cannot spell layer {beyond[0]} of architecture {study.arch.name} "
                            f"({', '.join(spelt)} are Caffe 1.0's); render it with --dialect caffe1")
        self.study, self.dialect, self.image_data = study, dialect, image_data
        self.spec = DIALECTS[dialect]
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir() / dialect)),
            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined, autoescape=False,
        )
        env.filters["num"] = num
        env.filters["q"] = quote               # every string written into a prototxt, quoted and escaped
        self.env = env

    def link_names(self) -> SimpleNamespace:
        """Names of the links a net folder holds, as the prototxts refer to them."""
        return NetFolder.link_names(self.spec.db, self.image_data)

    def files(self, net: Net) -> dict[str, str]:
        """The text of the three prototxt files of ``net``."""
        out = {}
        for phase, fname in (("train", TRAIN), ("val", VAL)):
            ctx = layers(self.study, net, phase, self.spec.padding_layers and net.padding_layers)
            if phase == "val" and self.dialect == "caffe1":
                ctx = _caffe1_val_tail(ctx)
            inp = self.study.config.input
            context = NetContext(self.study.arch.name, phase, inp,
                                 inp.train_batch if phase == "train" else inp.val_batch,
                                 inp.mirror and phase == "train", self.link_names(), self.image_data, ctx)
            out[fname] = self.env.get_template("net.prototxt.j2").render(net=context)
        out[SOLVER] = self.env.get_template("solver.prototxt.j2").render(
            s=self.study.config.solvers[net.solver], train_net=TRAIN, test_net=VAL, snapshot_prefix=SNAPSHOT_PREFIX)
        return out

    def link_targets(self, net: Net, data_root, images=None) -> dict[str, Path]:
        """Where each link of the net's folder points (absolute; made relative when written)."""
        names = self.link_names()
        train, valid = DatasetFolder(data_root, net.train), DatasetFolder(data_root, net.valid)
        out = {names.mean: DatasetFolder(data_root, net.mean).mean}
        if self.image_data:
            if images is None:
                raise Error("ImageData layers need the image folder (--images DIR: train/ and val/, or your class folders)")
            out[names.train], out[names.valid] = train.files, valid.files
            out[names.train_images] = image_folder(images, "train")
            out[names.valid_images] = image_folder(images, "valid")
        else:
            out[names.train], out[names.valid] = (_db_or_index(d, self.spec.db) for d in (train, valid))
        return out

    def render_all(self, nets, out, data_root=None, images=None) -> None:
        """Keep the study under ``out`` (refused if it holds another study's nets) and render ``nets`` there."""
        self.keep_study(out)
        for net in nets:
            self.render(net, out, data_root=data_root, images=images)

    def keep_study(self, out) -> None:
        """Keep a copy of the study in the results folder, so later commands find it there."""
        text = self.study.path.read_text()
        path = StudyFolder(out, self.study).study_copy
        if path.is_file():
            try:
                other = yaml.safe_load(path.read_text()) or {}
            except (yaml.YAMLError, UnicodeDecodeError):
                raise Error(f"{path}: not a study file; move it away to render into {out}") from None
            if isinstance(other, dict) and other.get("name") not in (None, self.study.config.name):
                raise Error(f"{out} holds the nets of study {other.get('name')!r}; render study "
                            f"{self.study.config.name!r} into another folder")
        if not (path.is_file() and path.read_text() == text):
            Path(out).mkdir(parents=True, exist_ok=True)
            atomic.write_text(path, text)

    def render(self, net: Net, out, data_root=None, images=None) -> Path:
        """Write (or refresh) the folder of ``net`` under ``out``; logs and snapshots are never touched."""
        out = Path(out)
        data_root = Path(data_root) if data_root else out.parent / "data"
        d = NetFolder(out, net.name)
        d.path.mkdir(parents=True, exist_ok=True)
        for fname, text in self.files(net).items():
            path = d.path / fname
            if not (path.is_file() and path.read_text() == text):
                atomic.write_text(path, text)
        links = {k: relpath(v, d.path) for k, v in self.link_targets(net, data_root, images).items()}
        if net.base:
            links[d.basenet.name] = relpath(NetFolder(out, net.base).path, d.path)
        try:
            for name, target in links.items():
                atomic.symlink(target, d.path / name)
        except FileExistsError as e:
            raise Error(f"net {net.name}: {e}") from None
        return d.path
