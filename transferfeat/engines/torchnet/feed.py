"""The data layers (Data from an LMDB or an index into the image store, ImageData from a list of
image files) and Caffe's DataTransformer, batched.

A producer thread takes a batch's records in key (or list) order, wrapping at the end as Caffe does,
and draws each image's mirror and crop offsets from the layer's generator in Caffe's order (per
image: the mirror, then the two offsets). A pool of reader threads, one slice of the batch each,
parses the records (or decodes them with OpenCV: encoded records, image files) and copies each
image's crop window, its columns right to left where mirrored, into one uint8 batch [N, C, crop,
crop], pinned when the device is a GPU: cropping and mirroring cost that copy nothing (a batched
crop on the device costs more: benchmarks/README.md), and 21% fewer bytes cross to the GPU. The
consumer moves the batch to the device (the copy overlapping the net's work) and there subtracts the
mean (one indexing of the mean's crop windows) and scales the whole batch: the same float32
arithmetic as the per-image transform, so a batch is bit-identical to it.

Opt-in (``TF_DECODE=device``, a GPU and torchvision): encoded JPEG records are decoded on the GPU
by torchvision's batched ``decode_jpeg`` (nvJPEG) instead of OpenCV in the readers, for when CPU
cores are short; the readers then only hand the records' bytes over, and the crop windows and
mirrors are taken on the device from the same draws. nvJPEG's pixels differ slightly from
OpenCV's (benchmarks/gpu_check.py measures by how much), so this is never the default.

A reader that fails (a cut record, an image of the wrong size) ends the feed: the next batch asked
for raises the reader's error with the database, key or file, so the trainer stops with one line
instead of waiting for ever.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ... import images
from ...caffeproto import Datum, read_blob
from ...databases import datum_image, open_db
from ...store import is_index, read_index
from ...errors import Error
from ...netspec import NetSpec
from .glog import Log


_OPEN_FEEDS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Feeds left open stop before the interpreter goes (a thread inside torch then aborts the process)."""
    for feed in list(_OPEN_FEEDS):
        feed.close()


def readers_default() -> int:
    """Reader threads: the machine's cores, at most 16 ($TF_READERS overrides)."""
    value = os.environ.get("TF_READERS")
    if value and not (value.isdigit() and int(value) > 0):
        raise Error(f"TF_READERS={value!r}: not a number of reader threads")
    return int(value) if value else min(len(os.sched_getaffinity(0)), 16)


DECODES = ("cpu", "device")


def decode_default() -> str:
    """Where encoded records are decoded: "cpu" (OpenCV in the readers, as Caffe) unless
    $TF_DECODE says "device"."""
    value = os.environ.get("TF_DECODE", "cpu")
    if value not in DECODES:
        raise Error(f"TF_DECODE={value!r}: not one of {', '.join(DECODES)}")
    return value


def check_decode(device) -> None:
    """TF_DECODE=device on a trainer without a GPU is an error (it would decode on the CPU, slowly
    and with nvJPEG's rounding nowhere in sight), as is a TF_DECODE that names nothing."""
    if decode_default() == "device" and torch.device(device).type == "cpu":
        raise Error("TF_DECODE=device decodes JPEG records on a GPU, and this trainer runs on the CPU: unset "
                    "TF_DECODE (or set it to cpu), or train on a GPU (tf run --gpus, tf train --gpu)")


