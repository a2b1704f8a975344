"""A net's prototxts (Caffe 1.0 syntax) read as Caffe reads them: the layers in order and the
shapes of every blob and every learnable parameter, inferred as Caffe's Reshape methods do; and the
solver, with Caffe's learning-rate policies.

Used to check that a snapshot holds the net it claims to (every learnable layer, every shape), by
`tf test` and the report, and by engines that build the net from its prototxt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Error
from .prototxt import Message, parse

SUPPORTED = ("Data", "ImageData", "Convolution", "ReLU", "Pooling", "LRN", "InnerProduct", "Dropout",
             "SoftmaxWithLoss", "Softmax", "Accuracy")


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list
    tops: list
    msg: Message                      # the whole layer message
    line: int
    params: list = field(default_factory=list)        # learnable blob shapes, in Caffe's order
    lr_mult: list = field(default_factory=list)       # per learnable blob (default 1)
    decay_mult: list = field(default_factory=list)

    def block(self, name: str) -> Message:
        return self.msg.one(name) or Message()


@dataclass
class NetSpec:
    path: Path
    name: str
    layers: list
    shapes: dict                      # blob name -> shape after Reshape

    @property
    def learnable(self) -> dict:
        """Layer name -> its parameter blob shapes, for layers that have any, in net order."""
        return {l.name: l.params for l in self.layers if l.params}


class NetError(Error):
    """A prototxt that Caffe would refuse (or that tf cannot run)."""


def read(path, phase: str = "TRAIN", data_shape=None, strict: bool = True) -> NetSpec:
    """Parse ``path`` and infer every shape. ``data_shape`` (C, H, W) of the data layer's records
    when it has no crop (default: the mean file's shape beside the prototxt). ``strict``: a layer type
    tf cannot run is an error; otherwise it is taken to keep its input's shape and hold no parameters
    (enough to check the snapshots of a net Caffe runs)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise NetError(f"{path}: not UTF-8 text (byte {e.start})") from None
    msg = parse(text, str(path))
    if "layers" in msg and "layer" not in msg:
        raise NetError(f"{path}: a 2014 (V0) prototxt; render the net in Caffe 1.0 syntax: "
                       f"tf render NET --dialect caffe1")
    layers = []
    for m in msg.all("layer"):
        include = [i.one("phase") for i in m.all("include")]
        if include and phase not in include:
            continue
        layer = Layer(m.one("name", ""), m.one("type", ""), m.all("bottom"), m.all("top"), m, m.line)
        if layer.type not in SUPPORTED and strict:
            raise NetError(f"{path}: line {m.line}: layer {layer.name!r} has type {layer.type!r}, which tf cannot "
                           f"run (supported: {', '.join(SUPPORTED)})")
        specs = m.all("param")
        layer.lr_mult = [p.one("lr_mult", 1.0) for p in specs]
        layer.decay_mult = [p.one("decay_mult", 1.0) for p in specs]
        layers.append(layer)
    spec = NetSpec(path, msg.one("name", ""), layers, {})
    _infer(spec, data_shape)
    return spec


def _out(size: int, kernel: int, pad: int, stride: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def pool_out(size: int, kernel: int, pad: int, stride: int) -> int:
    """Caffe's pooling output size: ceil, then one less if the last window starts in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _hw(p: Message, key: str, default=None):
    """A square-or-separate spatial parameter: kernel_size or kernel_h/kernel_w, and the like."""
    both = p.one(f"{key}_size" if key == "kernel" else key)
    if both is not None:
        return both, both
    h, w = p.one(f"{key}_h"), p.one(f"{key}_w")
    if h is None and w is None:
        return default, default
    return h, w


def _infer(spec: NetSpec, data_shape) -> None:
    shapes = spec.shapes
    for l in spec.layers:
        where = f"{spec.path}: line {l.line}: layer {l.name!r}"
        try:
            ins = [shapes[b] for b in l.bottoms]
        except KeyError as e:
            raise NetError(f"{where}: unknown bottom blob {e.args[0]!r}") from None
        t = l.type
        if t in ("Data", "ImageData"):
            p = l.block("data_param" if t == "Data" else "image_data_param")
            tp = l.block("transform_param")
            batch = p.one("batch_size", 1)
            c, h, w = data_shape or _record_shape(spec.path.parent, l)
            if t == "ImageData" and p.one("new_height"):
                h, w = p.one("new_height"), p.one("new_width")
            crop = tp.one("crop_size", 0)
            shape = (batch, c, crop or h, crop or w)
            outs = [shape, (batch,)]
        elif t == "Convolution":
            p = l.block("convolution_param")
            n, group = p.one("num_output"), p.one("group", 1)
            (kh, kw), (ph, pw), (sh, sw) = _hw(p, "kernel"), _hw(p, "pad", 0), _hw(p, "stride", 1)
            if p.all("pad") and len(p.all("pad")) == 1:
                ph = pw = p.one("pad")
            if n is None or kh is None or ins[0][1] % group or n % group:
                raise NetError(f"{where}: needs num_output and kernel_size, and channels divisible by group")
            l.params = [(n, ins[0][1] // group, kh, kw)] + ([(n,)] if p.one("bias_term", True) else [])
            outs = [(ins[0][0], n, _out(ins[0][2], kh, ph, sh), _out(ins[0][3], kw, pw, sw))]
        elif t == "Pooling":
            p = l.block("pooling_param")
            (kh, kw), (ph, pw), (sh, sw) = _hw(p, "kernel"), _hw(p, "pad", 0), _hw(p, "stride", 1)
            if p.one("global_pooling"):
                kh, kw = ins[0][2], ins[0][3]
            outs = [(*ins[0][:2], pool_out(ins[0][2], kh, ph, sh), pool_out(ins[0][3], kw, pw, sw))]
        elif t == "InnerProduct":
            p = l.block("inner_product_param")
            n = p.one("num_output")
            k = math.prod(ins[0][1:])
            l.params = [(n, k)] + ([(n,)] if p.one("bias_term", True) else [])
            outs = [(ins[0][0], n)]
        elif t in ("SoftmaxWithLoss", "Accuracy"):
            outs = [()] * len(l.tops)
        else:                                         # ReLU, LRN, Dropout, Softmax (and, not strict, the rest)
            outs = [ins[0] if ins else ()] * len(l.tops)
        if l.params and l.lr_mult and len(l.lr_mult) != len(l.params):
            raise NetError(f"{where}: {len(l.lr_mult)} param blocks for {len(l.params)} parameter blobs")
        l.lr_mult = l.lr_mult or [1.0] * len(l.params)
        l.decay_mult = l.decay_mult or [1.0] * len(l.params)
        for top, shape in zip(l.tops, outs):
            shapes[top] = shape


def _record_shape(folder: Path, layer: Layer) -> tuple:
    """(C, H, W) of the data: the mean file's shape (a full-size mean image), else 3 x 256 x 256."""
    from .caffeproto import read_blob
    mean = layer.block("transform_param").one("mean_file")
    if mean and (folder / mean).is_file():
        dims = read_blob(folder / mean).dims
        return tuple(dims[-3:])
    return (3, 256, 256)


SOLVER_DEFAULTS = dict(test_iter=[0], test_interval=0, test_initialization=True, base_lr=0.01, lr_policy="fixed",
                       gamma=0.0, power=0.0, stepsize=0, stepvalue=[], display=0, average_loss=1, max_iter=0,
                       momentum=0.0, weight_decay=0.0, snapshot=0, snapshot_prefix="", snapshot_after_train=True,
                       random_seed=-1, iter_size=1, train_net="", test_net=[], regularization_type="L2")


def read_solver(path) -> dict:
    path = Path(path)
    try:
        msg = parse(path.read_bytes().decode("utf-8"), str(path))
    except UnicodeDecodeError:
        raise Error(f"{path}: not UTF-8 text") from None
    out = {}
    for key, default in SOLVER_DEFAULTS.items():
        out[key] = msg.all(key) if isinstance(default, list) else msg.one(key, default)
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
