"""Caffe LMDB databases: Datum records as convert_imageset writes them, the builder, reading them.

Images are decoded and resized as Caffe's convert_imageset does (images.py: OpenCV) by a pool of
threads (OpenCV releases the GIL, and threads spare pickling every record between processes), a
chunk of images per task; a raw record is assembled with one copy of its pixels; one thread streams
the records into the open LMDB transaction, committed every ~8 MiB (bounded memory, and the map
grown and the transaction replayed when LMDB says it is full); after each commit a thread writes
the new pages to the disk and lets the kernel drop them from its cache, so the disk writes while
the cores decode and the last sync waits for little (benchmarks/README.md: what each choice measured).
A database is built into ``DB.partial`` and renamed to ``DB`` only when complete, so a folder named
``DB`` is a finished database. An interrupted build resumes where its last commit ended; record keys
(``%08d_<file>``) are fixed by the list order, so a resumed build never duplicates a record.
"""
from __future__ import annotations

import collections
import errno
import functools
import json
import os
import shutil
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image
from tqdm import tqdm

from . import atomic, images
from .caffeproto import Datum, int_field, key, read_blob, varint
from .errors import Error
from .locks import FileLock
from .splits import read_list

COMMIT_BYTES = 8 << 20              # a transaction's records, at most (a resumed build re-decodes at most this)
CHUNK = 16                          # images a worker decodes per task
BUILD_REPORT = "tf-report.json"


# --------------------------------------------------------------------------- decoding

def encode_datum(path, label: int, resize, encoded: bool) -> bytes:
    """One record's value, as ReadImageToDatum makes it; raises OSError (missing/unreadable) or
    ValueError (not an image)."""
    if not encoded:                                     # ReadImageToCVMat: cv::imread, then cv::resize
        return raw_datum(images.read(path, resize), label)
    with open(path, "rb") as f:
        data = f.read()
    img = images.decode(data, resize)                   # convert_imageset skips what OpenCV cannot read
    if not resize:
        return Datum(data=data, label=label, encoded=True).to_bytes()
    ext = Path(path).suffix[1:] or "jpg"
    return Datum(data=images.encode(img, ext), label=label, encoded=True).to_bytes()


def raw_datum(img: np.ndarray, label: int) -> memoryview:
    """The bytes of ``Datum(3, h, w, planar pixels, label, encoded=False)``, as CVMatToDatum and
    convert_imageset make them (fields in number order): one buffer, the pixels copied into it once."""
    h, w, c = img.shape
    head, tail = _head(c, h, w), _tail(label)
    n = c * h * w
    out = np.empty(len(head) + n + len(tail), np.uint8)
    out[:len(head)] = head
    images.planar_into(img, out[len(head):len(head) + n].reshape(c, h, w))
    out[len(head) + n:] = tail
    return out.data


@functools.lru_cache(maxsize=64)
def _head(c: int, h: int, w: int) -> np.ndarray:
    return np.frombuffer(int_field(1, c) + int_field(2, h) + int_field(3, w) + key(4, 2) + varint(c * h * w), np.uint8)


@functools.lru_cache(maxsize=4096)
def _tail(label: int) -> np.ndarray:
    return np.frombuffer(int_field(5, label) + int_field(7, 0), np.uint8)


