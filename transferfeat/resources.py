"""Locate the files that ship with the package: templates, study configs and the class and md5 lists."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _dir(name: str) -> Path:
    # Installed: transferfeat/<name>; source checkout: <repo>/<name> beside the package.
    inside = _PKG / name
    return inside if inside.is_dir() else _PKG.parent / name


def templates_dir() -> Path:
    return _dir("templates")


def config_path(name: str) -> Path:
    return _dir("configs") / name


def list_file(name: str) -> Path:
    """A list shipped in ``transferfeat/lists/``: the natural/man-made class indices, the md5 sums."""
    return _PKG / "lists" / name
