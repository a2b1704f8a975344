"""One image store for the whole study, and each dataset as an index into it.

The 33 datasets of the paper are subsets of the same 1.33 M images with their own labels and
order; as LMDBs they take about 1.5 TB. The store holds each image once: ``<data>/store/train`` and
``<data>/store/val``, built by ``build_db`` from the whole training and validation lists (in list
order, resized as Caffe resizes, raw or encoded). A dataset is then ``<data>/<dataset>/index``: the
store rows of its records in the order its own LMDB would hold them (the list shuffled with the same
seed), read with the labels of its own list. ``read_index`` gives exactly the records — keys,
pixels, labels — that the dataset's LMDB would (the torch engine reads indexes; Caffe cannot: it
needs real LMDBs, and tf says so).
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic
from .databases import BUILD_REPORT, build_db, built_from, check_db, estimate_bytes, index_order, open_db, reuse
from .errors import Error
from .folder import DatasetFolder, image_folder
from .splits import read_list

PARTS = {"train": "whole_train", "valid": "whole_valid"}


# --------------------------------------------------------------------------- a dataset as an index

INDEX = "tf-index.json"          # a dataset as records of the image store


VERSION = 1


def is_index(path) -> bool:
    return (Path(path) / INDEX).is_file()


@dataclass
class Index:
    """A dataset's records in the store: ``positions`` (the record numbers its LMDB's keys would
    carry, skipped images left out) and ``rows`` (the store's records), with its list's entries."""
    path: Path
    store: Path
    entries: list
    order: list
    positions: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    def records(self, txn=None):
        """(key, label, store value) of every record, in the order the dataset's LMDB holds them; the
        values are views into the store, valid while the read transaction ``txn`` (or the iteration) is."""
        if txn is None:
            with open_db(self.store).begin(buffers=True) as txn:
                yield from self.records(txn)
            return
        for i, row in zip(self.positions.tolist(), self.rows.tolist()):
            e = self.entries[self.order[i]]
            value = txn.get(b"%08d_%s" % (row, e.path.encode()))
            if value is None:
                raise Error(f"{self.path}: store {self.store} has no record {row} ({e.path}): build the store again")
            yield ("%08d_%s" % (i, e.path)).encode(), e.label, value


def read_index(path) -> Index:
    """The index at ``path`` (a folder holding tf-index.json), checked against its store and list."""
    path = Path(path)
    try:
        head = json.loads((path / INDEX).read_text())
        store, lst = (path / head["store"]).resolve(), (path / head["list"]).resolve()
        with np.load(path / "records.npz", allow_pickle=False) as z:
            positions, rows = z["positions"], z["rows"]
        version, seed, shuffle, classes = head["version"], head["seed"], head["shuffle"], head["classes"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Error(f"{path}: not an index tf wrote ({e})") from None
    if version != VERSION:
        raise Error(f"{path}: an index of version {version}; build it again with this tf")
    check_db(store)
    if head.get("list_sha256") is not None and atomic.sha256(lst) != head["list_sha256"]:
        raise Error(f"{path}: its list {lst} has changed since this index was written (a new tf split?): "
                    f"run `tf db --store` again")
    built = atomic.read_json(store / BUILD_REPORT).get("list_sha256")
    if head.get("store_list_sha256") is not None and built != head["store_list_sha256"]:
        raise Error(f"{path}: the store {store} was built again since this index was written: run `tf db --store` again")
    entries = read_list(lst, classes)
    return Index(path, store, entries, index_order(len(entries), shuffle, seed), positions, rows)


def store_db(data_root, part: str) -> Path:
    """The store's database for ``part`` ("train" or "valid")."""
    return Path(data_root) / "store" / ("train" if part == "train" else "val")


def write_index(list_file, data_root, part: str, out, classes: int, shuffle=True, seed=0) -> Index:
    """The index of the dataset whose list is ``list_file`` into the store's ``part``, at ``out``."""
    list_file, out = Path(list_file), Path(out)
    whole = DatasetFolder(data_root, PARTS[part]).files
    store = store_db(data_root, part)
    check_db(store)
    why = built_from(store, whole)
    if why:
        raise Error(f"{store} does not hold {whole}: {why}; build the store again (tf db --store --rebuild)")
    rows = {e.path: i for i, e in enumerate(read_list(whole, 1 << 30))}
    report = atomic.read_json(store / BUILD_REPORT)
    skipped = {s["line"] - 1 for s in report.get("skipped", [])}
    entries = read_list(list_file, classes)
    order = index_order(len(entries), shuffle, seed)
    positions, store_rows = [], []
    for i, k in enumerate(order):
        row = rows.get(entries[k].path)
        if row is None:
            raise Error(f"{list_file}:{k + 1}: {entries[k].path} is not in {whole}, so not in the store")
        if row not in skipped:                          # an image the store could not read: no record here either
            positions.append(i)
            store_rows.append(row)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, positions=np.array(positions, np.uint32), rows=np.array(store_rows, np.uint32))
    try:
        atomic.write_bytes(partial / "records.npz", buf.getvalue())
        atomic.write_json(partial / INDEX, {"version": VERSION, "store": os.path.relpath(store, out),
                                            "list": os.path.relpath(list_file, out), "seed": seed, "shuffle": shuffle,
                                            "classes": classes, "records": len(positions),
                                            "list_sha256": atomic.sha256(list_file),
                                            "store_list_sha256": report.get("list_sha256")})
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        full = " (the disk is full)" if e.errno == errno.ENOSPC else ""
        raise Error(f"{out}: writing the index failed: {e.strerror}{full}; nothing of it was kept, and the store "
                    f"is whole: free space (or fix the cause), then run `tf db --store` again to write the indexes") from None
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return read_index(out)


