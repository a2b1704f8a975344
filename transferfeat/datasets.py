"""Caffe LMDB databases (Datum records, as convert_imageset writes them) and mean files.

Images are decoded and resized by a pool of threads (Pillow releases the GIL while it decodes and
resizes, and threads spare pickling every record between processes); one thread writes the LMDB.
A database is built into ``DB.partial`` and renamed to ``DB`` only when complete, so a folder named
``DB`` is a finished database. An interrupted build resumes where its last commit ended; record keys
(``%08d_<file>``) are fixed by the list order, so a resumed build never duplicates a record.
"""
from __future__ import annotations

import collections
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image
from tqdm import tqdm

from . import atomic
from .caffeproto import Datum, mean_blob, read_blob
from .errors import Error
from .splits import read_list

COMMIT_EVERY = 1000
REPORT = "tf-report.json"


# --------------------------------------------------------------------------- decoding

def resize_bilinear(im: Image.Image, width: int, height: int) -> Image.Image:
    """OpenCV's INTER_LINEAR resize (as convert_imageset does it): each output pixel samples the input
    bilinearly at its half-pixel centre, with no antialiasing. Pillow's affine transform does exactly
    that (its ``resize`` would antialias), within one level of OpenCV."""
    if im.size == (width, height):
        return im
    sx, sy = im.width / width, im.height / height
    return im.transform((width, height), Image.AFFINE, (sx, 0, 0, 0, sy, 0), resample=Image.BILINEAR)


def _rgb(im: Image.Image, resize) -> Image.Image:
    """Colour conversion as imread(IMREAD_COLOR) (grey and CMYK become 3 channels), then the resize."""
    im = im if im.mode == "RGB" else im.convert("RGB")
    return resize_bilinear(im, *resize) if resize else im


def load_bgr(path, resize=None) -> np.ndarray:
    """Decode an image as OpenCV's imread(IMREAD_COLOR) does: height x width x BGR uint8."""
    with Image.open(path) as im:
        rgb = np.asarray(_rgb(im, resize))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def encode_datum(path, label: int, resize, encoded: bool) -> bytes:
    """One record's value; raises OSError (missing/unreadable) or ValueError (not an image)."""
    if encoded and not resize:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:     # reject files that are not images
            im.verify()
        return Datum(data=data, label=label, encoded=True).to_bytes()
    with Image.open(path) as im:
        rgb = _rgb(im, resize)
        if encoded:
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=95)
            return Datum(data=buf.getvalue(), label=label, encoded=True).to_bytes()
        r, g, b = rgb.split()                         # planar BGR, as Caffe's CVMatToDatum lays it out
        return Datum(3, rgb.height, rgb.width, b.tobytes() + g.tobytes() + r.tobytes(), label, False).to_bytes()


def _work(job):
    index, path, label, resize, encoded = job
    try:
        return index, encode_datum(path, label, resize, encoded), None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return index, None, f"{type(e).__name__}: {e}"


def decode_datum(value) -> np.ndarray:
    """A record's pixels as (channels, height, width) uint8, decoding encoded records."""
    d = Datum.from_bytes(value)
    if d.encoded:
        return load_bgr(io.BytesIO(d.data)).transpose(2, 0, 1)
    return d.image()


# --------------------------------------------------------------------------- building

@dataclass
class BuildResult:
    path: Path
    written: int
    skipped: list = field(default_factory=list)      # [(line number, file, reason)]
    resumed_at: int = 0


