"""Caffe's SGDSolver on a net folder: its update (``h = momentum·h + rate·lr_mult·(∇ +
decay·decay_mult·w)``, ``w -= h``), its loop (tests, display, snapshots, the final test), its log
lines and its snapshot files. ``step`` is the one training iteration that ``solve`` runs (and the
step-by-step checks against Caffe drive); ``score`` the one scoring loop of in-training tests and
``tf test``."""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ... import atomic
from ...caffeproto import BlobProto, SolverState, net_bytes
from ...errors import Error
from ...netspec import learning_rate, read as read_spec, read_solver
from .feed import Feed
from .glog import Log, g
from .model import Model, copy_weights


def set_precision(device: torch.device, precision: str) -> None:
    """Strict fp32 unless asked: TF32 off for matmuls and cuDNN convolutions (torch turns the latter on)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = precision != "fp32"


def autocast_for(device: torch.device, precision: str):
    return torch.autocast(device.type, torch.bfloat16) if precision == "bf16" else None


def score(model: Model, feed: Feed, batches: int, device, autocast=None, each=None, stop=lambda: False):
    """Mean of every output blob over ``batches`` batches: [(name, mean, loss weight)], or None when
    ``stop()`` ended it early. ``each(b, outputs)`` sees every batch's outputs."""
    total, names = None, []
    with torch.no_grad():
        for b in range(batches):
            batch = feed.next(stop)
            if batch is None or stop():
                return None
            outs = model.outputs(model.forward(*to_device(batch, device), autocast))
            if each:
                each(b, outs)
            values = np.array([v for _, v, _ in outs], np.float64)
            total, names = (values if total is None else total + values), outs
    return [(name, float(total[k] / batches), w) for k, (name, _, w) in enumerate(names)]


def to_device(batch, device):
    data, labels = batch
    return data.to(device, non_blocking=True), labels.to(device, non_blocking=True)


