"""A net's prototxts (Caffe 1.0 syntax) read as Caffe reads them: the layers in order and the
shapes of every blob and every learnable parameter, inferred as Caffe's Reshape methods do; and the
solver, with Caffe's learning-rate policies.

What each layer type is and which fields tf honours come from the layer table (layers.py). Read
strictly (the torch engine, which runs the net), a layer type, field or value the table does not
list is an error naming the file, line and field; read leniently (checking the snapshots of a net
Caffe runs), unknown layers are taken to keep their input's shape and hold no parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import Error
from .layers import COMMON, TABLE, Field, Kind, ShapeError, check, enum, flag, real, uint
from .prototxt import Message, parse


class NetError(Error):
    """A prototxt that Caffe would refuse (or that tf cannot run)."""


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list
    tops: list
    msg: Message                      # the whole layer message
    line: int
    kind: Optional[Kind] = None       # its row of the layer table (None: a type tf does not run)
    params: list = field(default_factory=list)        # learnable blob shapes, in Caffe's order
    lr_mult: list = field(default_factory=list)       # per learnable blob (default 1)
    decay_mult: list = field(default_factory=list)

    def block(self, name: str = None) -> Message:
        """A parameter message of the layer (default: its type's own block), empty when absent."""
        name = name or (self.kind.block if self.kind else None)
        return (self.msg.one(name) if name else None) or Message()

    def param(self, key: str):
        """A field of the layer's own parameter block, or the table's default for it."""
        default = self.kind.fields[key].default if self.kind and key in self.kind.fields else None
        return self.block().one(key, default)

    def transform(self, key: str):
        """A field of a data layer's transform_param, or its default."""
        default = self.kind.extra["transform_param"].fields[key].default
        return self.block("transform_param").one(key, default)


@dataclass
class NetSpec:
    path: Path
    name: str
    layers: list
    shapes: dict                      # blob name -> shape after Reshape
    data_shape: Optional[tuple] = None

    @property
    def learnable(self) -> dict:
        """Layer name -> its parameter blob shapes, for layers that have any, in net order."""
        return {l.name: l.params for l in self.layers if l.params}

    def record_shape(self, layer: Layer) -> tuple:
        """(C, H, W) of a data layer's records: as given, else the mean file's shape (a full-size
        mean image), else 3 x 256 x 256."""
        from .caffeproto import read_blob
        if self.data_shape:
            return tuple(self.data_shape)
        mean = layer.block("transform_param").one("mean_file")
        if mean and (self.path.parent / mean).is_file():
            return tuple(read_blob(self.path.parent / mean).dims[-3:])
        return (3, 256, 256)


NET_FIELDS = {"name": Field("string", ""), "layer": Field("message", repeated=True)}


def read(path, phase: str = "TRAIN", data_shape=None, strict: bool = True) -> NetSpec:
    """Parse ``path`` and infer every shape. ``data_shape`` (C, H, W) of the data layer's records
    when it has no crop (default: the mean file's shape beside the prototxt). ``strict``: every
    layer type, field and value must be one tf honours (the layer table)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise NetError(f"{path}: not UTF-8 text (byte {e.start})") from None
    msg = parse(text, str(path))
    if "layers" in msg and "layer" not in msg:
        raise NetError(f"{path}: a 2014 (V0) prototxt; render the net in Caffe 1.0 syntax: "
                       f"tf render NET --dialect caffe1")
    if strict:
        _check(lambda: check(_top(msg), NET_FIELDS), str(path))
    layers = []
    for m in msg.all("layer"):
        include = [i.one("phase") for i in m.all("include")]
        if include and phase not in include:
            continue
        layer = Layer(m.one("name", ""), m.one("type", ""), m.all("bottom"), m.all("top"), m, m.line,
                      TABLE.get(m.one("type", "")))
        where = f"{path}: line {m.line}: layer {_name(layer.name)}"
        if strict:
            if layer.kind is None:
                raise NetError(f"{where} has type {_name(layer.type)}, which tf cannot run "
                               f"(supported: {', '.join(TABLE)})")
            allowed = {**COMMON, **layer.kind.extra}
            if layer.kind.block:
                allowed[layer.kind.block] = Field("message", fields=layer.kind.fields)
            _check(lambda: check(m, allowed), f"{path}", f" (layer {_name(layer.name)})")
        specs = m.all("param")
        layer.lr_mult = [p.one("lr_mult", 1.0) for p in specs]
        layer.decay_mult = [p.one("decay_mult", 1.0) for p in specs]
        layers.append(layer)
    spec = NetSpec(path, msg.one("name", ""), layers, {}, data_shape)
    _infer(spec)
    return spec


def _top(msg: Message) -> Message:
    out = Message({k: v for k, v in msg.items() if k != "layer"})
    out.lines = msg.lines
    return out


def _check(fn, where: str, suffix: str = "") -> None:
    try:
        fn()
    except ValueError as e:
        raise NetError(f"{where}: {e}{suffix}") from None


def _name(text: str, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _infer(spec: NetSpec) -> None:
    shapes = spec.shapes
    for l in spec.layers:
        where = f"{spec.path}: line {l.line}: layer {_name(l.name)}"
        try:
            ins = [shapes[b] for b in l.bottoms]
        except KeyError as e:
            raise NetError(f"{where}: unknown bottom blob {_name(e.args[0])}") from None
        try:
            if l.kind is None:
                outs, params = [ins[0] if ins else ()] * len(l.tops), []
            else:
                if len(ins) < l.kind.bottoms or (len(ins) > l.kind.bottoms and not l.kind.variadic):
                    more = " or more" if l.kind.variadic else ""
                    raise ShapeError(f"takes {l.kind.bottoms}{more} bottom blob(s), not {len(ins)}")
                if l.kind.bottoms == 1 and len(ins[0]) < 2:
                    raise ShapeError(f"its input {_name(l.bottoms[0])} has shape {ins[0]}, not a batch of values")
                outs, params = l.kind.infer(spec, l, ins)
        except ShapeError as e:
            raise NetError(f"{where}: {e}") from None
        l.params = params
        if l.params and len(l.lr_mult) > len(l.params):
            raise NetError(f"{where}: {len(l.lr_mult)} param blocks for {len(l.params)} parameter blobs")
        if l.kind is not None and l.kind.statistics and any(l.lr_mult):
            raise NetError(f"{where}: a {l.type} layer's blobs are statistics, never learned: lr_mult must be 0 "
                           f"(Caffe: cannot configure batch normalization statistics as layer parameters)")
        missing = len(l.params) - len(l.lr_mult)                # Caffe's default, or 0 for statistics
        l.lr_mult = l.lr_mult + [0.0 if l.kind is not None and l.kind.statistics else 1.0] * missing
        l.decay_mult = l.decay_mult + [1.0] * missing
        for top, shape in zip(l.tops, outs):
            shapes[top] = shape


# --------------------------------------------------------------------------- the solver

SOLVER_FIELDS = {
    "train_net": Field("string", ""), "test_net": Field("string", repeated=True),
    "test_iter": Field("uint", repeated=True), "test_interval": uint(0), "test_initialization": flag(True),
    "base_lr": real(0.01), "lr_policy": Field("string", "fixed", ("fixed", "step", "multistep", "exp", "inv", "poly",
                                                                   "sigmoid")),
    "gamma": real(0.0), "power": real(0.0), "stepsize": uint(0), "stepvalue": Field("uint", repeated=True),
    "display": uint(0), "average_loss": uint(1), "max_iter": uint(0), "momentum": real(0.0),
    "weight_decay": real(0.0), "regularization_type": Field("string", "L2", ("L2",)), "snapshot": uint(0),
    "snapshot_prefix": Field("string", ""), "snapshot_after_train": flag(True), "random_seed": Field("int", -1),
    "iter_size": uint(1), "solver_mode": enum("CPU", "GPU", default="GPU"), "type": Field("string", "SGD", ("SGD",)),
}


def read_solver(path, strict: bool = False) -> dict:
    """The solver's settings (Caffe's defaults filled in). ``strict``: every field must be one tf
    honours (the torch engine, which runs it)."""
    path = Path(path)
    try:
        msg = parse(path.read_bytes().decode("utf-8"), str(path))
    except UnicodeDecodeError:
        raise Error(f"{path}: not UTF-8 text") from None
    if strict:
        _check(lambda: check(msg, SOLVER_FIELDS), str(path))
    out = {}
    for key, f in SOLVER_FIELDS.items():
        out[key] = msg.all(key) if f.repeated else msg.one(key, f.default)
    out["test_iter"] = out["test_iter"] or [0]
    if not out["train_net"]:
        raise Error(f"{path}: no train_net (tf's engines run solvers with train_net and test_net files)")
    if out["regularization_type"] != "L2":
        raise Error(f"{path}: regularization_type {out['regularization_type']!r}: only L2 is supported")
    return out


def learning_rate(s: dict, it: int, step: int = 0) -> float:
    """SGDSolver::GetLearningRate, for iteration ``it`` (0-based); ``step``: multistep's current step."""
    p, base = s["lr_policy"], s["base_lr"]
    if p == "fixed":
        return base
    if p == "step":
        return base * s["gamma"] ** (it // s["stepsize"])
    if p == "exp":
        return base * s["gamma"] ** it
    if p == "inv":
        return base * (1 + s["gamma"] * it) ** (-s["power"])
    if p == "multistep":
        return base * s["gamma"] ** step
    if p == "poly":
        return base * (1 - it / s["max_iter"]) ** s["power"]
    if p == "sigmoid":
        return base / (1 + math.exp(-s["gamma"] * (it - s["stepsize"])))
    raise Error(f"unknown lr_policy {p!r}")