def sizes(study, data_root, images, resize, encoded) -> dict:
    """Disk each way for the study's datasets: per-dataset LMDBs, or the store and the indexes."""
    per_dataset, store = 0, 0
    for name in study.datasets():
        d = DatasetFolder(data_root, name)
        if d.files.is_file():
            per_dataset += estimate_bytes(read_list(d.files, study.config.datasets.classes),
                                          image_folder(images, study.dataset_specs[name].part), resize, encoded)
    for part, name in PARTS.items():
        d = DatasetFolder(data_root, name)
        if d.files.is_file():
            store += estimate_bytes(read_list(d.files, study.config.datasets.classes), image_folder(images, part),
                                    resize, encoded)
    lines = sum(sum(1 for _ in open(DatasetFolder(data_root, n).files)) for n in study.datasets()
                if DatasetFolder(data_root, n).files.is_file())
    return {"datasets": per_dataset, "store": store, "indexes": 8 * lines + 4096 * len(study.datasets())}


def build_store(study, data_root, images, resize=None, encoded=False, threads=None, log=print, rebuild=False,
                **kw) -> list:
    """The store (both parts) and an index for every dataset of the study whose list exists. A store
    part built from another list or with other settings is an error, or with ``rebuild`` removed and
    built again."""
    out = []
    for part, name in PARTS.items():
        lst = DatasetFolder(data_root, name).files
        db = store_db(data_root, part)
        if not lst.is_file():
            raise Error(f"{lst} is missing: run `tf split` first (the store holds the whole {part} list)")
        if not reuse(db, lst, rebuild, log, resize=resize, encoded=encoded):
            r = build_db(lst, image_folder(images, part), db,
                         classes=study.config.datasets.classes, resize=resize, encoded=encoded, shuffle=False,
                         threads=threads, log=log, **kw)
            log(f"{db}: {r.written} records, {len(r.skipped)} skipped")
    for name in study.datasets():
        d = DatasetFolder(data_root, name)
        if not d.files.is_file():
            log(f"{name}: no list ({d.files}), no index")
            continue
        part = "train" if study.dataset_specs[name].part == "train" else "valid"
        index = write_index(d.files, data_root, part, d.index, study.config.datasets.classes)
        out.append((name, index))
        log(f"{d.index}: {len(index)} records of {store_db(data_root, part)}")
    return out
