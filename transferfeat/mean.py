"""Mean files: a database's (or an index's) mean image, as compute_image_mean computes it, written as
the BlobProto Caffe reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import atomic
from .caffeproto import Datum, mean_blob
from .databases import check_db, datum_image, db_stat, open_db
from .errors import Error
from .store import is_index, read_index


def compute_mean(db, progress=True) -> np.ndarray:
    """Mean image (channels, height, width) over every record of an LMDB (or an index into the image
    store), as compute_image_mean computes it. Pixels are summed 257 at a time in uint16 (exact: 257 ×
    255 < 2¹⁶), then into int64."""
    index = read_index(db) if is_index(db) else None
    if index is not None:
        n, env = len(index), open_db(index.store)
    else:
        n, env = db_stat(check_db(db))["entries"], open_db(db)
    with env.begin(buffers=True) as txn:
        values = (v for _, _, v in index.records(txn)) if index is not None else (v for _, v in txn.cursor())
        total, part, count = None, None, 0
        for value in tqdm(values, total=n, unit="img", desc="mean", disable=not progress):
            img = datum_image(Datum.from_bytes(value, copy=False))
            if total is None:
                total, part = np.zeros(img.shape, np.int64), np.zeros(img.shape, np.uint16)
            elif img.shape != total.shape:
                raise Error(f"{db}: records of different shapes ({img.shape} and {total.shape}): resize them")
            part += img
            count += 1
            if count % 257 == 0:
                total += part
                part[...] = 0
    if not count:
        raise Error(f"{db}: no records")
    return ((total + part) / count).astype(np.float32)


def write_mean(mean: np.ndarray, path) -> None:
    atomic.write_bytes(path, mean_blob(mean).to_bytes())


def study_mean(study, dataset: str, data_root, out=None, progress=True) -> tuple[Path, np.ndarray]:
    """Compute and write the mean of a dataset's LMDB (to its folder's mean file, or ``out``)."""
    from .folder import DatasetFolder
    if dataset not in study.datasets():
        raise Error(f"{dataset!r} is not a dataset of study {study.config.name!r}")
    d = DatasetFolder(data_root, dataset)
    mean = compute_mean(d.index if d.index.is_dir() and not d.lmdb.exists() else d.lmdb, progress=progress)
    path = Path(out) if out else d.mean
    write_mean(mean, path)
    return path, mean
