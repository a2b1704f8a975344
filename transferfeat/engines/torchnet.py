"""The torch engine's trainer: runs a rendered net folder with Caffe 1.0's semantics.

It reads what `caffe train` reads (the solver, train and val prototxts), builds the net from the
layer list, feeds it as Caffe's Data/ImageData layers and DataTransformer do, updates it with Caffe's
SGD (``h = momentum·h + rate·lr_mult·(∇ + decay·decay_mult·w)``, ``w -= h``), and writes Caffe's
files: glog log lines, ``<prefix>_iter_N.caffemodel`` and ``.solverstate``. Run as a program:

    python -m transferfeat.engines.torchnet train -solver imagenet_solver.prototxt
        [-snapshot X.solverstate | -weights Y.caffemodel] [-gpu N] [-precision fp32|tf32|bf16]
    python -m transferfeat.engines.torchnet test -model imagenet_val.prototxt -weights W [-iterations K]
"""
from __future__ import annotations

import math
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import atomic, images
from ..caffeproto import BlobProto, Datum, SolverState, net_bytes, read_blob, read_net
from ..errors import Error
from ..netspec import NetSpec, learning_rate, pool_out, read as read_spec, read_solver

FLT_MIN = float(np.finfo(np.float32).tiny)
PRECISIONS = ("fp32", "tf32", "bf16")


# --------------------------------------------------------------------------- logging (glog's format)

class Log:
    """glog lines on stderr: ``I1127 10:00:00.000000  1234 file.cpp:1] message``."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.pid = os.getpid()

    def __call__(self, msg: str, where: str = "solver.cpp:0", level: str = "I") -> None:
        t = time.time()
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1e6):06d}"
        self.stream.write(f"{level}{stamp} {self.pid:>5} {where}] {msg}\n")
        self.stream.flush()


class Quiet(Log):
    """A Log that keeps nothing (callers that want the numbers, not the lines: benchmarks, tests)."""

    def __call__(self, *a, **k) -> None:
        pass


def g(v) -> str:
    """A number as C++'s ostream prints it (6 significant digits)."""
    return f"{float(v):.6g}"


# --------------------------------------------------------------------------- data (Data / ImageData layers)

_ENVS: dict = {}


def _lmdb(path: Path):
    """One read-only handle per database and process (LMDB refuses a second one), shared by feeds."""
    import lmdb
    key = str(path.resolve())
    if key not in _ENVS:
        _ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False, max_readers=126)
    return _ENVS[key]