class Solver:
    """Caffe's SGDSolver on a net folder, with Caffe's loop, logs and snapshot files."""

    def __init__(self, solver_path, device: str = "cpu", precision: str = "fp32", log: Log = None):
        self.path = Path(solver_path)
        self.folder = self.path.parent
        self.log = log or Log()
        self.s = read_solver(self.path, strict=True)
        self.device, self.precision = torch.device(device), precision
        set_precision(self.device, precision)
        self.autocast = autocast_for(self.device, precision)
        seed = self.s["random_seed"]
        self.seed = seed if seed >= 0 else int(time.time())
        torch.manual_seed(self.seed)
        self.train_spec = read_spec(self.folder / self.s["train_net"], "TRAIN")
        self.net = Model(self.train_spec, self.device, "TRAIN", seed=self.seed)
        self.test_specs = [read_spec(self.folder / t, "TEST") for t in self.s["test_net"]]
        self.test_nets = [Model(t, self.device, "TEST", share=self.net) for t in self.test_specs]
        self.history = [torch.zeros_like(t) for _, _, t, _, _ in self.net.learnable()]
        self.iter, self.current_step, self.start_iter = 0, 0, 0
        self.stop_requested = self.snapshot_requested = False
        self.losses: list = []
        self.smoothed = 0.0
        self._timer, self._last = time.time(), 0
        self._feeds = {}

    # -- data
    def feed(self, which) -> Feed:
        """The training feed, or test net ``which``'s (made on first use, cursor at the first record)."""
        if which not in self._feeds:
            spec = self.train_spec if which == "train" else self.test_specs[which]
            phase = "TRAIN" if which == "train" else "TEST"
            self._feeds[which] = Feed(spec, phase, self.seed + (0 if which == "train" else 1 + which), self.log,
                                      device=self.device)
        return self._feeds[which]

    def close(self) -> None:
        """Stop the feeds' threads."""
        for feed in self._feeds.values():
            feed.close()

    def _stopped(self) -> bool:
        return self.stop_requested

    # -- one iteration
    def rate(self) -> float:
        s = self.s
        if s["lr_policy"] == "multistep":
            while self.current_step < len(s["stepvalue"]) and self.iter >= s["stepvalue"][self.current_step]:
                self.current_step += 1
                self.log(f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}", "sgd_solver.cpp:46")
        return learning_rate(s, self.iter, self.current_step)

    def forward_backward(self, batch=None):
        """iter_size forward/backward passes, gradients accumulated; the mean displayed loss (None:
        stopped while waiting for data)."""
        total = 0.0
        for _ in range(self.s["iter_size"]):
            item = batch if batch is not None else self.feed("train").next(self._stopped)
            if item is None:
                return None
            blobs = self.net.forward(*to_device(item, self.device), self.autocast)
            value, shown = self.net.loss(blobs)
            value.backward()
            total += shown
        return total / self.s["iter_size"]

    @torch.no_grad()
    def apply_update(self, rate: float) -> None:
        """Normalize, Regularize (L2), ComputeUpdateValue, Update: Caffe's SGD, in fp32; the blobs with
        the same multipliers updated together (torch._foreach_*: a few kernels, the same arithmetic)."""
        s = self.s
        groups: dict = {}
        for (layer, i, w, lr_mult, decay_mult), h in zip(self.net.learnable(), self.history):
            if lr_mult == 0:
                continue                          # no backward, no change: bit-identical
            if w.grad is None:
                w.grad = torch.zeros_like(w)
            group = groups.setdefault((lr_mult, decay_mult), ([], [], []))
            for part, t in zip(group, (w, w.grad, h)):
                part.append(t)
        for (lr_mult, decay_mult), (ws, diffs, hs) in groups.items():
            if s["iter_size"] > 1:
                torch._foreach_mul_(diffs, 1.0 / s["iter_size"])
            decay = s["weight_decay"] * decay_mult
            if decay:
                torch._foreach_add_(diffs, ws, alpha=decay)
            torch._foreach_mul_(hs, s["momentum"])
            torch._foreach_add_(hs, diffs, alpha=rate * lr_mult)
            torch._foreach_sub_(ws, hs)
            for w in ws:
                w.grad = None

    def step(self, batch=None):
        """One training iteration as Solver::Step runs it, tests and snapshots aside: forward and
        backward, the smoothed loss and the display lines, the update; the iteration's (unsmoothed)
        loss, or None when a stop came while waiting for data."""
        for _, _, w, _, _ in self.net.learnable():
            w.grad = None
        loss = self.forward_backward(batch)
        if loss is None:
            return None
        self._smooth(loss)
        rate = self.rate()
        s = self.s
        finite = math.isfinite(loss)
        if (s["display"] and self.iter % s["display"] == 0) or not finite:
            lapse = time.time() - self._timer
            per_s = (self.iter - self._last) / (lapse or 1)
            images = per_s * self.train_spec.layers[0].param("batch_size") * s["iter_size"]
            self.log(f"Iteration {self.iter} ({g(per_s)} iter/s, {lapse:.3g}s/{s['display']} iters, "
                     f"{images:.1f} img/s), loss = {g(self.smoothed)}", "solver.cpp:239")
            self._timer, self._last = time.time(), self.iter
            self.log(f"Iteration {self.iter}, lr = {g(rate)}", "sgd_solver.cpp:112")
        if not finite:
            raise Error(f"the training loss is {g(loss)} at iteration {self.iter}: the net diverged")
        self.apply_update(rate)
        self.iter += 1
        return loss

    def _smooth(self, loss: float) -> None:
        """Solver::UpdateSmoothedLoss over average_loss iterations."""
        n = self.s["average_loss"]
        if len(self.losses) < n:
            self.losses.append(loss)
            self.smoothed = (self.smoothed * (len(self.losses) - 1) + loss) / len(self.losses)
        else:
            idx = (self.iter - self.start_iter) % n
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
        self.start_iter, self._timer, self._last = self.iter, time.time(), self.iter
        while self.iter < s["max_iter"]:
            if s["test_interval"] and self.iter % s["test_interval"] == 0 and (self.iter > 0 or s["test_initialization"]):
                self.test_all()
                if self.stop_requested:
                    break
            if self.step() is None:
                break
            if (s["snapshot"] and self.iter % s["snapshot"] == 0) or self.snapshot_requested:
                self.snapshot_requested = False
                self.stop_if_no_room()
                self.snapshot()
            if self.stop_requested:
                break
        if s["snapshot_after_train"] and (not s["snapshot"] or self.iter % s["snapshot"] != 0):
            self.snapshot()
        if self.stop_requested:
            self.log("Optimization stopped early.", "solver.cpp:333")
            return
        if s["display"] and self.iter % s["display"] == 0:
            batch = self.feed("train").next(self._stopped)
            if batch is not None:
                with torch.no_grad():
                    blobs = self.net.forward(*to_device(batch, self.device))
                self._smooth(self.net.loss(blobs)[1])
                self.log(f"Iteration {self.iter}, loss = {g(self.smoothed)}", "solver.cpp:327")
        if s["test_interval"] and self.iter % s["test_interval"] == 0:
            self.test_all()
        self.log("Optimization Done.", "solver.cpp:332")

    def test_all(self) -> list:
        results = []
        for i, net in enumerate(self.test_nets):
            self.log(f"Iteration {self.iter}, Testing net (#{i})", "solver.cpp:347")
            n = self.s["test_iter"][i] if i < len(self.s["test_iter"]) else self.s["test_iter"][-1]
            means = score(net, self.feed(i), n, self.device, stop=self._stopped)
            if means is None:
                return results
            for k, (name, mean, weight) in enumerate(means):
                extra = f" (* {g(weight)} = {g(weight * mean)} loss)" if weight else ""
                self.log(f"    Test net output #{k}: {name} = {g(mean)}{extra}", "solver.cpp:414")
                results.append((name, mean))
            bad = [name for name, mean, weight in means if weight and not math.isfinite(mean)]
            if bad:
                raise Error(f"the test loss {bad[0]} is {g(dict((n, m) for n, m, _ in means)[bad[0]])} at iteration "
                            f"{self.iter}: the net diverged")
        return results

    # -- files
    def pair_bytes(self) -> int:
        """Disk one snapshot pair takes (weights and history, 4 bytes a value, and the headers)."""
        return 2 * 4 * sum(t.numel() for _, _, t, _, _ in self.net.learnable()) + 65536

    def stop_if_no_room(self) -> None:
        """Before a snapshot: with room for fewer than two pairs on the disk, this snapshot is the
        last, then stop (tf's own watch, every half second, can be too slow when snapshots are
        frequent: the trainer checks at every one)."""
        free = shutil.disk_usage(self.folder).free
        if free < 2 * self.pair_bytes() and not self.stop_requested:
            self.log(f"stopping: the disk holding {self.folder} has {free / 2**20:.1f} MiB free, room for fewer "
                     f"than two snapshot pairs ({2 * self.pair_bytes() / 2**20:.1f} MiB)", "solver.cpp:0", "W")
            self.stop_requested = True

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
