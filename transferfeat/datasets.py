"""Caffe LMDB databases (Datum records, as convert_imageset writes them) and mean files.

Images are decoded and resized as Caffe's convert_imageset does (images.py: OpenCV) by a pool of
threads (OpenCV releases the GIL, and threads spare pickling every record between processes); one
thread writes the LMDB.
A database is built into ``DB.partial`` and renamed to ``DB`` only when complete, so a folder named
``DB`` is a finished database. An interrupted build resumes where its last commit ended; record keys
(``%08d_<file>``) are fixed by the list order, so a resumed build never duplicates a record.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image
from tqdm import tqdm

from . import atomic, images
from .caffeproto import Datum, mean_blob, read_blob
from .errors import Error
from .locks import FileLock
from .splits import read_list

COMMIT_EVERY = 1000
BUILD_REPORT = "tf-report.json"


# --------------------------------------------------------------------------- decoding

def encode_datum(path, label: int, resize, encoded: bool) -> bytes:
    """One record's value, as ReadImageToDatum makes it; raises OSError (missing/unreadable) or
    ValueError (not an image)."""
    data = Path(path).read_bytes()
    img = images.decode(data, resize)                   # convert_imageset skips what OpenCV cannot read
    if encoded:
        if not resize:
            return Datum(data=data, label=label, encoded=True).to_bytes()
        ext = Path(path).suffix[1:] or "jpg"
        return Datum(data=images.encode(img, ext), label=label, encoded=True).to_bytes()
    return Datum(3, img.shape[0], img.shape[1], images.planar(img), label, False).to_bytes()


def _work(job):
    index, path, label, resize, encoded = job
    try:
        return index, encode_datum(path, label, resize, encoded), None
    except (OSError, ValueError) as e:
        return index, None, f"{type(e).__name__}: {e}"


def decode_datum(value) -> np.ndarray:
    """A record's pixels as (channels, height, width) uint8, decoding encoded records."""
    return datum_image(Datum.from_bytes(value))


def datum_image(d: Datum) -> np.ndarray:
    """A Datum's pixels as (channels, height, width) uint8, decoded by OpenCV when encoded."""
    if d.encoded:
        return images.decode(d.data).transpose(2, 0, 1)
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
             threads=None, max_skip=0.01, progress=True, log=print, check_space=True,
             commit_every=COMMIT_EVERY) -> BuildResult:
    """Write an LMDB of Datum records for every line of ``list_file``; an interrupted build resumes,
    retrying the images it skipped. ``check_space``: refuse to start without room for the estimate."""
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
    out.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):
        state = {"params": params, "done": 0, "skipped": []}
        if partial.exists():
            if progress_file.exists():
                try:
                    state = json.loads(progress_file.read_text())
                except ValueError:
                    raise Error(f"{progress_file}: unreadable; remove {partial} and it to start over") from None
            if state["params"] != params:
                raise Error(f"{partial} is a partial build with other settings ({state['params']}); remove it to start over")
        else:
            progress_file.unlink(missing_ok=True)
        estimate = estimate_bytes(entries, images, resize, encoded)
        done_bytes = (partial / "data.mdb").stat().st_size if (partial / "data.mdb").is_file() else 0
        free = shutil.disk_usage(out.parent).free
        if check_space and free < estimate - done_bytes:
            raise Error(f"{out}: about {(estimate - done_bytes) / 2**20:.0f} MiB more are needed for {len(entries)} "
                        f"images and {out.parent} has {free / 2**20:.0f} MiB free (--no-space-check to try anyway)")
        if estimate > 1 << 30:
            log(f"{out}: about {estimate / 2**30:.1f} GiB for {len(entries)} images")
        try:
            written, skipped, start = _fill(partial, progress_file, state, entries, order, images, resize, encoded,
                                            threads, estimate, commit_every, progress, f"{out.parent.name}/{out.name}")
        except lmdb.Error as e:
            free = shutil.disk_usage(out.parent).free
            full = "the disk is full: " if free < max(estimate - done_bytes, 1 << 20) / 10 else ""
            raise Error(f"{out}: writing the database failed ({e}); {full}{free / 2**20:.1f} MiB free on "
                        f"{out.parent}; the partial build stays in {partial}: free space (or fix the cause) and "
                        f"run again to resume") from None
        skipped = [s[1:] for s in skipped]                 # (line, file, reason)
        if skipped and len(skipped) > max_skip * len(entries):
            raise Error(f"{out}: {len(skipped)} of {len(entries)} images could not be read (more than "
                        f"{max_skip:.0%}); the partial build stays in {partial}. First: line {skipped[0][0]} "
                        f"{skipped[0][1]}: {skipped[0][2]}")
        report = {"list": str(list_file), "images": str(images), "written": written, "skipped": [
            {"line": l, "file": f, "reason": r} for l, f, r in skipped], **params}
        atomic.write_text(partial / BUILD_REPORT, json.dumps(report, indent=1))
        os.replace(partial, out)
        progress_file.unlink(missing_ok=True)
    return BuildResult(out, written, skipped, start)


