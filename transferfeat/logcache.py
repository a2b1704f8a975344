"""The parsed logs of a results folder, cached: ``parse_root`` parses each log file once (in parallel,
big files first) and keeps the segments as plain arrays under ``cache_dir()``, one file per results
folder, invalidated per log file by its size and modification time."""
from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .folder import StudyFolder, segment_order
from .logs import Segment, merge, parse_segment
from .study import Study

CACHE_VERSION = 6


def cache_dir() -> Path:
    """Where parsed logs are kept: ``$XDG_CACHE_HOME/transferfeat/logs`` (one file per results folder)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transferfeat" / "logs"


def _cache_path(root: Path) -> Path:
    return cache_dir() / (hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16] + ".npz")


def _key(p: Path):
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


def _parse_for_results(path):
    return parse_segment(path, lr=False)


_ARRAYS = ("loss_its", "loss_vals", "test_its", "test_idx", "test_vals", "speed_its", "speed_iter_s", "speed_img_s")


def _save_cache(path: Path, segments: dict) -> None:
    """The parsed segments as one .npz of plain arrays and a JSON index: nothing in it can run code
    when read back (numpy refuses pickled objects: allow_pickle=False)."""
    from . import atomic
    index, parts = [], {k: [] for k in _ARRAYS}
    for key, seg in segments.items():
        tests = [(it, idx, v) for it, scores in seg.test.items() for idx, v in scores.items()]
        index.append({"key": list(key), "path": seg.path, "test_names": seg.test_names, "seconds": seg.seconds,
                      "first_iter": seg.first_iter, "last_iter": seg.last_iter, "engine": seg.engine,
                      "losses": len(seg.loss[0]), "tests": len(tests), "speeds": len(seg.speed[0])})
        parts["loss_its"].append(np.asarray(seg.loss[0], np.int64))
        parts["loss_vals"].append(np.asarray(seg.loss[1], np.float64))
        parts["test_its"].append(np.array([t[0] for t in tests], np.int64))
        parts["test_idx"].append(np.array([t[1] for t in tests], np.int64))
        parts["test_vals"].append(np.array([t[2] for t in tests], np.float64))
        for name, values in zip(("speed_its", "speed_iter_s", "speed_img_s"), seg.speed):
            parts[name].append(np.asarray(values, np.float64))
    buf = io.BytesIO()
    np.savez(buf, index=np.frombuffer(json.dumps({"version": CACHE_VERSION, "segments": index}).encode(), np.uint8),
             **{k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, buf.getvalue())
    path.with_suffix(".pickle").unlink(missing_ok=True)      # an older tf's cache of the same folder


def _load_cache(path: Path) -> dict:
    """What ``_save_cache`` wrote ({} for anything else: another version, a damaged or foreign file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            head = json.loads(z["index"].tobytes())
            if head.get("version") != CACHE_VERSION:
                return {}
            arrays = {k: z[k] for k in _ARRAYS}
        out, at_loss, at_test, at_speed = {}, 0, 0, 0
        for e in head["segments"]:
            n, m, k = e["losses"], e["tests"], e["speeds"]
            test = {}
            for it, idx, v in zip(arrays["test_its"][at_test:at_test + m].tolist(),
                                  arrays["test_idx"][at_test:at_test + m].tolist(),
                                  arrays["test_vals"][at_test:at_test + m].tolist()):
                test.setdefault(it, {})[idx] = v
            loss = (arrays["loss_its"][at_loss:at_loss + n].astype(np.int32), arrays["loss_vals"][at_loss:at_loss + n])
            speed = (arrays["speed_its"][at_speed:at_speed + k].astype(np.int32),
                     arrays["speed_iter_s"][at_speed:at_speed + k], arrays["speed_img_s"][at_speed:at_speed + k])
            out[tuple(e["key"])] = Segment(e["path"], loss=loss, test=test, speed=speed,
                                           test_names={int(k): v for k, v in e["test_names"].items()},
                                           seconds=e["seconds"], first_iter=e["first_iter"], last_iter=e["last_iter"],
                                           engine=e["engine"])
            at_loss, at_test, at_speed = at_loss + n, at_test + m, at_speed + k
        return out
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return {}


def parse_root(study: Study, root, use_cache: bool = True, workers: int = None) -> dict:
    """Net name -> merged NetLog, for every net of the study with log files under ``root``."""
    root = Path(root)
    folder = StudyFolder(root, study)
    files = {net.name: folder.net(net.name).logs() for net in study.nets.values()}
    files = {k: v for k, v in files.items() if v}
    cache_file = _cache_path(root)
    cache = _load_cache(cache_file) if use_cache and cache_file.is_file() else {}
    keys = {p: _key(p) for paths in files.values() for p in paths}
    todo = [p for p, k in keys.items() if k not in cache]
    if todo:
        todo.sort(key=lambda p: -p.stat().st_size)       # big files first: better balance across workers
        if len(todo) > 4 and (workers or os.cpu_count() or 1) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                parsed = list(pool.map(_parse_for_results, todo, chunksize=1))
        else:
            parsed = [_parse_for_results(p) for p in todo]
        for p, seg in zip(todo, parsed):
            cache[keys[p]] = seg
        if use_cache:
            _save_cache(cache_file, {k: cache[k] for k in keys.values()})
    return {name: merge([cache[keys[p]] for p in sorted(paths, key=segment_order)]) for name, paths in files.items()}