def _work(chunk):
    """[(index, record bytes or None, why it was skipped)] for a chunk of jobs."""
    out = []
    for index, path, label, resize, encoded in chunk:
        try:
            out.append((index, encode_datum(path, label, resize, encoded), None))
        except (OSError, ValueError) as e:
            out.append((index, None, f"{type(e).__name__}: {e}"))
    return out


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
             commit_bytes=COMMIT_BYTES) -> BuildResult:
    """Write an LMDB of Datum records for every line of ``list_file``; an interrupted build resumes,
    retrying the images it skipped. ``check_space``: refuse to start without room for the estimate."""
    list_file, images, out = Path(list_file), Path(images), Path(out)
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise Error(f"{out}: threads: {threads!r} is not a positive number of decoding threads")
    if out.exists():
        raise Error(f"{out} exists: remove it to rebuild")
    entries = read_list(list_file, classes)
    order = index_order(len(entries), shuffle, seed)
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
                                            threads, estimate, commit_bytes, progress, f"{out.parent.name}/{out.name}")
        except (lmdb.Error, OSError) as e:
            if isinstance(e, OSError) and e.errno != errno.ENOSPC:
                raise
            free = shutil.disk_usage(out.parent).free
            enospc = isinstance(e, OSError) or "No space left" in str(e)
            full = "the disk is full: " if enospc or free < max(estimate - done_bytes, 1 << 20) / 10 else ""
            raise Error(f"{out}: writing the database failed ({e}); {full}{free / 2**20:.1f} MiB free on "
                        f"{out.parent}; the partial build stays in {partial}: free space (or fix the cause) and "
                        f"run again to resume") from None
        skipped = [s[1:] for s in skipped]                 # (line, file, reason)
        if skipped and len(skipped) > max_skip * len(entries):
            raise Error(f"{out}: {len(skipped)} of {len(entries)} images could not be read (more than "
                        f"{max_skip:.0%}); the partial build stays in {partial}. First: line {skipped[0][0]} "
                        f"{skipped[0][1]}: {skipped[0][2]}")
        report = {"list": str(list_file), "images": str(images), "written": written, "skipped": [
            {"line": l, "file": f, "reason": r} for l, f, r in skipped], **params, "list_sha256": atomic.sha256(list_file)}
        atomic.write_text(partial / BUILD_REPORT, json.dumps(report, indent=1))
        os.replace(partial, out)
        progress_file.unlink(missing_ok=True)
    return BuildResult(out, written, skipped, start)


def built_from(db, list_file, resize=None, encoded=False, shuffle=None, seed=None):
    """Why the database ``db`` does not hold ``list_file``'s images as asked (None when it does): its
    list changed since (a new ``tf split``), or it was built with another --resize, --encoded,
    shuffle or seed. A database from an older tf, without the list's sha256, is checked by its
    number of lines."""
    report = atomic.read_json(Path(db) / BUILD_REPORT)
    if not report:
        return f"it has no build record ({BUILD_REPORT}): tf did not build it, or not whole"
    sha = report.get("list_sha256")
    if sha is not None and sha != atomic.sha256(list_file):
        return f"{list_file} has changed since it was built (a new tf split?)"
    if sha is None and report.get("lines") != len(read_list(list_file, 1 << 30)):
        return f"it holds {report.get('lines')} lines' images and {list_file} now has another number"
    asked = {"resize": list(resize) if resize else None, "encoded": bool(encoded), "shuffle": shuffle, "seed": seed}
    for key, value in asked.items():
        if value is not None and report.get(key) != value:
            return f"it was built with {key} {report.get(key)}, not {value}"
    return None


def reuse(db, list_file, rebuild: bool, log=print, **asked) -> bool:
    """Whether the existing database ``db`` is kept: it holds ``list_file`` as ``asked`` (built_from's
    settings); else an error naming why, or with ``rebuild`` it is removed (to be built again)."""
    if not Path(db).exists():
        return False
    why = built_from(db, list_file, **asked)
    if not why:
        log(f"{db}: exists, built from {list_file} as asked, kept")
        return True
    if not rebuild:
        raise Error(f"{db} does not hold {list_file} as asked: {why}; pass --rebuild to build it again (or remove it)")
    log(f"{db}: {why}; removing it to build it again")
    shutil.rmtree(db)
    return False


