"""Engines: what trains one net. The runner, the local pool and SLURM jobs talk to an Engine
(base.py); only the engine modules know which program does the work and how it is told to. Each
engine registers itself (``@register``), so the registry is the one list of engines the CLI offers.
"""
from __future__ import annotations

from ..errors import Error
from .base import REGISTRY, Engine, Launch, register
from . import caffe as _caffe, pytorch as _pytorch  # noqa: F401 - each registers its engine

__all__ = ["Engine", "Launch", "register", "names", "get"]


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str = "caffe", caffe=None, precision: str = "fp32") -> Engine:
    """The engine called ``name``, configured from the CLI's engine options."""
    if name not in REGISTRY:
        raise Error(f"unknown engine {name!r} (engines: {', '.join(REGISTRY)})")
    return REGISTRY[name].configure(caffe=caffe, precision=precision)
