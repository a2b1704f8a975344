"""The data layers (Data from an LMDB, ImageData from a list of image files) and Caffe's
DataTransformer: records in key (or list) order, wrapping at the end as Caffe does, crop (random at
TRAIN, centred at TEST), mean, scale and mirror; batches prefetched by a background thread.

A reader that fails (a cut record, an image of the wrong size) ends the feed: the next batch asked
for raises the reader's error with the database, key or file, so the trainer stops with one line
instead of waiting for ever."""
from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from ... import images
from ...caffeproto import read_blob
from ...caffeproto import Datum
from ...datasets import datum_image, open_db
from ...errors import Error
from ...netspec import NetSpec
from .glog import Log


def record(value) -> tuple:
    """(C×H×W uint8 pixels, label) of one Datum record; Error for bytes that are not one."""
    try:
        d = Datum.from_bytes(value)
        img = datum_image(d)
    except ValueError as e:                          # OpenCV could not decode an encoded one
        raise Error(str(e)) from None
    if d.label is None:
        raise Error("datum without a label")
    return img, d.label


class Feed:
    """Batches of one net's data layer, prefetched by a background thread (bounded queue)."""

    def __init__(self, spec: NetSpec, phase: str, seed: int, log: Log, prefetch: int = 3, pin: bool = False):
        layer = spec.layers[0]
        self.folder, self.layer, self.phase, self.log, self.pin = spec.path.parent, layer, phase, log, pin
        self.crop, self.mirror, self.scale = layer.transform("crop_size"), layer.transform("mirror"), layer.transform("scale")
        self.mean = None
        if layer.transform("mean_file"):
            mean = read_blob(self.folder / layer.transform("mean_file")).array()
            self.mean = mean.reshape(mean.shape[-3:]).astype(np.float32)          # the full-size mean image
        elif layer.block("transform_param").all("mean_value"):
            self.mean = np.array(layer.block("transform_param").all("mean_value"), np.float32)[:, None, None]
        self.rng = np.random.RandomState(seed % 2 ** 32)
        self.batch = layer.param("batch_size")
        self.source = self.folder / layer.param("source")
        if layer.type == "Data":
            try:
                self.env = open_db(self.source)
            except Error as e:
                raise Error(f"{spec.path}: line {layer.line}: data source: {e}") from None
            with self.env.begin() as txn:
                if not txn.stat()["entries"]:
                    raise Error(f"{spec.path}: line {layer.line}: data source {self.source} holds no records")
            self.records = self._lmdb_records()
        else:
            self.root = layer.param("root_folder")
            self.size = (layer.param("new_width"), layer.param("new_height"))
            self.shuffle = layer.param("shuffle")
            lines = self.source.read_text().split("\n")
            self.lines = [(l.rsplit(None, 1)[0], int(l.rsplit(None, 1)[1])) for l in lines if l.strip()]
            if not self.lines:
                raise Error(f"{spec.path}: line {layer.line}: image list {self.source} is empty")
            self.records = self._image_records()
        self.queue: queue.Queue = queue.Queue(prefetch)
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _lmdb_records(self):
        """(C×H×W uint8, label) in key order, from the first record again at the end."""
        while True:
            with self.env.begin(buffers=False) as txn:
                for key, value in txn.cursor():
                    try:
                        yield record(value)
                    except Error as e:
                        raise Error(f"{self.source}: record {bytes(key).decode(errors='replace')}: {e}") from None
            self.log("Restarting data prefetching from start.", "data_layer.cpp:73")

    def _image_records(self):
        order = list(range(len(self.lines)))
        while True:
            if self.shuffle:
                self.rng.shuffle(order)
            for i in order:
                name, label = self.lines[i]
                path = self.folder / (self.root + name)
                try:
                    img = images.read(path, self.size if self.size[0] else None)
                except (OSError, ValueError) as e:
                    raise Error(f"{path}: {e}") from None
                yield img.transpose(2, 0, 1), label
            self.log("Restarting data prefetching from start.", "image_data_layer.cpp:158")

    def transform(self, img: np.ndarray) -> np.ndarray:
        """DataTransformer::Transform: crop (random at TRAIN, centred at TEST), mean, scale, mirror."""
        c, h, w = img.shape
        mirror = bool(self.mirror and self.rng.randint(2))
        crop = self.crop
        if crop:
            if crop > h or crop > w:
                raise Error(f"{self.source}: crop_size {crop} is larger than a {h}x{w} image")
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
                if mean.shape != (c, h, w):                  # as Caffe's DataTransformer checks
                    raise Error(f"{self.source}: the mean image is {'x'.join(map(str, mean.shape))}, "
                                f"the images {c}x{h}x{w}")
                mean = mean[:, h_off:h_off + out.shape[1], w_off:w_off + out.shape[2]]
            out = out - mean
        if self.scale != 1:
            out = out * np.float32(self.scale)
        return out[:, :, ::-1] if mirror else out

    def _fill(self) -> None:
        try:
            while True:
                items = [next(self.records) for _ in range(self.batch)]
                data = np.ascontiguousarray(np.stack([self.transform(img) for img, _ in items]))
                labels = torch.tensor([lab for _, lab in items], dtype=torch.int64)
                data = torch.from_numpy(data)
                if self.pin:
                    data, labels = data.pin_memory(), labels.pin_memory()
                self.queue.put((data, labels))
        except Exception as e:                          # noqa: BLE001 - handed to the trainer, which stops
            self.queue.put(e if isinstance(e, Error) else Error(f"{self.source}: {type(e).__name__}: {e}"))

    def next(self, stop=lambda: False):
        """The next batch; the reader's error if it failed; None once ``stop()`` says so while waiting."""
        while True:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                if stop():
                    return None
                if not self.thread.is_alive() and self.queue.empty():
                    raise Error(f"{self.source}: the data reader stopped") from None
                continue
            if isinstance(item, Exception):
                self.queue.put(item)                    # every later call fails the same way
                raise item
            return item