def _fill(partial, progress_file, state, entries, order, images, resize, encoded, threads, estimate, commit_bytes,
          progress, desc):
    """Add the records ``partial`` lacks: those after its last key, and those skipped before it."""
    # No fsync per commit (the progress file only advances after a commit, so a crash costs at most
    # a re-decode); one sync before the rename makes the finished database durable. LMDB writes its
    # pages with pwrite (not through a writable map: first touches of mapped file pages cost the
    # kernel more than the copy saved: benchmarks/README.md), into blocks reserved beforehand
    # (_Writer.reserve), so a full disk is an error from the reservation before LMDB writes.
    env = lmdb.open(str(partial), map_size=max(1 << 24, 2 * estimate), subdir=True, meminit=False,
                    sync=False)
    try:
        # The database itself says where to resume (its last key); the progress file adds the
        # skipped images and the settings. Skips past the last key are simply tried again.
        with env.begin() as txn:
            cur = txn.cursor()
            start = int(bytes(cur.key())[:8]) + 1 if cur.last() else 0
        retry = sorted({s[0] for s in state["skipped"] if s[0] < start})
        skipped = []
        folder = str(images) + os.sep
        jobs = [(i, folder + entries[order[i]].path, entries[order[i]].label, resize, encoded)
                for i in retry + list(range(start, len(entries)))]
        chunks = (jobs[k:k + CHUNK] for k in range(0, len(jobs), CHUNK))
        bar = tqdm(total=len(entries), initial=start - len(retry), unit="img", desc=desc, disable=not progress)
        writer = _Writer(env, partial / "data.mdb", estimate, commit_bytes)

        def commit(upto):
            writer.commit()
            state["done"], state["skipped"] = upto, skipped + [s for s in state["skipped"] if s[0] >= upto]
            atomic.write_text(progress_file, json.dumps(state))

        workers = threads or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in _in_order(pool, _work, chunks, window=4 * workers):
                for index, value, err in done:
                    e = entries[order[index]]
                    if value is None:
                        skipped.append((index, order[index] + 1, e.path, err))
                    else:                                    # retried images have earlier keys: no append
                        writer.put(("%08d_%s" % (index, e.path)).encode(), value, index >= start)
                    if writer.bytes >= commit_bytes:
                        commit(max(index + 1, start))
                bar.update(len(done))
            commit(len(entries))
        bar.close()
        with env.begin() as txn:
            written = txn.stat()["entries"]
        writer.close()
        env.sync(True)
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    finally:
        env.close()
    os.truncate(partial / "data.mdb", used)         # the map's and the reservation's unused end
    return written, sorted(skipped), start


class _Writer:
    """Records streamed into one open write transaction; on a full map, the transaction is aborted,
    the map doubled and its records put again (so they are kept until the commit). The file's blocks
    are reserved (posix_fallocate) ahead of the pages LMDB writes: on a full disk the reservation
    fails with ENOSPC, before any write."""

    def __init__(self, env, data_file: Path, estimate: int, commit_bytes: int):
        self.env, self.txn, self.items, self.bytes = env, None, [], 0
        self.fd, self.reserved, self.left, self.ahead = os.open(data_file, os.O_RDWR), 0, estimate, 2 * commit_bytes
        self.psize, self.since = env.stat()["psize"], 1 << 62            # bytes put since the file's size was read
        self.flusher = None

    def reserve(self, need: int) -> None:
        """Blocks allocated for what is put and ``need`` more (LMDB's page count is read rarely:
        records are counted in whole pages, twice over, between looks)."""
        self.since += 2 * (need + self.psize)
        if self.since < self.reserved:
            return
        used = (self.env.info()["last_pgno"] + 1) * self.psize + self.bytes + len(self.items) * self.psize
        self.since = used + need
        target = used + need + min(self.ahead, max(self.left, 0)) + (256 << 10)
        if target > self.reserved:
            os.posix_fallocate(self.fd, 0, target)
            self.reserved = target

    def put(self, k: bytes, v, append: bool) -> None:
        self.reserve(len(v))
        self.items.append((k, v, append))
        self.bytes += len(v)
        self.left -= len(v)
        while True:
            try:
                if self.txn is None:
                    self.txn = self.env.begin(write=True)
                    for k2, v2, a2 in self.items[:-1]:
                        self.txn.put(k2, v2, append=a2)
                self.txn.put(k, v, append=append)
                return
            except lmdb.MapFullError:
                self.txn.abort()
                self.txn = None
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def commit(self) -> None:
        if self.txn is not None:
            self.txn.commit()
            if self.flusher is None or not self.flusher.is_alive():      # write back as the build goes
                self.flusher = threading.Thread(target=_write_back, args=(self.fd,), daemon=True)
                self.flusher.start()
        self.txn, self.items, self.bytes = None, [], 0

    def close(self) -> None:
        if self.flusher is not None:
            self.flusher.join()
        os.close(self.fd)


