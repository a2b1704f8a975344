"""Is a snapshot whole? A trainer writes its snapshots in place, so a kill or a full disk can leave
one cut short, and a file cut at a layer boundary still parses. A snapshot pair counts only when the
caffemodel holds every learnable layer of the net's train prototxt with the right blob shapes and
the solverstate is whole, at the right iteration, with one history blob of the right shape per
learnable blob. A net is done only when its final pair passed this check and the completion record
(size, digest) was written; later users compare the file against that record.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import atomic
from .caffeproto import ProtoError, SolverState, read_net
from .errors import Error
from .folder import Listing, NetFolder
from .netspec import read as read_netspec


class SnapshotError(Error):
    """A snapshot that is cut, incomplete or not of this net."""


def expected(netdir: NetFolder) -> dict:
    """Learnable layer name -> blob shapes, from the net's train prototxt."""
    return read_netspec(netdir.train_prototxt, strict=False).learnable


def _same(shape, dims) -> bool:
    """Caffe 1.0 shapes, or 2014's num/channels/height/width (leading ones padded)."""
    strip = lambda s: tuple(s)[next((i for i, d in enumerate(s) if d != 1), len(s)):]   # noqa: E731
    return tuple(shape) == tuple(dims) or strip(shape) == strip(dims)


def check_caffemodel(path: Path, learnable: dict) -> None:
    try:
        layers = {l.name: l for l in read_net(path)}
    except (ProtoError, OSError) as e:
        raise SnapshotError(f"{path}: cannot be read whole ({e})") from None
    for name, shapes in learnable.items():
        if name not in layers:
            raise SnapshotError(f"{path}: layer {name} is missing (the file holds {len(layers)} layers)")
        blobs = layers[name].blobs
        if len(blobs) != len(shapes):
            raise SnapshotError(f"{path}: layer {name} has {len(blobs)} blobs, the net has {len(shapes)}")
        for i, (b, shape) in enumerate(zip(blobs, shapes)):
            if not _same(shape, b.dims) or b.data.size != int(np.prod(shape)):
                raise SnapshotError(f"{path}: layer {name} blob {i} has shape {b.dims} and {b.data.size} values, "
                                    f"the net's is {shape}")


def read_solverstate(path: Path) -> SolverState:
    try:
        return SolverState.from_bytes(Path(path).read_bytes())
    except (ProtoError, OSError) as e:
        raise SnapshotError(f"{path}: cannot be read whole ({e})") from None


def check_solverstate(path: Path, learnable: dict, iteration: int) -> SolverState:
    state = read_solverstate(path)
    shapes = [s for blobs in learnable.values() for s in blobs]
    if state.iter != iteration:
        raise SnapshotError(f"{path}: holds iteration {state.iter}, its name says {iteration}")
    if len(state.history) != len(shapes):
        raise SnapshotError(f"{path}: {len(state.history)} history blobs, the net has {len(shapes)} learnable blobs")
    for i, (h, shape) in enumerate(zip(state.history, shapes)):
        if h.data.size != int(np.prod(shape)):
            raise SnapshotError(f"{path}: history blob {i} holds {h.data.size} values, the net's blob is {shape}")
    return state


def check_pair(netdir: NetFolder, iteration: int, learnable: dict = None, weights_only: bool = False,
               listing: Listing = None):
    """The (caffemodel, solverstate) of ``iteration``, both checked whole; SnapshotError otherwise.
    ``weights_only``: a caffemodel without a solverstate will do (weights trained elsewhere, 2014's)."""
    learnable = expected(netdir) if learnable is None else learnable
    listing = listing or netdir.scan()
    model, state = listing.snapshots.get(iteration), listing.solverstates.get(iteration)
    if model is None or (state is None and not weights_only):
        raise SnapshotError(f"{netdir.path}: no {'caffemodel' if model is None else 'solverstate'} "
                            f"for iteration {iteration}")
    check_caffemodel(model, learnable)
    if state is not None:
        check_solverstate(state, learnable, iteration)
    return model, state