class Feed:
    """Batches of one net's data layer, prefetched by a background thread (bounded queue)."""

    def __init__(self, spec: NetSpec, phase: str, seed: int, log: Log, prefetch: int = 3, pin: bool = False):
        layer = spec.layers[0]
        if layer.type not in ("Data", "ImageData"):
            raise Error(f"{spec.path}: line {layer.line}: the first layer must be Data or ImageData, not {layer.type}")
        self.folder, self.layer, self.phase, self.log, self.pin = spec.path.parent, layer, phase, log, pin
        tp = layer.block("transform_param")
        self.crop, self.mirror, self.scale = tp.one("crop_size", 0), tp.one("mirror", False), tp.one("scale", 1.0)
        self.mean = None
        if tp.one("mean_file"):
            mean = read_blob(self.folder / tp.one("mean_file")).array()
            self.mean = mean.reshape(mean.shape[-3:]).astype(np.float32)          # the full-size mean image
        elif tp.all("mean_value"):
            self.mean = np.array(tp.all("mean_value"), np.float32)[:, None, None]
        self.rng = np.random.RandomState(seed % 2 ** 32)
        if layer.type == "Data":
            p = layer.block("data_param")
            self.batch, self.source = p.one("batch_size"), self.folder / p.one("source", "")
            if not (self.source / "data.mdb").is_file():
                raise Error(f"{spec.path}: line {layer.line}: data source {self.source} is not an LMDB")
            self.env = _lmdb(self.source)
            self.records = self._lmdb_records()
        else:
            p = layer.block("image_data_param")
            self.batch = p.one("batch_size")
            self.root = p.one("root_folder", "")
            self.size = (p.one("new_width", 0), p.one("new_height", 0))
            self.shuffle = p.one("shuffle", False)
            lines = (self.folder / p.one("source", "")).read_text().split("\n")
            self.lines = [(l.rsplit(None, 1)[0], int(l.rsplit(None, 1)[1])) for l in lines if l.strip()]
            self.records = self._image_records()
        self.queue: queue.Queue = queue.Queue(prefetch)
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _lmdb_records(self):
        """(C×H×W uint8, label) in key order, from the first record again at the end."""
        while True:
            with self.env.begin(buffers=False) as txn:
                for _, value in txn.cursor():
                    d = Datum.from_bytes(value)
                    img = images.decode(d.data).transpose(2, 0, 1) if d.encoded else d.image()
                    yield img, d.label
            self.log("Restarting data prefetching from start.", "data_layer.cpp:73")

    def _image_records(self):
        order = list(range(len(self.lines)))
        while True:
            if self.shuffle:
                self.rng.shuffle(order)
            for i in order:
                name, label = self.lines[i]
                img = images.read(self.folder / (self.root + name), self.size if self.size[0] else None)
                yield img.transpose(2, 0, 1), label
            self.log("Restarting data prefetching from start.", "image_data_layer.cpp:158")

    def transform(self, img: np.ndarray) -> np.ndarray:
        """DataTransformer::Transform: crop (random at TRAIN, centred at TEST), mean, scale, mirror."""
        c, h, w = img.shape
        mirror = bool(self.mirror and self.rng.randint(2))
        crop = self.crop
        if crop:
            if self.phase == "TRAIN":
                h_off, w_off = self.rng.randint(h - crop + 1), self.rng.randint(w - crop + 1)
            else:
                h_off, w_off = (h - crop) // 2, (w - crop) // 2
            img = img[:, h_off:h_off + crop, w_off:w_off + crop]
        else:
            h_off = w_off = 0
        out = img.astype(np.float32)
        if self.mean is not None:
            mean = self.mean
            if mean.shape[1] > 1:
                mean = mean[:, h_off:h_off + out.shape[1], w_off:w_off + out.shape[2]]
            out = out - mean
        if self.scale != 1:
            out = out * np.float32(self.scale)
        return out[:, :, ::-1] if mirror else out

    def _fill(self) -> None:
        while True:
            items = [next(self.records) for _ in range(self.batch)]
            data = np.ascontiguousarray(np.stack([self.transform(img) for img, _ in items]))
            labels = torch.tensor([lab for _, lab in items], dtype=torch.int64)
            data = torch.from_numpy(data)
            if self.pin:
                data, labels = data.pin_memory(), labels.pin_memory()
            self.queue.put((data, labels))

    def next(self):
        return self.queue.get()


# --------------------------------------------------------------------------- the net