def _fill(partial, progress_file, state, entries, order, images, resize, encoded, threads, estimate, commit_every,
          progress, desc):
    """Add the records ``partial`` lacks: those after its last key, and those skipped before it."""
    # No fsync per commit (the progress file only advances after a commit, so a crash costs at most
    # a re-decode); one sync before the rename makes the finished database durable. No writemap: a
    # full disk is then an error from the write, not a SIGBUS from the memory map.
    env = lmdb.open(str(partial), map_size=max(1 << 24, 2 * estimate), subdir=True, meminit=False,
                    map_async=True, sync=False)
    try:
        # The database itself says where to resume (its last key); the progress file adds the
        # skipped images and the settings. Skips past the last key are simply tried again.
        with env.begin() as txn:
            cur = txn.cursor()
            start = int(bytes(cur.key())[:8]) + 1 if cur.last() else 0
        retry = sorted({s[0] for s in state["skipped"] if s[0] < start})
        skipped, batch = [], []
        jobs = ((i, images / entries[order[i]].path, entries[order[i]].label, resize, encoded)
                for i in retry + list(range(start, len(entries))))
        bar = tqdm(total=len(entries), initial=start - len(retry), unit="img", desc=desc, disable=not progress)

        def commit(upto):
            _put_all(env, batch)
            batch.clear()
            state["done"], state["skipped"] = upto, skipped + [s for s in state["skipped"] if s[0] >= upto]
            atomic.write_text(progress_file, json.dumps(state))

        with ThreadPoolExecutor(max_workers=threads or os.cpu_count()) as pool:
            for index, value, err in _in_order(pool, _work, jobs, window=64 * (threads or os.cpu_count() or 1)):
                e = entries[order[index]]
                if value is None:
                    skipped.append((index, order[index] + 1, e.path, err))
                else:
                    batch.append((("%08d_%s" % (index, e.path)).encode(), value, index >= start))   # retried: earlier keys
                if len(batch) >= commit_every:
                    commit(max(index + 1, start))
                bar.update(1)
            commit(len(entries))
        bar.close()
        with env.begin() as txn:
            written = txn.stat()["entries"]
        env.sync(True)
    finally:
        env.close()
    return written, sorted(skipped), start


class _build_lock:
    """One build of a database at a time: a second ``tf db`` on the same output is refused."""

    def __init__(self, out: Path):
        self.out, self.lock = out, FileLock(out.with_name(f".{out.name}.lock"))

    def __enter__(self):
        if not self.lock.acquire():
            raise Error(f"another tf db is building {self.out} right now (lock {self.lock.path})")
        return self

    def __exit__(self, *exc):
        self.lock.release()


def db_jobs(study, datasets, all_, data_root, images, list_file, out, resize):
    """``tf db``'s two forms: (jobs as ``study_builds`` gives them, resize (W, H) or None)."""
    if list_file or out:
        if not (list_file and out and images) or datasets or all_:
            raise Error("the low-level form needs --list, --images and --out, and no DATASET")
        return [(str(out), Path(list_file), Path(images), Path(out))], resize
    if all_ == bool(datasets) or images is None:
        raise Error("name DATASETs or give --all, with --images DIR (or use --list/--images/--out)")
    if resize is None and study.config.input.resize:
        resize = (study.config.input.resize,) * 2
    return study_builds(study, study.datasets() if all_ else datasets, data_root, images), resize or None


def study_builds(study, names, data_root, images) -> list[tuple[str, Path, Path, Path]]:
    """(dataset, list file, image folder, database) for each named dataset of ``study``: a training
    set reads ``images/train``, a validation set ``images/val``."""
    from .folder import DatasetFolder
    known = study.datasets()
    out = []
    for name in names:
        if name not in known:
            raise Error(f"{name!r} is not a dataset of study {study.config.name!r} (e.g. {', '.join(known[:4])}…)")
        d = DatasetFolder(data_root, name)
        part = "train" if study.dataset_specs[name].part == "train" else "val"
        out.append((name, d.files, Path(images) / part, d.lmdb))
    return out


def study_mean(study, dataset: str, data_root, out=None, progress=True) -> tuple[Path, np.ndarray]:
    """Compute and write the mean of a dataset's LMDB (to its folder's mean file, or ``out``)."""
    from .folder import DatasetFolder
    if dataset not in study.datasets():
        raise Error(f"{dataset!r} is not a dataset of study {study.config.name!r}")
    d = DatasetFolder(data_root, dataset)
    mean = compute_mean(d.lmdb, progress=progress)
    path = Path(out) if out else d.mean
    write_mean(mean, path)
    return path, mean


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
    """Write ``items`` (key, value, append) in one transaction, growing the map as needed (never
    MDB_MAP_FULL); ``append`` for keys after the last one, else an ordinary insert."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for k, v, append in items:
                    txn.put(k, v, append=append)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


# --------------------------------------------------------------------------- reading

def check_db(path) -> Path:
    """``path`` if it is an LMDB database, else an error saying what it is not."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        raise Error(f"{path} is not an LMDB database (no data.mdb)")
    return path


_OPEN: dict = {}          # database folder -> ((device, inode) of it and of its data.mdb, read-only handle)


def _identity(path: Path):
    try:
        return tuple((s.st_dev, s.st_ino) for s in (path.stat(), (path / "data.mdb").stat()))
    except OSError:
        return None


def open_db(path):
    """A read-only handle on an LMDB database, one per database and process (LMDB refuses a second
    one in the same process), shared by every reader here. Handles on databases since removed or
    rebuilt are closed first (LMDB would take a new one at a reused inode for the old)."""
    path = check_db(path).resolve()
    for known, (ident, env) in list(_OPEN.items()):
        if _identity(known) != ident:
            env.close()
            del _OPEN[known]
    if path not in _OPEN:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True, max_readers=126)
        _OPEN[path] = (_identity(path), env)
    return _OPEN[path][1]


def iter_db(path):
    """(key, value) of every record of an LMDB, in key order."""
    with open_db(path).begin() as txn:
        for k, v in txn.cursor():
            yield bytes(k), bytes(v)


def compute_mean(db, progress=True) -> np.ndarray:
    """Mean image (channels, height, width) over every record, as compute_image_mean computes it."""
    total, count = None, 0
    n = db_stat(check_db(db))["entries"]
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
    with open_db(path).begin() as txn:
        return txn.stat()


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
    report = path / BUILD_REPORT
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