def pair_identity(netdir: NetFolder, listing: Listing, iteration: int, why: str) -> dict:
    """What marks one snapshot pair as bad: its iteration and its solver state's digest (a pair
    written again at that iteration is another pair), and why."""
    return {"iteration": iteration, "sha256": digest(listing.solverstates[iteration])["sha256"], "why": why}


def _bad(listing: Listing, iteration: int, exclude) -> str:
    """Why the pair at ``iteration`` is one of the bad pairs ``exclude`` lists (None: it is not).
    (An iteration alone, as tf 0.1 recorded it, still counts.)"""
    marks = [b for b in exclude if (b.get("iteration") if isinstance(b, dict) else b) == iteration]
    if not marks:
        return None
    sha = None
    for b in marks:
        if not isinstance(b, dict):
            return "a retry from it crashed"
        sha = sha or digest(listing.solverstates[iteration])["sha256"]
        if b.get("sha256") == sha:
            return b.get("why", "marked bad")
    return None


def resumable(netdir: NetFolder, listing: Listing, exclude=(), echo=None):
    """The newest iteration whose pair is whole and not one of the bad pairs ``exclude`` lists (None:
    none); each pair passed over is said to ``echo``."""
    learnable = None
    for it in sorted(listing.solverstates, reverse=True):
        why = _bad(listing, it, exclude)
        if why:
            if echo:
                echo(f"{netdir.name}: passing over the snapshot at iteration {it}: {why}")
            continue
        try:
            learnable = expected(netdir) if learnable is None else learnable
            check_pair(netdir, it, learnable, listing=listing)
            return it
        except SnapshotError as e:
            if echo:
                echo(f"{netdir.name}: passing over the snapshot at iteration {it}: {e}")
    return None


def digest(path: Path) -> dict:
    st = Path(path).stat()
    return {"file": Path(path).name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": atomic.sha256(path)}


def read_record(netdir: NetFolder) -> dict:
    """The net's completion record ({} when there is none)."""
    return atomic.read_json(netdir.done_record)


def record_done(netdir: NetFolder, max_iter: int, weights_only: bool = False, listing: Listing = None, **extra) -> dict:
    """Check the final pair and write the completion record atomically; SnapshotError if not whole.
    ``listing``: the folder's, when the caller has just read it."""
    model, state = check_pair(netdir, max_iter, weights_only=weights_only, listing=listing)
    record = {"iteration": max_iter, "caffemodel": digest(model), "solverstate": state and digest(state),
              "verified": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    atomic.write_json(netdir.done_record, record)
    return record


def check_record(netdir: NetFolder, max_iter: int, record: dict, full: bool = False) -> Path:
    """The final caffemodel that completion ``record`` vouches for; SnapshotError if there is no
    record for ``max_iter`` or the file changed since (size and time; with ``full``, its digest too)."""
    if record.get("iteration") != max_iter:
        raise SnapshotError(f"{netdir.path}: no completion record for iteration {max_iter}")
    try:
        want = record["caffemodel"]
        path = netdir.path / Path(want["file"]).name
        int(want["bytes"]), str(want["sha256"]), int(want["mtime_ns"])
    except (KeyError, TypeError, ValueError):
        raise SnapshotError(f"{netdir.done_record}: not a completion record tf wrote") from None
    try:
        st = path.stat()
    except OSError:
        raise SnapshotError(f"{path}: recorded as the final snapshot, but missing") from None
    if st.st_size != want["bytes"] or (st.st_mtime_ns != want["mtime_ns"] and not full):
        raise SnapshotError(f"{path}: changed since it was verified ({st.st_size} bytes, recorded {want['bytes']})")
    if full and digest(path)["sha256"] != want["sha256"]:
        raise SnapshotError(f"{path}: its content differs from the verified final snapshot (sha256)")
    return path