class Net:
    """A net built from its prototxt's layer list; parameters in Caffe's shapes, shared by layer name."""

    def __init__(self, spec: NetSpec, device, phase: str, share: "Net" = None, seed: int = 0):
        self.spec, self.device, self.phase = spec, device, phase
        self.params: dict[str, list[torch.Tensor]] = {}
        gen = torch.Generator().manual_seed(seed % 2 ** 63)
        for layer in spec.layers:
            if not layer.params:
                continue
            if share is not None and layer.name in share.params:
                self.params[layer.name] = share.params[layer.name]
                continue
            self.params[layer.name] = [self._fill(layer, i, shape, gen).to(device) for i, shape in enumerate(layer.params)]
        for layer in spec.layers:
            for t, mult in zip(self.params.get(layer.name, []), layer.lr_mult):
                t.requires_grad_(mult != 0)

    @staticmethod
    def _fill(layer, i: int, shape, gen) -> torch.Tensor:
        block = layer.block("convolution_param" if layer.type == "Convolution" else "inner_product_param")
        filler = block.one("weight_filler" if i == 0 else "bias_filler")
        kind = filler.one("type", "constant") if filler else "constant"
        t = torch.empty(shape, dtype=torch.float32)
        if kind == "constant":
            return t.fill_(filler.one("value", 0.0) if filler else 0.0)
        if kind == "gaussian":
            return t.normal_(filler.one("mean", 0.0), filler.one("std", 1.0), generator=gen)
        if kind == "xavier":
            scale = math.sqrt(3.0 / (math.prod(shape) / shape[0]))
            return t.uniform_(-scale, scale, generator=gen)
        if kind == "uniform":
            return t.uniform_(filler.one("min", 0.0), filler.one("max", 1.0), generator=gen)
        raise Error(f"{layer.name}: filler type {kind!r} is not supported (constant, gaussian, xavier, uniform)")

    def learnable(self):
        """(layer, blob index, tensor, lr_mult, decay_mult) for every parameter blob, in Caffe's order."""
        for layer in self.spec.layers:
            for i, t in enumerate(self.params.get(layer.name, [])):
                yield layer, i, t, layer.lr_mult[i], layer.decay_mult[i]

    def forward(self, data: torch.Tensor, labels: torch.Tensor, autocast=None) -> dict:
        """Every blob, from the data layer's tops; losses and accuracies as 0-d tensors."""
        blobs = {self.spec.layers[0].tops[0]: data, self.spec.layers[0].tops[1]: labels}
        for layer in self.spec.layers[1:]:
            x = [blobs[b] for b in layer.bottoms]
            out = self._layer(layer, x, autocast)
            for top, value in zip(layer.tops or [f"({layer.name})"], out):
                blobs[top] = value
        return blobs

    def _layer(self, layer, x, autocast):
        t = layer.type
        if t == "Convolution":
            p = layer.block("convolution_param")
            w = self.params[layer.name]
            stride, pad = p.one("stride", 1), p.one("pad", 0)
            with _maybe(autocast):
                return [F.conv2d(x[0], w[0], w[1] if len(w) > 1 else None, stride, pad, 1, p.one("group", 1))]
        if t == "InnerProduct":
            w = self.params[layer.name]
            with _maybe(autocast):
                return [F.linear(x[0].flatten(1), w[0], w[1] if len(w) > 1 else None)]
        if t == "ReLU":
            return [F.relu(x[0])]
        if t == "Pooling":
            return [_pool(layer, x[0])]
        if t == "LRN":
            p = layer.block("lrn_param")
            if p.one("norm_region", "ACROSS_CHANNELS") != "ACROSS_CHANNELS":
                raise Error(f"{self.spec.path}: line {layer.line}: LRN WITHIN_CHANNEL is not supported")
            return [F.local_response_norm(x[0].float(), p.one("local_size", 5), p.one("alpha", 1.0),
                                          p.one("beta", 0.75), p.one("k", 1.0))]
        if t == "Dropout":
            ratio = layer.block("dropout_param").one("dropout_ratio", 0.5)
            return [F.dropout(x[0], ratio, training=self.phase == "TRAIN")]
        if t == "SoftmaxWithLoss":
            logits = x[0].float()
            nll = F.cross_entropy(logits, x[1], reduction="none")
            shown = nll.detach().clamp(max=-math.log(FLT_MIN)).mean()      # -log(max(p, FLT_MIN))
            return [_Shown(nll.mean(), shown)]
        if t == "Softmax":
            return [F.softmax(x[0].float(), dim=1)]
        if t == "Accuracy":
            k = layer.block("accuracy_param").one("top_k", 1)
            scores = x[0].float().detach()
            true = scores.gather(1, x[1][:, None])
            better = (scores >= true).sum(1) - 1                              # ties count against
            return [(better < k).float().mean()]
        raise Error(f"{self.spec.path}: line {layer.line}: layer {layer.name!r} of type {t!r} is not supported")

    def outputs(self, blobs: dict) -> list:
        """(name, value, loss weight) of every output blob (tops no later layer reads), in net order."""
        read = {b for l in self.spec.layers for b in l.bottoms}
        out = []
        for layer in self.spec.layers[1:]:
            for top in layer.tops:
                if top not in read:
                    v = blobs[top]
                    weight = 1.0 if layer.type == "SoftmaxWithLoss" else 0.0
                    out.append((top, float(v.shown if isinstance(v, _Shown) else v), weight))
        return out

    def loss(self, blobs: dict):
        """(the loss to back-propagate, the loss Caffe displays)."""
        losses = [v for v in blobs.values() if isinstance(v, _Shown)]
        return sum(l.value for l in losses), sum(float(l.shown) for l in losses)