def device_decoder():
    """torchvision's decode_jpeg, or an Error saying how to get it."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as e:                              # noqa: BLE001 - absent, or built for another PyTorch
        raise Error(f"TF_DECODE=device needs torchvision built for this PyTorch ({torch.__version__}): pip install "
                    f"'transferfeat[gpu-decode]' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return lambda data, device: decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def record(value, label: int = None) -> tuple:
    """(label, C×H×W uint8 pixels) of one Datum record, decoded by OpenCV when encoded; ``label``
    replaces its own (an index's). Error for bytes that are not one."""
    d = Datum.from_bytes(value, copy=False)
    if d.label is None:
        raise Error("datum without a label")
    try:
        return (d.label if label is None else label), datum_image(d)
    except ValueError as e:                           # OpenCV could not decode it
        raise Error(str(e)) from None


class Source:
    """Records of a data layer in order, for ever, as (what, payload): a record's bytes (Data) or an
    image file's path (ImageData), with its label where the source says it, and what must outlive the
    bytes; ``pixels`` turns one into (label, C×H×W uint8 array) in a reader."""

    def __init__(self, layer, folder, rng: np.random.RandomState, log: Log, where: str):
        self.layer, self.log, self.rng, self.layer_folder = layer, log, rng, folder
        self.source = folder / layer.param("source")
        if layer.type == "Data":
            try:
                if is_index(self.source):
                    self.index = read_index(self.source)
                    count = len(self.index)
                else:
                    self.index, env = None, open_db(self.source)
                    with env.begin() as txn:
                        count = txn.stat()["entries"]
            except Error as e:
                raise Error(f"{where}: data source: {e}") from None
            if not count:
                raise Error(f"{where}: data source {self.source} holds no records")
            self.records = self._index() if self.index is not None else self._lmdb()
        else:
            self.root = layer.param("root_folder")                 # joined to each name as a string, as Caffe does
            self.size = (layer.param("new_width"), layer.param("new_height"))
            lines = self.source.read_text().split("\n")
            self.lines = [(l.rsplit(None, 1)[0], int(l.rsplit(None, 1)[1])) for l in lines if l.strip()]
            if not self.lines:
                raise Error(f"{where}: image list {self.source} is empty")
            self.records = self._images()

    def _lmdb(self):
        env = open_db(self.source)
        while True:                      # views into the map, valid while their transaction is: items keep it
            txn = env.begin(buffers=True)
            for key, value in txn.cursor():
                yield bytes(key), (None, value, txn)
            self.log("Restarting data prefetching from start.", "data_layer.cpp:73")

    def _index(self):
        env = open_db(self.index.store)
        while True:
            txn = env.begin(buffers=True)
            for key, label, value in self.index.records(txn):
                yield key, (label, value, txn)
            self.log("Restarting data prefetching from start.", "data_layer.cpp:73")

    def _images(self):
        order = list(range(len(self.lines)))
        shuffle = self.layer.param("shuffle")
        while True:
            if shuffle:
                self.rng.shuffle(order)
            for i in order:
                name, label = self.lines[i]
                yield name, (label, self.layer_folder / (self.root + name), None)
            self.log("Restarting data prefetching from start.", "image_data_layer.cpp:158")

    def name(self, what) -> str:
        """Where a record is, for errors: the database and key, or the image file."""
        if self.layer.type == "Data":
            return f"{self.source}: record {bytes(what).decode(errors='replace')}"
        return str(self.layer_folder / (self.root + what))

    def pixels(self, what, payload) -> tuple:
        """(label, C×H×W uint8 pixels) of one record; Error naming it when it is not one."""
        label, data, _ = payload
        try:
            if self.layer.type == "ImageData":
                return label, images.read(data, self.size if self.size[0] else None).transpose(2, 0, 1)
            return record(data, label)
        except (Error, OSError, ValueError) as e:
            raise Error(f"{self.name(what)}: {e}") from None


class Feed:
    """Batches of one net's data layer, transformed on ``device``; prefetched by a background thread.

    Like the top blob of Caffe's data layer, a batch's data tensor is reused: it holds until the
    next call but one (copy it to keep it longer)."""

    def __init__(self, spec: NetSpec, phase: str, seed: int, log: Log, prefetch: int = 3, device="cpu",
                 readers: int = None):
        layer = spec.layers[0]
        self.folder, self.layer, self.phase, self.log = spec.path.parent, layer, phase, log
        self.device = torch.device(device)
        self.decoder = None
        if decode_default() == "device":
            if layer.type != "Data":
                raise Error(f"{spec.path}: line {layer.line}: TF_DECODE=device decodes a Data layer's encoded "
                            f"records, not {layer.type} files")
            self.decoder = device_decoder()
        self.crop, self.mirror, self.scale = layer.transform("crop_size"), layer.transform("mirror"), layer.transform("scale")
        self.rng = np.random.RandomState(seed % 2 ** 32)
        self.batch = layer.param("batch_size")
        self.source = Source(layer, self.folder, self.rng, log, f"{spec.path}: line {layer.line}")
        mean = None
        if layer.transform("mean_file"):
            m = read_blob(self.folder / layer.transform("mean_file")).array()
            mean = m.reshape(m.shape[-3:]).astype(np.float32)                  # the full-size mean image
        elif layer.block("transform_param").all("mean_value"):
            mean = np.array(layer.block("transform_param").all("mean_value"), np.float32)[:, None, None]
        self.mean, self.mean_image = mean, mean is not None and mean.shape[1:] != (1, 1)
        if self.mean_image:                                  # and its mirror image: a mirrored crop's mean
            self.mean_t = torch.from_numpy(np.stack([mean, mean[:, :, ::-1]])).to(self.device)
        else:
            self.mean_t = None if mean is None else torch.from_numpy(mean).to(self.device)[None]
        self.scale_t = torch.tensor(self.scale, dtype=torch.float32, device=self.device)
        self.readers = readers or readers_default()
        self.pool = ThreadPoolExecutor(self.readers, thread_name_prefix="tf-reader")
        self.pin = self.device.type == "cuda"
        self.queue: queue.Queue = queue.Queue(prefetch)
        self.free: queue.Queue = queue.Queue()
        self.scratch: dict = {}
        self.shape, self.taken, self.closed = None, 0, False
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()
        _OPEN_FEEDS.add(self)

    # -- the producer: records and random draws; the readers: pixels into the batch
    def draws(self, h: int, w: int) -> tuple:
        """One image's (mirror, h_off, w_off), drawn as DataTransformer::Transform draws them."""
        mirror = bool(self.mirror and self.rng.randint(2))
        if self.crop and self.phase == "TRAIN":
            return mirror, self.rng.randint(h - self.crop + 1), self.rng.randint(w - self.crop + 1)
        if self.crop:
            return mirror, (h - self.crop) // 2, (w - self.crop) // 2
        return mirror, 0, 0

    def _buffer(self, shape):
        try:
            buf, done = self.free.get_nowait()
            if tuple(buf.shape) == shape:
                if done is not None:
                    done.synchronize()                   # its copy to the device is done
                return buf
        except queue.Empty:
            pass
        return torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)

    def _shape(self, items) -> tuple:
        """The images' C×H×W (the first record's), checked against the crop and the mean."""
        c, h, w = self.source.pixels(*items[0])[1].shape
        if self.crop and (self.crop > h or self.crop > w):
            raise Error(f"{self.source.source}: crop_size {self.crop} is larger than a {h}x{w} image")
        if self.mean_image and self.mean.shape != (c, h, w):
            raise Error(f"{self.source.source}: the mean image is {'x'.join(map(str, self.mean.shape))}, "
                        f"the images {c}x{h}x{w}")
        return c, h, w

    def _jpegs(self, items, ks, out: list, labels: np.ndarray) -> None:
        """A reader's slice of the batch for the device's decoder: each record's JPEG bytes, its label."""
        for k in ks:
            what, (label, value, _) = items[k]
            d = Datum.from_bytes(value, copy=False)
            if d.label is None:
                raise Error(f"{self.source.name(what)}: datum without a label")
            if not d.encoded or bytes(d.data[:2]) != b"\xff\xd8":
                raise Error(f"{self.source.name(what)}: TF_DECODE=device decodes JPEG records only (tf db --encoded "
                            f"from JPEGs); this one is {'raw pixels' if not d.encoded else 'not a JPEG'}")
            out[k] = torch.frombuffer(bytearray(d.data), dtype=torch.uint8)
            labels[k] = d.label if label is None else label

    def _read(self, items, ks, out: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> None:
        """A reader's slice of the batch: each record's crop window into its place (a mirrored image's
        columns right to left), its label into ``labels``."""
        ch, cw = out.shape[2:]
        for k in ks:
            label, pixels = self.source.pixels(*items[k])
            if pixels.shape != self.shape:
                raise Error(f"{self.source.name(items[k][0])}: a {'x'.join(map(str, pixels.shape))} image among "
                            f"{'x'.join(map(str, self.shape))} ones: resize them alike")
            mirror, h, w = draws[k]
            window = pixels[:, h:h + ch, w:w + cw]
            np.copyto(out[k], window[:, :, ::-1] if mirror else window)
            labels[k] = label

    def _fill(self) -> None:
        try:
            while not self.closed:
                items = [next(self.source.records) for _ in range(self.batch)]
                self.shape = self.shape or self._shape(items)
                c, h, w = self.shape
                draws = np.array([self.draws(h, w) for _ in items], np.int64).reshape(-1, 3)
                labels = torch.empty(len(items), dtype=torch.int64, pin_memory=self.pin)
                slices = np.array_split(np.arange(len(items)), min(self.readers, len(items)))
                if self.decoder:
                    jpegs = [None] * len(items)
                    list(self.pool.map(lambda ks: self._jpegs(items, ks, jpegs, labels.numpy()), slices))
                    self.queue.put(([what for what, _ in items], jpegs, labels, draws))
                    continue
                buf = self._buffer((len(items), c, self.crop or h, self.crop or w))
                list(self.pool.map(lambda ks: self._read(items, ks, buf.numpy(), labels.numpy(), draws), slices))
                self.queue.put((buf, labels, draws))
        except Exception as e:                          # noqa: BLE001 - handed to the trainer, which stops
            self.queue.put(e if isinstance(e, Error) else Error(f"{self.source.source}: {type(e).__name__}: {e}"))

    def close(self) -> None:
        """Stop the producer and the readers (no thread of the feed left inside torch or OpenCV when
        the process exits)."""
        self.closed = True
        while self.thread.is_alive():
            try:
                self.queue.get_nowait()                  # a producer waiting for room sees the flag
            except queue.Empty:
                pass
            self.thread.join(0.05)
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- the consumer: on the device
    def next(self, stop=lambda: False):
        """The next batch (data, labels) on the device; the reader's error if it failed; None once
        ``stop()`` says so while waiting."""
        while True:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                if stop():
                    return None
                if not self.thread.is_alive() and self.queue.empty():
                    raise Error(f"{self.source.source}: the data reader stopped") from None
                continue
            if isinstance(item, Exception):
                self.queue.put(item)                    # every later call fails the same way
                raise item
            if self.decoder:
                keys, jpegs, labels, draws = item
                return self.transform(self._decoded(keys, jpegs, draws), draws), labels.to(self.device, non_blocking=True)
            buf, labels, draws = item
            x = buf.to(self.device, non_blocking=True)
            done = None
            if self.device.type == "cuda":
                done = torch.cuda.Event()
                done.record()
            data = self.transform(x, draws)
            self.free.put((buf, done))
            return data, labels.to(self.device, non_blocking=True)

    def _decoded(self, keys, jpegs, draws: np.ndarray) -> torch.Tensor:
        """The device's decode of a batch of JPEGs (RGB, turned to OpenCV's BGR), each image's crop
        window taken and mirrored where drawn: the uint8 batch the readers make on the CPU path."""
        try:
            decoded = self.decoder(jpegs, self.device)
        except RuntimeError as e:
            raise Error(f"{self.source.source}: the device could not decode a record of the batch from "
                        f"{bytes(keys[0]).decode(errors='replace')} ({str(e).splitlines()[0]})") from None
        for what, img in zip(keys, decoded):
            if tuple(img.shape) != self.shape:
                raise Error(f"{self.source.name(what)}: a {'x'.join(map(str, img.shape))} image among "
                            f"{'x'.join(map(str, self.shape))} ones: resize them alike")
        x = torch.stack(decoded).flip(1)
        ch, cw = self.crop or x.shape[2], self.crop or x.shape[3]
        at = torch.from_numpy(draws).to(self.device, non_blocking=True)
        crops = windows(x, ch, cw)[torch.arange(len(x), device=self.device), at[:, 1], at[:, 2]]
        return torch.where(at[:, 0, None, None, None].bool(), crops.flip(-1), crops)

    def _scratch(self, name, shape, dtype) -> torch.Tensor:
        """A tensor kept between batches (fresh memory each batch costs more than the work)."""
        t = self.scratch.get(name)
        if t is None or tuple(t.shape) != tuple(shape):
            t = self.scratch[name] = torch.empty(shape, dtype=dtype, device=self.device)
        return t

    def transform(self, x: torch.Tensor, draws: np.ndarray) -> torch.Tensor:
        """DataTransformer::Transform finished for a uint8 batch of crops (mirrored where drawn), given
        each image's (mirror, h_off, w_off): the mean and the scale, in float32 and Caffe's order of
        operations. A mirrored crop's mean is the mirrored mean's crop at ``w - crop - w_off``."""
        ch, cw = x.shape[2:]
        self.taken += 1
        out = self._scratch(f"out{self.taken % 2}", x.shape, torch.float32).copy_(x)
        if self.mean_image:
            mw = self.mean_t.shape[-1]
            mirror, h_off = draws[:, 0], draws[:, 1]
            w_off = np.where(mirror == 1, mw - cw - draws[:, 2], draws[:, 2])
            at = torch.from_numpy(np.stack([mirror, h_off, w_off])).to(self.device, non_blocking=True)
            out.sub_(torch.ops.aten.index.Tensor_out(windows(self.mean_t, ch, cw), [at[0], at[1], at[2]],
                                                     out=self._scratch("mean", x.shape, torch.float32)))
        elif self.mean_t is not None:
            out.sub_(self.mean_t)
        if self.scale != 1:
            out.mul_(self.scale_t)
        return out


def windows(t: torch.Tensor, ch: int, cw: int) -> torch.Tensor:
    """Every ch x cw window of each image of a contiguous [N, C, H, W] tensor, as a view indexed by
    (image, top, left): [N, H - ch + 1, W - cw + 1, C, ch, cw]."""
    n, c, h, w = t.shape
    return t.as_strided((n, h - ch + 1, w - cw + 1, c, ch, cw), (c * h * w, w, 1, h * w, w, 1))