def estimate_bytes(entries, images: Path, resize, encoded: bool, sample: int = 20) -> int:
    """Disk the database will take, from a sample of the images."""
    if not entries:
        return 0
    step = max(1, len(entries) // sample)
    sizes = []
    for e in entries[::step][:sample]:
        p = images / e.path
        try:
            if encoded and not resize:
                sizes.append(p.stat().st_size)
            elif resize:
                sizes.append(resize[0] * resize[1] * 3)
            else:
                with Image.open(p) as im:
                    sizes.append(im.width * im.height * 3)
        except OSError:
            continue
    per = (sum(sizes) / len(sizes) if sizes else 0) + 64
    return int(per * len(entries) * 1.1)


def build_db(list_file, images, out, *, classes: int, resize=None, encoded=False, shuffle=True, seed=0,
             workers=None, max_skip=0.01, progress=True, log=print,
             commit_every=COMMIT_EVERY) -> BuildResult:
    """Write an LMDB of Datum records for every line of ``list_file``."""
    list_file, images, out = Path(list_file), Path(images), Path(out)
    if out.exists():
        raise Error(f"{out} exists: remove it to rebuild")
    entries = read_list(list_file, classes)
    order = list(range(len(entries)))
    if shuffle:
        np.random.RandomState(seed).shuffle(order)
    partial = out.with_name(out.name + ".partial")
    progress_file = out.with_name(out.name + ".partial.json")
    params = {"list": str(list_file.resolve()), "lines": len(entries), "resize": list(resize) if resize else None,
              "encoded": encoded, "shuffle": shuffle, "seed": seed}
    state = {"params": params, "done": 0, "skipped": []}
    if partial.exists():
        if progress_file.exists():
            state = json.loads(progress_file.read_text())
        if state["params"] != params:
            raise Error(f"{partial} is a partial build with other settings ({state['params']}); remove it to start over")
    else:
        progress_file.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    estimate = estimate_bytes(entries, images, resize, encoded)
    if estimate > 1 << 30:
        log(f"{out}: about {estimate / 2**30:.1f} GiB for {len(entries)} images")
    # No fsync per commit (the progress file only advances after a commit, so a crash costs at most
    # a re-decode); one sync before the rename makes the finished database durable.
    env = lmdb.open(str(partial), map_size=max(1 << 24, 2 * estimate), subdir=True, meminit=False,
                    map_async=True, writemap=True, sync=False)
    try:
        # The database itself says where to resume (its last key); the progress file adds the
        # skipped images and the settings. Skips past the last key are simply tried again.
        with env.begin() as txn:
            cur = txn.cursor()
            start = int(bytes(cur.key())[:8]) + 1 if cur.last() else 0
        skipped = [tuple(s) for s in state["skipped"] if s[0] < start]
        jobs = ((i, images / entries[order[i]].path, entries[order[i]].label, resize, encoded)
                for i in range(start, len(entries)))
        bar = tqdm(total=len(entries), initial=start, unit="img", desc=f"{out.parent.name}/{out.name}", disable=not progress)
        batch = []

        def commit(upto):
            _put_all(env, batch)
            batch.clear()
            state["done"], state["skipped"] = upto, skipped
            atomic.write_text(progress_file, json.dumps(state))

        with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            for index, value, err in _in_order(pool, _work, jobs, window=64 * (workers or os.cpu_count() or 1)):
                e = entries[order[index]]
                if value is None:
                    skipped.append((index, order[index] + 1, e.path, err))
                else:
                    batch.append((("%08d_%s" % (index, e.path)).encode(), value))
                if len(batch) >= commit_every:
                    commit(index + 1)
                bar.update(1)
            commit(len(entries))
        bar.close()
        with env.begin() as txn:
            written = txn.stat()["entries"]
        env.sync(True)
    finally:
        env.close()
    skipped = [s[1:] for s in skipped]                 # (line, file, reason)
    if skipped and len(skipped) > max_skip * len(entries):
        raise Error(f"{out}: {len(skipped)} of {len(entries)} images could not be read (more than "
                    f"{max_skip:.0%}); the partial build stays in {partial}. First: line {skipped[0][0]} "
                    f"{skipped[0][1]}: {skipped[0][2]}")
    report = {"list": str(list_file), "images": str(images), "written": written, "skipped": [
        {"line": l, "file": f, "reason": r} for l, f, r in skipped], **params}
    atomic.write_text(partial / REPORT, json.dumps(report, indent=1))
    os.replace(partial, out)
    progress_file.unlink(missing_ok=True)
    return BuildResult(out, written, skipped, start)


def _in_order(pool, fn, jobs, window: int):
    """``pool.map(fn, jobs)`` with at most ``window`` jobs in flight (a list of a million images
    must not become a million futures)."""
    pending = collections.deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _put_all(env, items):
    """Write ``items`` in one transaction, growing the map as needed (never MDB_MAP_FULL)."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for k, v in items:
                    txn.put(k, v, append=True)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


# --------------------------------------------------------------------------- reading

def iter_db(path):
    """(key, value) of every record of an LMDB, in key order."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        raise Error(f"{path} is not an LMDB database (no data.mdb)")
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            for k, v in txn.cursor():
                yield bytes(k), bytes(v)
    finally:
        env.close()


def compute_mean(db, progress=True) -> np.ndarray:
    """Mean image (channels, height, width) over every record, as compute_image_mean computes it."""
    total, count = None, 0
    n = db_stat(db)["entries"]
    for _, value in tqdm(iter_db(db), total=n, unit="img", desc="mean", disable=not progress):
        img = decode_datum(value)
        if total is None:
            total = np.zeros(img.shape, np.float64)
        elif img.shape != total.shape:
            raise Error(f"{db}: records of different shapes ({img.shape} and {total.shape}): resize them")
        total += img
        count += 1
    if not count:
        raise Error(f"{db}: no records")
    return (total / count).astype(np.float32)


def write_mean(mean: np.ndarray, path) -> None:
    atomic.write_bytes(path, mean_blob(mean).to_bytes())


def db_stat(path) -> dict:
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        return env.stat()
    finally:
        env.close()


def inspect_db(path, first: int = 5) -> dict:
    keys, labels, shape, encoded = [], {}, None, None
    for i, (k, v) in enumerate(iter_db(path)):
        d = Datum.from_bytes(v)
        if i < first:
            keys.append(k.decode(errors="replace"))
        if shape is None:
            encoded = bool(d.encoded)
            shape = list(decode_datum(v).shape)
        labels[d.label] = labels.get(d.label, 0) + 1
    report = path / REPORT
    skipped = len(json.loads(report.read_text())["skipped"]) if report.is_file() else None
    return {"kind": "lmdb", "path": str(path), "records": sum(labels.values()), "first_keys": keys,
            "image_shape": shape, "encoded": encoded, "labels": dict(sorted(labels.items())), "skipped": skipped}


def inspect_path(path) -> dict:
    """Describe a binaryproto, an LMDB or a caffemodel."""
    from .caffeproto import read_net
    path = Path(path)
    if path.is_dir():
        return inspect_db(path)
    if not path.is_file():
        raise Error(f"{path}: no such file or folder")
    if path.suffix == ".binaryproto":
        b = read_blob(path)
        arr = b.array()
        means = arr.reshape(arr.shape[-3], -1).mean(axis=1).tolist() if arr.ndim >= 3 else []
        return {"kind": "binaryproto", "path": str(path), "shape": list(b.dims), "channel_means": means}
    layers = read_net(path)
    if not layers:
        raise Error(f"{path}: neither a binaryproto, an LMDB nor a caffemodel")
    return {"kind": "caffemodel", "path": str(path), "layers": [
        {"name": l.name, "type": l.type, "blobs": [list(b.dims) for b in l.blobs]} for l in layers]}
