"""A procedurally generated JPEG data set in ILSVRC layout, for tests, benchmarks and the mini study.

Every class is drawn from one shared vocabulary of oriented, coloured Gabor strokes (the low-level
structure that transfers between class halves); a class is a particular arrangement of three of
them. Images jitter position, contrast and colour, and add noise and a random distractor stroke.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import atomic
from .errors import Error
from .folder import DatasetFolder

ORIENTATIONS = 6
DISTRACTORS = 2     # random strokes from the same vocabulary in every image
DROP = 0.25         # chance that a class stroke is missing from an image
JITTER = 0.12       # position jitter, as a fraction of the image
NOISE = 30.0        # pixel noise (std)
PALETTE = np.array([[230, 60, 50], [50, 170, 60], [60, 90, 230], [230, 200, 40], [200, 60, 200], [40, 200, 210]],
                   np.float32)


@dataclass(frozen=True)
class Stroke:
    cx: float           # centre, as a fraction of the image
    cy: float
    theta: float
    freq: float         # cycles per image width
    color: int


def class_strokes(k: int, rng: np.random.RandomState) -> list[list[Stroke]]:
    """Three strokes per class, from a grid of positions, six orientations, two frequencies, six colours."""
    out, seen = [], set()
    while len(out) < k:
        strokes = []
        for _ in range(3):
            strokes.append(Stroke(rng.choice([0.25, 0.5, 0.75]), rng.choice([0.25, 0.5, 0.75]),
                                  np.pi * rng.randint(ORIENTATIONS) / ORIENTATIONS,
                                  rng.choice([3.0, 6.0]), rng.randint(len(PALETTE))))
        sig = tuple(sorted((s.cx, s.cy, s.theta, s.freq, s.color) for s in strokes))
        if sig not in seen:
            seen.add(sig)
            out.append(strokes)
    return out


def draw(strokes: list[Stroke], size: tuple[int, int], rng: np.random.RandomState) -> np.ndarray:
    """One RGB uint8 image of a class: its strokes jittered, a distractor, background and noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = 110 + rng.uniform(-25, 25, 3)
    distractors = [Stroke(rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), np.pi * rng.randint(ORIENTATIONS) /
                          ORIENTATIONS, rng.choice([3.0, 6.0]), rng.randint(len(PALETTE))) for _ in range(DISTRACTORS)]
    shown = [s for s in strokes if rng.uniform() > DROP] or strokes[:1]
    for i, s in enumerate(shown + distractors):
        cx = (s.cx + rng.uniform(-JITTER, JITTER)) * w
        cy = (s.cy + rng.uniform(-JITTER, JITTER)) * h
        theta = s.theta + rng.uniform(-0.2, 0.2)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        env = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.14 * w) ** 2))
        wave = np.cos(2 * np.pi * s.freq * u / w)
        amp = rng.uniform(0.4, 1.0)
        img += (amp * env * wave)[:, :, None] * (PALETTE[s.color] - 110)[None, None, :]
    img += rng.normal(0, NOISE, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def wnid(c: int) -> str:
    return f"n9{c:07d}"


def synthesize(out, classes: int, train_per_class: int, valid_per_class: int, size=(32, 32), seed: int = 0,
               quality: int = 90) -> dict:
    """Write DIR/train/<wnid>/*.JPEG, DIR/val/*.JPEG, whole_train/ and whole_valid/files.txt, synsets.txt."""
    if classes < 2 or train_per_class < 1 or valid_per_class < 0:
        raise Error("synth needs at least 2 classes and 1 training image per class")
    out = Path(out)
    rng = np.random.RandomState(seed)
    protos = class_strokes(classes, rng)
    train_lines, val = [], []
    for c in range(classes):
        d = out / "train" / wnid(c)
        d.mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class):
            name = f"{wnid(c)}_{i + 1}.JPEG"
            Image.fromarray(draw(protos[c], size, rng)).save(d / name, "JPEG", quality=quality)
            train_lines.append(f"{wnid(c)}/{name} {c}\n")
        val += [c] * valid_per_class
    rng.shuffle(val)
    (out / "val").mkdir(parents=True, exist_ok=True)
    val_lines = []
    for i, c in enumerate(val):
        name = f"SYNTH_val_{i + 1:08d}.JPEG"
        Image.fromarray(draw(protos[c], size, rng)).save(out / "val" / name, "JPEG", quality=quality)
        val_lines.append(f"{name} {c}\n")
    for part, lines in (("whole_train", train_lines), ("whole_valid", val_lines)):
        d = DatasetFolder(out, part)
        d.path.mkdir(exist_ok=True)
        atomic.write_text(d.files, "".join(lines))
    atomic.write_text(out / "synsets.txt", "".join(f"{wnid(c)}\n" for c in range(classes)))
    return {"classes": classes, "train": len(train_lines), "valid": len(val_lines), "out": str(out)}