def copy_weights(net: Net, path: Path, log: Log) -> None:
    """Net::CopyTrainedLayersFrom: blobs by layer name (2014 and 1.0 files); a shape mismatch is fatal."""
    try:
        layers = read_net(path)
    except Error as e:
        raise Error(f"cannot read weights {path}: {e}") from None
    for src in layers:
        if src.name not in net.params:
            continue
        log(f"Copying source layer {src.name}", "net.cpp:744")
        target = net.params[src.name]
        if len(src.blobs) != len(target):
            raise Error(f"{path}: layer {src.name} has {len(src.blobs)} blobs, the net's {len(target)}")
        for t, b in zip(target, src.blobs):
            if b.data.size != t.numel():
                raise Error(f"{path}: layer {src.name}: blob of shape {b.dims}, the net's is {tuple(t.shape)}")
            with torch.no_grad():
                t.copy_(torch.from_numpy(b.data.reshape(t.shape)))


class _Shown:
    """A loss: the value to back-propagate and the value Caffe shows (clamped at -log(FLT_MIN))."""

    def __init__(self, value, shown):
        self.value, self.shown = value, shown

    def __float__(self):
        return float(self.shown)


class _maybe:
    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        return self.ctx.__enter__() if self.ctx else None

    def __exit__(self, *a):
        return self.ctx.__exit__(*a) if self.ctx else False


def _pool(layer, x: torch.Tensor) -> torch.Tensor:
    """Caffe's pooling: its output size rule; MAX over real pixels only; AVE over the window clipped
    to the padded image."""
    p = layer.block("pooling_param")
    k, s, pad = p.one("kernel_size"), p.one("stride", 1), p.one("pad", 0)
    if p.one("global_pooling"):
        k = x.shape[2]
    h, w = x.shape[2:]
    oh, ow = pool_out(h, k, pad, s), pool_out(w, k, pad, s)
    right_h, right_w = (oh - 1) * s + k - h - pad, (ow - 1) * s + k - w - pad
    if p.one("pool", "MAX") == "MAX":
        xp = F.pad(x, (pad, max(right_w, 0), pad, max(right_h, 0)), value=float("-inf"))
        return F.max_pool2d(xp, k, s)[:, :, :oh, :ow]
    if p.one("pool") == "AVE":
        xp = F.pad(x, (pad, max(right_w, 0), pad, max(right_h, 0)))
        total = F.avg_pool2d(xp, k, s)[:, :, :oh, :ow] * (k * k)
        hs = torch.arange(oh) * s - pad
        ws = torch.arange(ow) * s - pad
        dh = (torch.minimum(hs + k, torch.tensor(h + pad)) - hs).clamp(min=1)
        dw = (torch.minimum(ws + k, torch.tensor(w + pad)) - ws).clamp(min=1)
        return total / (dh[:, None] * dw[None, :]).to(x.device, x.dtype)
    raise Error(f"{layer.name}: pooling {p.one('pool')!r} is not supported (MAX, AVE)")


# --------------------------------------------------------------------------- the solver