def _write_back(fd: int) -> None:
    """Write the file's dirty pages to the disk, then let the kernel drop them from its cache: a
    build's pages are not read again, so the cache reuses its pages instead of growing by the whole
    database (benchmarks/README.md)."""
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


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


def study_builds(study, names, data_root, images) -> list[tuple[str, Path, Path, Path]]:
    """(dataset, list file, image folder, database) for each named dataset of ``study``."""
    from .folder import DatasetFolder, image_folder
    known = study.datasets()
    out = []
    for name in names:
        if name not in known:
            raise Error(f"{name!r} is not a dataset of study {study.config.name!r} (e.g. {', '.join(known[:4])}…)")
        d = DatasetFolder(data_root, name)
        out.append((name, d.files, image_folder(images, study.dataset_specs[name].part), d.lmdb))
    return out


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


# --------------------------------------------------------------------------- reading

def index_order(n: int, shuffle: bool, seed: int) -> list:
    """The list order a database of ``n`` entries is built in (build_db's)."""
    order = list(range(n))
    if shuffle:
        np.random.RandomState(seed).shuffle(order)
    return order


def check_db(path) -> Path:
    """``path`` if it is a whole LMDB database, else an error saying what it is not. A data file
    shorter than its newest meta page says (cut by a copy, a full disk, a truncation) would kill
    its reader with SIGBUS when a record past the cut is read: refused here, before it is mapped."""
    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise Error(f"{path} is not an LMDB database (no data.mdb)")
    try:
        with open(data, "rb") as f:
            head = f.read(2 * 65536)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise Error(f"{data}: cannot be read ({e.strerror})") from None
    need = lmdb_bytes(head)
    if need is None:
        raise Error(f"{data}: not an LMDB data file (no LMDB meta page at its start)")
    if size < need:
        raise Error(f"{data} is cut: {size:,} bytes, but its pages end at {need:,} (an interrupted copy, a full "
                    f"disk?): build it again (tf db --rebuild) or copy it whole")
    return path


def lmdb_bytes(head: bytes):
    """The bytes an LMDB data file needs (its newest meta page's last page, plus one, times the page
    size) from the file's first bytes; None when they are not LMDB's. A meta page: a 16-byte page
    header, then magic 0xBEEFC0DE, version, address, map size, the two databases (48 bytes each; the
    first one's first field is the page size), the last page number and the transaction id."""
    def meta(at):
        if len(head) < at + 16 + 136:
            return None
        magic, = struct.unpack_from("<I", head, at + 16)
        return struct.unpack_from("<QQ", head, at + 16 + 120) if magic == 0xBEEFC0DE else None
    first = meta(0)
    if first is None:
        return None
    psize, = struct.unpack_from("<I", head, 16 + 24)
    metas = [m for m in (first, meta(psize) if 512 <= psize <= 65536 else None) if m is not None]
    last, _ = max(metas, key=lambda m: m[1])                  # the newer transaction's meta page
    return (last + 1) * psize


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
        env = lmdb.open(str(path), readonly=True, lock=False, subdir=True, max_readers=126)
        _OPEN[path] = (_identity(path), env)
    return _OPEN[path][1]


def iter_db(path):
    """(key, value) of every record of an LMDB, in key order."""
    with open_db(path).begin() as txn:
        for k, v in txn.cursor():
            yield bytes(k), bytes(v)


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
