"""The net: built from a prototxt's layer list, one forward function per row of the layer table
(layers.py); parameters in Caffe's shapes, fillers as Caffe's, weights copied by layer name."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...caffeproto import read_net
from ...errors import Error
from ...layers import TABLE, pool_out
from ...netspec import NetSpec
from .glog import Log

FLT_MIN = float(np.finfo(np.float32).tiny)


class Loss:
    """A loss: the value to back-propagate and the value Caffe shows (clamped at -log(FLT_MIN))."""

    def __init__(self, value, shown):
        self.value, self.shown = value, shown

    def __float__(self):
        return float(self.shown)


def _conv(model, layer, x):
    w = model.params[layer.name]
    return F.conv2d(x[0], w[0], w[1] if len(w) > 1 else None, layer.param("stride"), layer.param("pad"), 1,
                    layer.param("group"))


def _inner(model, layer, x):
    w = model.params[layer.name]
    return F.linear(x[0].flatten(1), w[0], w[1] if len(w) > 1 else None)


def _pool(model, layer, x):
    """Caffe's pooling: its output size rule; MAX over real pixels only; AVE over the window clipped
    to the padded image."""
    x = x[0]
    k, s, pad = layer.param("kernel_size"), layer.param("stride"), layer.param("pad")
    if layer.param("global_pooling"):
        k = x.shape[2]
    h, w = x.shape[2:]
    oh, ow = pool_out(h, k, pad, s), pool_out(w, k, pad, s)
    right_h, right_w = (oh - 1) * s + k - h - pad, (ow - 1) * s + k - w - pad
    if layer.param("pool") == "MAX":
        xp = F.pad(x, (pad, max(right_w, 0), pad, max(right_h, 0)), value=float("-inf"))
        return F.max_pool2d(xp, k, s)[:, :, :oh, :ow]
    xp = F.pad(x, (pad, max(right_w, 0), pad, max(right_h, 0)))
    total = F.avg_pool2d(xp, k, s)[:, :, :oh, :ow] * (k * k)
    hs = torch.arange(oh) * s - pad
    ws = torch.arange(ow) * s - pad
    dh = (torch.minimum(hs + k, torch.tensor(h + pad)) - hs).clamp(min=1)
    dw = (torch.minimum(ws + k, torch.tensor(w + pad)) - ws).clamp(min=1)
    return total / (dh[:, None] * dw[None, :]).to(x.device, x.dtype)


def _lrn(model, layer, x):
    return F.local_response_norm(x[0].float(), layer.param("local_size"), layer.param("alpha"),
                                 layer.param("beta"), layer.param("k"))


def _dropout(model, layer, x):
    return F.dropout(x[0], layer.param("dropout_ratio"), training=model.phase == "TRAIN")


def _softmax_loss(model, layer, x):
    nll = F.cross_entropy(x[0].float(), x[1], reduction="none")
    return Loss(nll.mean(), nll.detach().clamp(max=-math.log(FLT_MIN)).mean())     # -log(max(p, FLT_MIN))


def _accuracy(model, layer, x):
    """Caffe's Accuracy: ties count against (a NaN score is never "better", so NaN scores count as
    right, as in Caffe: a diverged net is caught by its loss, not here)."""
    scores = x[0].float().detach()
    true = scores.gather(1, x[1][:, None])
    better = (scores >= true).sum(1) - 1
    return (better < layer.param("top_k")).float().mean()


def _per_channel(t, x):
    """A per-channel blob shaped to broadcast over ``x`` (axis 1)."""
    return t.view(1, -1, *([1] * (x.dim() - 2)))


def _batch_norm(model, layer, x):
    """BatchNormLayer: at TRAIN (unless use_global_stats) the batch's mean and biased variance, and the
    running sums updated (factor = factor * f + 1; mean sum = mean + f * sum; variance sum = m/(m-1) *
    variance + f * sum, m the values per channel); else the sums divided by the factor (0 when it is 0)."""
    x = x[0].float()
    blobs = model.params[layer.name]
    use_global = layer.param("use_global_stats")
    if use_global is None:
        use_global = model.phase == "TEST"
    dims = [0] + list(range(2, x.dim()))
    if use_global:
        factor = blobs[2][0]
        scale = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        mean, var = blobs[0] * scale, blobs[1] * scale
    else:
        mean = x.mean(dims)
        var = (x - _per_channel(mean, x)).square().mean(dims)
        f, m = layer.param("moving_average_fraction"), x.numel() // x.shape[1]
        with torch.no_grad():
            blobs[2].mul_(f).add_(1)
            blobs[0].mul_(f).add_(mean)
            blobs[1].mul_(f).add_(var, alpha=m / (m - 1) if m > 1 else 1.0)
    return (x - _per_channel(mean, x)) / _per_channel((var + layer.param("eps")).sqrt(), x)


def _scale(model, layer, x):
    w = model.params[layer.name]
    out = x[0] * _per_channel(w[0], x[0])
    return out + _per_channel(w[1], x[0]) if len(w) > 1 else out


def _eltwise(model, layer, x):
    """EltwiseLayer: SUM with coefficients (0 + c0·x0 + c1·x1 …), PROD, or MAX, where a tie between the
    first two goes to the second and a later input wins only when strictly greater (the gradient
    follows the winner, as Caffe's mask does)."""
    op = layer.param("operation")
    if op == "SUM":
        coeff = layer.block().all("coeff") or [1.0] * len(x)
        out = x[0] * coeff[0] if coeff[0] != 1 else x[0]
        for t, c in zip(x[1:], coeff[1:]):
            out = out + (t * c if c != 1 else t)
        return out
    if op == "PROD":
        out = x[0]
        for t in x[1:]:
            out = out * t
        return out
    out = torch.where(x[0] > x[1], x[0], x[1])
    for t in x[2:]:
        out = torch.where(t > out, t, out)
    return out


# One forward function per layer type of the table; the data layers are the feed's (feed.py).
FORWARD = {
    "Convolution": _conv, "InnerProduct": _inner, "Pooling": _pool, "LRN": _lrn, "Dropout": _dropout,
    "ReLU": lambda model, layer, x: F.relu(x[0]), "SoftmaxWithLoss": _softmax_loss,
    "Softmax": lambda model, layer, x: F.softmax(x[0].float(), dim=1), "Accuracy": _accuracy,
    "BatchNorm": _batch_norm, "Scale": _scale, "Eltwise": _eltwise,
}
DATA_TYPES = ("Data", "ImageData")
AUTOCAST = ("Convolution", "InnerProduct")       # the layers bf16 runs in bf16 (the rest in fp32)
assert set(FORWARD) | set(DATA_TYPES) == set(TABLE), "every row of the layer table needs a forward function"


def fill(layer, i: int, shape, gen: torch.Generator) -> torch.Tensor:
    """Caffe's fillers (constant, gaussian, xavier with fan-in, uniform) for parameter blob ``i``: the
    filler its layer type names for that blob, or a constant (the type's default value, e.g. Scale's 1)."""
    field, value = layer.kind.fillers[i]
    filler = layer.block().one(field) if field else None
    kind = filler.one("type", "constant") if filler else "constant"
    get = (lambda key, default: filler.one(key, default)) if filler else (lambda key, default: default)
    t = torch.empty(shape, dtype=torch.float32)
    if kind == "constant":
        return t.fill_(get("value", value if filler is None else 0.0))
    if kind == "gaussian":
        return t.normal_(get("mean", 0.0), get("std", 1.0), generator=gen)
    if kind == "xavier":
        scale = math.sqrt(3.0 / (math.prod(shape) / shape[0]))
        return t.uniform_(-scale, scale, generator=gen)
    return t.uniform_(get("min", 0.0), get("max", 1.0), generator=gen)


class Model:
    """A net built from its prototxt's layer list; parameters in Caffe's shapes, shared by layer name."""

    def __init__(self, spec: NetSpec, device, phase: str, share: "Model" = None, seed: int = 0):
        self.spec, self.device, self.phase = spec, device, phase
        if spec.layers[0].type not in DATA_TYPES:
            raise Error(f"{spec.path}: line {spec.layers[0].line}: the first layer must be Data or ImageData, "
                        f"not {spec.layers[0].type}")
        self.params: dict[str, list[torch.Tensor]] = {}
        gen = torch.Generator().manual_seed(seed % 2 ** 63)
        for layer in spec.layers:
            if not layer.params:
                continue
            if share is not None and layer.name in share.params:
                shared = [tuple(x.shape) for x in share.params[layer.name]]
                if shared != [tuple(s) for s in layer.params]:
                    raise Error(f"{spec.path}: line {layer.line}: layer {layer.name!r} has parameters of shape "
                                f"{[tuple(s) for s in layer.params]}, the train net's are {shared}")
                self.params[layer.name] = share.params[layer.name]
                continue
            self.params[layer.name] = [fill(layer, i, shape, gen).to(device) for i, shape in enumerate(layer.params)]
        for layer in spec.layers:
            for t, mult in zip(self.params.get(layer.name, []), layer.lr_mult):
                t.requires_grad_(mult != 0)

    def learnable(self):
        """(layer, blob index, tensor, lr_mult, decay_mult) for every parameter blob, in Caffe's order."""
        for layer in self.spec.layers:
            for i, t in enumerate(self.params.get(layer.name, [])):
                yield layer, i, t, layer.lr_mult[i], layer.decay_mult[i]

    def forward(self, data: torch.Tensor, labels: torch.Tensor, autocast=None) -> dict:
        """Every blob, from the data layer's tops; losses and accuracies as 0-d tensors."""
        first = self.spec.layers[0]
        blobs = {first.tops[0]: data, first.tops[1]: labels}
        for layer in self.spec.layers[1:]:
            x = [blobs[b] for b in layer.bottoms]
            if autocast is not None and layer.type in AUTOCAST:
                with autocast:
                    out = FORWARD[layer.type](self, layer, x)
            else:
                out = FORWARD[layer.type](self, layer, x)
            for top in layer.tops or [f"({layer.name})"]:
                blobs[top] = out
        return blobs

    def outputs(self, blobs: dict) -> list:
        """(name, value, loss weight) of every output blob (tops no later layer reads), in net order."""
        read = {b for l in self.spec.layers for b in l.bottoms}
        out = []
        for layer in self.spec.layers[1:]:
            for top in layer.tops:
                if top not in read:
                    v = blobs[top]
                    weight = 1.0 if layer.type == "SoftmaxWithLoss" else 0.0
                    out.append((top, float(v), weight))
        return out

    def loss(self, blobs: dict):
        """(the loss to back-propagate, the loss Caffe displays)."""
        losses = [v for v in blobs.values() if isinstance(v, Loss)]
        return sum(l.value for l in losses), sum(float(l.shown) for l in losses)


def copy_weights(model: Model, path: Path, log: Log) -> None:
    """Net::CopyTrainedLayersFrom: blobs by layer name (2014 and 1.0 files); a shape mismatch is fatal."""
    try:
        layers = read_net(path)
    except Error as e:
        raise Error(f"cannot read weights {path}: {e}") from None
    for src in layers:
        if src.name not in model.params:
            continue
        log(f"Copying source layer {src.name}", "net.cpp:744")
        target = model.params[src.name]
        if len(src.blobs) != len(target):
            raise Error(f"{path}: layer {src.name} has {len(src.blobs)} blobs, the net's {len(target)}")
        for t, b in zip(target, src.blobs):
            if b.data.size != t.numel():
                raise Error(f"{path}: layer {src.name}: blob of shape {b.dims}, the net's is {tuple(t.shape)}")
            with torch.no_grad():
                t.copy_(torch.from_numpy(b.data.reshape(t.shape)))
