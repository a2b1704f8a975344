"""Files: output written atomically (a temporary sibling, then a rename, so an existing file is a
complete one), JSON read back, and a file's sha256."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:
        raise FileNotFoundError(2, f"cannot write {path.name}: no such folder", str(path.parent)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def symlink(target: str, path) -> None:
    """Point ``path`` at ``target``, replacing an older link (never a real file or folder)."""
    path = Path(path)
    if path.is_symlink() and os.readlink(path) == target:
        return
    if path.exists() and not path.is_symlink():
        raise FileExistsError(f"{path} exists and is not a link; not replacing it")
    tmp = path.with_name(f".{path.name}.tmplink")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def write_json(path, data) -> None:
    """``data`` as JSON (no NaN or Infinity: not JSON), written atomically."""
    write_text(path, json.dumps(data, indent=1, allow_nan=False))


def read_json(path) -> dict:
    """A JSON object written by ``write_json``; {} when missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def sha256(path) -> str:
    """The file's sha256, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
