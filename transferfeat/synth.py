"""A procedurally generated JPEG data set in ILSVRC layout, for tests, benchmarks and the mini study.

Every class is drawn from one shared vocabulary of oriented, coloured Gabor strokes (the low-level
structure that transfers between class halves); a class is a particular arrangement of three of
them, the classes as far apart as one another. Images drop a stroke now and then, jitter position,
contrast and colour, and add noise and a random distractor stroke.
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
DISTRACTORS = 1     # random strokes from the same vocabulary in every image
DROP = 0.15         # chance that a class stroke is missing from an image
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


GRID = [(x, y) for y in (0.25, 0.5, 0.75) for x in (0.25, 0.5, 0.75)]
CANDIDATES = 200    # random candidate classes per class wanted


def _blob(cx: float, cy: float, color: int, samples: int = 16, size: int = 16) -> np.ndarray:
    """A stroke averaged over its position jitter: a colour at a place, the first thing that tells classes apart."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.zeros((size, size, 3), np.float32)
    rng = np.random.RandomState(0)
    for _ in range(samples):
        x, y = cx + rng.uniform(-JITTER, JITTER), cy + rng.uniform(-JITTER, JITTER)
        env = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.14 ** 2))
        out += env[:, :, None] * (PALETTE[color] - 110)[None, None, :] / samples
    return out


def class_strokes(k: int, rng: np.random.RandomState) -> list[list[Stroke]]:
    """k classes of three strokes at three different places, in three colours and orientations.

    Chosen greedily from random candidates, each the farthest (in average image) from those already chosen,
    so that no two classes are much more alike than any other two and every subset of classes is about as
    hard as another (the miniature study's halves A and B).
    """
    def candidate():
        places = rng.choice(len(GRID), 3, replace=False)
        colors = rng.choice(len(PALETTE), 3, replace=False)
        thetas = rng.choice(ORIENTATIONS, 3, replace=False)
        return [Stroke(GRID[p][0], GRID[p][1], np.pi * t / ORIENTATIONS, float(rng.choice([3.0, 6.0])), int(c))
                for p, c, t in zip(places, colors, thetas)]

    blobs = {(x, y, c): _blob(x, y, c) for x, y in GRID for c in range(len(PALETTE))}
    pool = [candidate() for _ in range(CANDIDATES * k)]
    means = np.array([sum(blobs[s.cx, s.cy, s.color] for s in c).ravel() for c in pool])
    chosen = [0]
    nearest = np.linalg.norm(means - means[0], axis=1)
    while len(chosen) < k:
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(means - means[chosen[-1]], axis=1))
    return [pool[i] for i in chosen]


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
