"""The torch engine's feed alone (records → transformed batches on the device), the old per-image
feed and the batched one side by side in one run: the paper's train layer (batch 256, crop 227,
mirror, mean file) on synthetic 256×256 records, raw and encoded (JPEG), the new feed per reader
count, and that count's readers alone (no transform: what the cores give a GPU, which does the
rest). Goal on 2 cores: the new feed >= 3x the old one on raw records (the last line).

    python benchmarks/bench_feed.py [--images 512] [--batches 16] [--readers 1,2,4] [--device cpu|cuda]
                                    [--json FILE]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from transferfeat import images
from transferfeat.caffeproto import Datum, read_blob
from transferfeat.databases import build_db, iter_db
from transferfeat.mean import compute_mean, write_mean
from transferfeat.netspec import read
from transferfeat.render import Renderer
from transferfeat.study import Study
from transferfeat.synth import synthesize


def folders(tmp: Path, n: int) -> dict:
    """half0A of the paper study rendered on raw and on encoded records of ``n`` 256×256 JPEGs:
    {kind: train prototxt}."""
    study = Study.load("paper")
    classes = 8
    synthesize(tmp / "img", classes=classes, train_per_class=max(1, n // classes), valid_per_class=1, size=(256, 256),
               seed=1)
    out = {}
    for kind in ("raw", "encoded"):
        data = tmp / kind
        for name, part in (("half0A_train", "whole_train"), ("half0A_valid", "whole_valid")):
            d = data / name
            d.mkdir(parents=True)
            (d / "files.txt").write_text((tmp / "img" / part / "files.txt").read_text())
            build_db(d / "files.txt", tmp / "img" / ("train" if "train" in name else "val"), d / "lmdb",
                     classes=1000, encoded=kind == "encoded", shuffle=False, progress=False)
        mean = tmp / "raw" / "half0A_train" / "mean.binaryproto"
        if not mean.exists():
            write_mean(compute_mean(data / "half0A_train" / "lmdb", progress=False), mean)
        else:
            (data / "half0A_train" / "mean.binaryproto").write_bytes(mean.read_bytes())
        out[kind] = Renderer(study).render(study.net("half0A"), tmp / f"results_{kind}", data_root=data) / "imagenet_train.prototxt"
    return out


class PerImage:
    """tf 0.1's feed (the baseline): each record parsed, decoded if encoded, cropped, mean-subtracted,
    scaled and mirrored alone in numpy on one thread, then stacked; the batch moved to the device."""

    def __init__(self, prototxt: Path, device: str):
        import torch
        self.torch, self.device = torch, device
        spec = read(prototxt, "TRAIN")
        layer = spec.layers[0]
        self.crop, self.mirror, self.scale = (layer.transform(k) for k in ("crop_size", "mirror", "scale"))
        m = read_blob(prototxt.parent / layer.transform("mean_file")).array()
        self.mean = m.reshape(m.shape[-3:]).astype(np.float32)
        self.batch, self.rng = layer.param("batch_size"), np.random.RandomState(0)
        self.records = self._records(prototxt.parent / layer.param("source"))

    def _records(self, source):
        while True:
            for _, value in iter_db(source):
                d = Datum.from_bytes(value)
                yield (images.decode(d.data).transpose(2, 0, 1) if d.encoded else d.image()), d.label

    def transform(self, img):
        c, h, w = img.shape
        mirror = bool(self.mirror and self.rng.randint(2))
        h_off, w_off = self.rng.randint(h - self.crop + 1), self.rng.randint(w - self.crop + 1)
        out = img[:, h_off:h_off + self.crop, w_off:w_off + self.crop].astype(np.float32)
        out = out - self.mean[:, h_off:h_off + self.crop, w_off:w_off + self.crop]
        if self.scale != 1:
            out = out * np.float32(self.scale)
        return out[:, :, ::-1] if mirror else out

    def next(self):
        items = [next(self.records) for _ in range(self.batch)]
        data = self.torch.from_numpy(np.ascontiguousarray(np.stack([self.transform(i) for i, _ in items])))
        return data.to(self.device), self.torch.tensor([label for _, label in items]).to(self.device)


def rate(feed, batches: int, device: str, warm: int = 3) -> float:
    """Images/s of ``batches`` batches after ``warm`` (buffers allocated, pages touched, queue full)."""
    import torch
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warm):
        x, _ = feed.next()
    sync()
    t = time.perf_counter()
    for _ in range(batches):
        x, _ = feed.next()
    sync()
    seconds = time.perf_counter() - t
    if hasattr(feed, "close"):
        feed.close()
    return x.shape[0] * batches / seconds


def readers_rate(spec, readers: int, batches: int) -> float:
    """Images/s of the producer and its readers alone (records parsed or decoded, cropped and mirrored
    into uint8 batches; no transform): what the cores give, whatever the device does."""
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    feed = Feed(spec, "TRAIN", 0, Quiet(), readers=readers)
    for k in range(batches + 3):
        if k == 3:
            t = time.perf_counter()
        buf, _, _ = feed.queue.get()
        feed.free.put((buf, None))                       # the buffer back to the producer at once
    seconds = time.perf_counter() - t
    feed.close()
    return buf.shape[0] * batches / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--readers", default=None, help="Reader counts to try, e.g. 1,2,4 (default: 1, 2, ... the cores).")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="Also write the numbers here.")
    args = ap.parse_args()
    import torch
    from transferfeat.engines.torchnet.feed import Feed, readers_default
    from transferfeat.engines.torchnet.glog import Quiet
    cores = len(os.sched_getaffinity(0))
    counts = [int(c) for c in args.readers.split(",")] if args.readers else sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1)))
    result = {"device": args.device, "cores": cores, "torch": torch.__version__, "images": args.images,
              "readers_default": readers_default(), "old": {}, "new": {}, "readers_alone": {}}
    with tempfile.TemporaryDirectory() as tmp:
        protos = folders(Path(tmp), args.images)
        for kind, prototxt in protos.items():
            result["old"][kind] = rate(PerImage(prototxt, args.device), args.batches, args.device)
            spec = read(prototxt, "TRAIN")
            result["new"][kind] = {n: rate(Feed(spec, "TRAIN", 0, Quiet(), device=args.device, readers=n), args.batches,
                                           args.device) for n in counts}
            result["readers_alone"][kind] = {n: readers_rate(spec, n, args.batches) for n in counts}
    print(f"feed alone: paper train layer (batch 256, crop 227, mirror, mean file), 256x256 records, {args.device}, "
          f"{cores} cores, torch {torch.__version__}")
    for kind in protos:
        print(f"  {kind:8} old (per image, one thread)  {result['old'][kind]:9.0f} img/s")
        for n, r in result["new"][kind].items():
            print(f"  {kind:8} new, {n:2} reader{'s' if n > 1 else ' '}            {r:9.0f} img/s   "
                  f"{r / result['old'][kind]:5.2f}x old   (its readers alone: {result['readers_alone'][kind][n]:6.0f} img/s)")
    default = min(result["readers_default"], max(counts))
    best = result["new"]["raw"].get(default) or max(result["new"]["raw"].values())
    result["feed_ratio"] = best / result["old"]["raw"]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"feed ratio: {result['feed_ratio']:.2f}")


if __name__ == "__main__":
    main()
