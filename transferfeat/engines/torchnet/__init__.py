"""The torch engine's trainer: a rendered net folder run by PyTorch with Caffe 1.0's semantics.

It reads what `caffe train` reads (the solver, train and val prototxts), builds the net from the
layer list (one forward function per row of the layer table, layers.py), feeds it as Caffe's
Data/ImageData layers and DataTransformer do, updates it with Caffe's SGD and writes Caffe's files:
glog lines, ``<prefix>_iter_N.caffemodel`` and ``.solverstate``. Run as a program::

    python -m transferfeat.engines.torchnet train -solver imagenet_solver.prototxt
        [-snapshot X.solverstate | -weights Y.caffemodel] [-gpu N] [-precision fp32|tf32|bf16]
    python -m transferfeat.engines.torchnet test -model imagenet_val.prototxt -weights W [-iterations K]

Modules: ``glog`` (log lines), ``feed`` (the data layers), ``model`` (the net and its layers),
``solver`` (Caffe's SGD, the training loop, scoring and snapshots), ``__main__`` (the program).
This package itself imports no torch, so its names (the precisions) are known where torch is not.
"""
from __future__ import annotations

from ...errors import Error

PRECISIONS = ("fp32", "tf32", "bf16")          # strict fp32 is the default; the others are opt-in


def check_precision(precision: str) -> str:
    """``precision`` if the engine has it, else an error naming the choices."""
    if precision not in PRECISIONS:
        raise Error(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    return precision