class Solver:
    """Caffe's SGDSolver on a net folder, with Caffe's loop, logs and snapshot files."""

    def __init__(self, solver_path, device: str = "cpu", precision: str = "fp32", log: Log = None):
        self.path = Path(solver_path)
        self.folder = self.path.parent
        self.log = log or Log()
        self.s = read_solver(self.path)
        if precision not in PRECISIONS:
            raise Error(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        self.device, self.precision = torch.device(device), precision
        _set_precision(self.device, precision)
        seed = self.s["random_seed"]
        self.seed = seed if seed >= 0 else int(time.time())
        torch.manual_seed(self.seed)
        self.train_spec = read_spec(self.folder / self.s["train_net"], "TRAIN")
        self.net = Net(self.train_spec, self.device, "TRAIN", seed=self.seed)
        self.test_specs = [read_spec(self.folder / t, "TEST") for t in self.s["test_net"]]
        self.test_nets = [Net(t, self.device, "TEST", share=self.net) for t in self.test_specs]
        self.history = [torch.zeros_like(t) for _, _, t, _, _ in self.net.learnable()]
        self.iter, self.current_step = 0, 0
        self.stop_requested = self.snapshot_requested = False
        self.losses: list = []
        self.smoothed = 0.0
        self._feeds = {}

    # -- data
    def feed(self, which):
        """The training feed, or test net ``which``'s (made on first use, cursor at the first record)."""
        if which not in self._feeds:
            spec = self.train_spec if which == "train" else self.test_specs[which]
            phase = "TRAIN" if which == "train" else "TEST"
            self._feeds[which] = Feed(spec, phase, self.seed + (0 if which == "train" else 1 + which), self.log,
                                      pin=self.device.type == "cuda")
        return self._feeds[which]

    def _to(self, batch):
        data, labels = batch
        return data.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    # -- one iteration
    def rate(self) -> float:
        s = self.s
        if s["lr_policy"] == "multistep":
            while self.current_step < len(s["stepvalue"]) and self.iter >= s["stepvalue"][self.current_step]:
                self.current_step += 1
                self.log(f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}", "sgd_solver.cpp:46")
        return learning_rate(s, self.iter, self.current_step)

    def forward_backward(self, batch=None) -> float:
        """iter_size forward/backward passes, gradients accumulated; the mean displayed loss."""
        autocast = torch.autocast(self.device.type, torch.bfloat16) if self.precision == "bf16" else None
        total = 0.0
        for _ in range(self.s["iter_size"]):
            data, labels = self._to(batch if batch is not None else self.feed("train").next())
            blobs = self.net.forward(data, labels, autocast)
            value, shown = self.net.loss(blobs)
            value.backward()
            total += shown
        return total / self.s["iter_size"]

    @torch.no_grad()
    def apply_update(self, rate: float) -> None:
        """Normalize, Regularize (L2), ComputeUpdateValue, Update: Caffe's SGD, in fp32."""
        s = self.s
        for (layer, i, w, lr_mult, decay_mult), h in zip(self.net.learnable(), self.history):
            if lr_mult == 0:
                continue                          # no backward, no change: bit-identical
            diff = w.grad if w.grad is not None else torch.zeros_like(w)
            if s["iter_size"] > 1:
                diff.mul_(1.0 / s["iter_size"])
            decay = s["weight_decay"] * decay_mult
            if decay:
                diff.add_(w, alpha=decay)
            h.mul_(s["momentum"]).add_(diff, alpha=rate * lr_mult)
            w.sub_(h)
            w.grad = None

    def step(self, batch=None) -> float:
        """One training iteration (no test, no snapshot): the displayed (unsmoothed) loss."""
        for _, _, w, _, _ in self.net.learnable():
            w.grad = None
        loss = self.forward_backward(batch)
        self.apply_update(self.rate())
        self.iter += 1
        return loss

    def _smooth(self, loss: float, start_iter: int) -> None:
        """Solver::UpdateSmoothedLoss over average_loss iterations."""
        n = self.s["average_loss"]
        if len(self.losses) < n:
            self.losses.append(loss)
            self.smoothed = (self.smoothed * (len(self.losses) - 1) + loss) / len(self.losses)
        else:
            idx = (self.iter - start_iter) % n
            self.smoothed += (loss - self.losses[idx]) / n
            self.losses[idx] = loss

    # -- the loop
    def solve(self, resume=None) -> None:
        s = self.s
        self.log(f"Solving {self.train_spec.name}")
        self.log(f"Learning Rate Policy: {s['lr_policy']}")
        if resume:
            self.log(f"Restoring previous solver status from {resume}")
            self.restore(resume)
        start, timer, last = self.iter, time.time(), self.iter
        while self.iter < s["max_iter"]:
            if s["test_interval"] and self.iter % s["test_interval"] == 0 and (self.iter > 0 or s["test_initialization"]):
                self.test_all()
                if self.stop_requested:
                    break
            display = s["display"] and self.iter % s["display"] == 0
            for _, _, w, _, _ in self.net.learnable():
                w.grad = None
            loss = self.forward_backward()
            self._smooth(loss, start)
            rate = self.rate()
            if display:
                lapse = time.time() - timer
                per_s = (self.iter - last) / (lapse or 1)
                self.log(f"Iteration {self.iter} ({g(per_s)} iter/s, {lapse:.3g}s/{s['display']} iters), "
                         f"loss = {g(self.smoothed)}", "solver.cpp:239")
                timer, last = time.time(), self.iter
                self.log(f"Iteration {self.iter}, lr = {g(rate)}", "sgd_solver.cpp:112")
            self.apply_update(rate)
            self.iter += 1
            if (s["snapshot"] and self.iter % s["snapshot"] == 0) or self.snapshot_requested:
                self.snapshot_requested = False
                self.snapshot()
            if self.stop_requested:
                break
        if s["snapshot_after_train"] and (not s["snapshot"] or self.iter % s["snapshot"] != 0):
            self.snapshot()
        if self.stop_requested:
            self.log("Optimization stopped early.", "solver.cpp:333")
            return
        if s["display"] and self.iter % s["display"] == 0:
            with torch.no_grad():
                blobs = self.net.forward(*self._to(self.feed("train").next()))
            self._smooth(self.net.loss(blobs)[1], start)
            self.log(f"Iteration {self.iter}, loss = {g(self.smoothed)}", "solver.cpp:327")
        if s["test_interval"] and self.iter % s["test_interval"] == 0:
            self.test_all()
        self.log("Optimization Done.", "solver.cpp:332")

    @torch.no_grad()
    def test_all(self) -> list:
        results = []
        for i, net in enumerate(self.test_nets):
            self.log(f"Iteration {self.iter}, Testing net (#{i})", "solver.cpp:347")
            scores, names = None, []
            n = self.s["test_iter"][i] if i < len(self.s["test_iter"]) else self.s["test_iter"][-1]
            for _ in range(n):
                if self.stop_requested:
                    return results
                outs = net.outputs(net.forward(*self._to(self.feed(i).next())))
                values = np.array([v for _, v, _ in outs], np.float64)
                scores = values if scores is None else scores + values
                names = outs
            for k, (name, _, weight) in enumerate(names):
                mean = scores[k] / n
                extra = f" (* {g(weight)} = {g(weight * mean)} loss)" if weight else ""
                self.log(f"    Test net output #{k}: {name} = {g(mean)}{extra}", "solver.cpp:414")
                results.append((name, float(mean)))
        return results

    # -- files
    def copy_weights(self, path) -> None:
        copy_weights(self.net, self.folder / path, self.log)

    def restore(self, state_file) -> None:
        path = self.folder / state_file
        state = SolverState.from_bytes(path.read_bytes())
        self.iter, self.current_step = state.iter, state.current_step
        if state.learned_net:
            self.copy_weights(state.learned_net)
        if len(state.history) != len(self.history):
            raise Error(f"{path}: {len(state.history)} history blobs, the net has {len(self.history)}")
        for h, b in zip(self.history, state.history):
            if b.data.size != h.numel():
                raise Error(f"{path}: a history blob of {b.data.size} values, the net's has {h.numel()}")
            h.copy_(torch.from_numpy(b.data.reshape(h.shape)))

    def snapshot(self) -> tuple[Path, Path]:
        """<prefix>_iter_N.caffemodel and .solverstate, as Caffe writes them, each written atomically."""
        prefix = self.s["snapshot_prefix"]
        model = f"{prefix}_iter_{self.iter}.caffemodel"
        self.log(f"Snapshotting to binary proto file {model}", "solver.cpp:464")
        layers = [(l.name, l.type, [t.detach().cpu().numpy() for t in self.net.params.get(l.name, [])])
                  for l in self.train_spec.layers]
        atomic.write_bytes(self.folder / model, net_bytes(self.train_spec.name, layers))
        state = f"{prefix}_iter_{self.iter}.solverstate"
        self.log(f"Snapshotting solver state to binary proto file {state}", "sgd_solver.cpp:284")
        history = [BlobProto(data=h.detach().cpu().numpy().ravel(), shape=tuple(h.shape)) for h in self.history]
        atomic.write_bytes(self.folder / state, SolverState(self.iter, model, history, self.current_step).to_bytes())
        return self.folder / model, self.folder / state


def _set_precision(device: torch.device, precision: str) -> None:
    """Strict fp32 unless asked: TF32 off for matmuls and cuDNN convolutions (torch turns the latter on)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = precision != "fp32"


def header(device: str, precision: str) -> str:
    from importlib.metadata import version
    return (f"transferfeat {version('transferfeat')} torch engine: torch {torch.__version__}, device {device}, "
            f"precision {precision}, threads {torch.get_num_threads()}")


# --------------------------------------------------------------------------- the program

def _args(argv: list) -> dict:
    args = {}
    it = iter(argv)
    for a in it:
        if not a.startswith("-"):
            raise Error(f"unexpected argument {a!r}")
        args[a.lstrip("-")] = next(it, "")
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    log = Log()
    try:
        if not argv or argv[0] not in ("train", "test"):
            raise Error("usage: torchnet train -solver FILE [-snapshot S | -weights W] [-gpu N] [-precision P] | "
                        "test -model FILE -weights W [-iterations K] [-gpu N]")
        command, args = argv[0], _args(argv[1:])
        device = f"cuda:{args['gpu']}" if args.get("gpu") not in (None, "") else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise Error("no CUDA device: torch sees no GPU (tf doctor)")
        precision = args.get("precision", "fp32")
        log(header(device, precision), "torchnet.py:1")
        if command == "test":
            return test(args, device, precision, log)
        solver = Solver(args["solver"], device, precision, log)
        signal.signal(signal.SIGINT, lambda *_: setattr(solver, "stop_requested", True))
        signal.signal(signal.SIGHUP, lambda *_: setattr(solver, "snapshot_requested", True))
        if args.get("weights") and not args.get("snapshot"):
            solver.copy_weights(args["weights"])
        solver.solve(resume=args.get("snapshot"))
        log("Optimization Done.", "caffe.cpp:250")
        return 0
    except (Error, OSError, KeyError, ValueError) as e:
        log(f"Check failed: {e}", "torchnet.py:0", "F")
        return 1


@torch.no_grad()
def test(args: dict, device: str, precision: str, log: Log) -> int:
    """`caffe test`: score a model's TEST net on K batches; print each batch's outputs and the means."""
    model = Path(args["model"])
    _set_precision(torch.device(device), precision)
    spec = read_spec(model, "TEST")
    net = Net(spec, torch.device(device), "TEST")
    copy_weights(net, Path(args["weights"]), log)
    feed = Feed(spec, "TEST", 0, log)
    n = int(args.get("iterations", 50))
    total, names = None, []
    for b in range(n):
        data, labels = feed.next()
        outs = net.outputs(net.forward(data.to(device), labels.to(device)))
        for name, v, _ in outs:
            log(f"Batch {b}, {name} = {g(v)}", "caffe.cpp:304")
        values = np.array([v for _, v, _ in outs], np.float64)
        total, names = (values if total is None else total + values), outs
    loss = sum(total[k] / n * w for k, (_, _, w) in enumerate(names))
    log(f"Loss: {g(loss)}", "caffe.cpp:309")
    for k, (name, _, w) in enumerate(names):
        extra = f" (* {g(w)} = {g(w * total[k] / n)} loss)" if w else ""
        log(f"{name} = {g(total[k] / n)}{extra}", "caffe.cpp:320")
    return 0


if __name__ == "__main__":
    sys.exit(main())
