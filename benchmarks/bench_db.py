"""`tf db` against Caffe's convert_imageset (same JPEGs, same resize, LMDB) and `tf mean` against
compute_image_mean, side by side in one run, with the machine's decode-and-resize limit (Pillow
alone, all cores) as the ceiling. Goals: tf db >= 1.8x convert_imageset on 2 cores, and >= 80% of
the Pillow limit.

    python benchmarks/bench_db.py [--images 1500] [--size 500x375] [--resize 256]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from transferfeat.caffe import find_tool
from transferfeat.datasets import build_db, compute_mean, resize_bilinear, write_mean


def make_jpegs(out: Path, n: int, size, classes: int = 10):
    """ImageNet-sized photos stand-ins: smooth colour fields with texture, JPEG quality 90."""
    rng = np.random.RandomState(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    lines = []
    for i in range(n):
        c = i % classes
        f = rng.uniform(0.01, 0.08, 3)
        img = 127 + 80 * np.sin(xx[..., None] * f + yy[..., None] * f[::-1] + rng.uniform(0, 6, 3))
        img += rng.normal(0, 12, img.shape)
        name = f"c{c}/img{i:06d}.JPEG"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / name, quality=90)
        lines.append(f"{name} {c}\n")
    (out / "list.txt").write_text("".join(lines))


def _pillow(job):
    path, size = job
    with Image.open(path) as im:
        return im.convert("RGB").resize(size, Image.BILINEAR).tobytes()[:1]


def _same_resize(job):
    path, size = job
    with Image.open(path) as im:
        return resize_bilinear(im.convert("RGB"), *size).tobytes()[:1]


def pillow_limit(paths, size, workers, work=_pillow):
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(work, [(p, size) for p in paths], chunksize=64))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--size", default="500x375")
    ap.add_argument("--resize", type=int, default=256)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    r = args.resize
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "img", args.images, (w, h))
        lst = tmp / "img" / "list.txt"
        paths = [tmp / "img" / l.split()[0] for l in lst.read_text().splitlines()]
        convert, mean_tool = find_tool("convert_imageset"), find_tool("compute_image_mean")
        t_cv = timed(lambda: subprocess.run(
            [str(convert), "--resize_height", str(r), "--resize_width", str(r), str(tmp / "img") + "/", str(lst),
             str(tmp / "cv")], check=True, capture_output=True))
        t_tf = timed(lambda: build_db(lst, tmp / "img", tmp / "tf", classes=10, resize=(r, r), shuffle=False,
                                      progress=False))
        t_pil = timed(lambda: pillow_limit(paths, (r, r), cores))
        t_same = timed(lambda: pillow_limit(paths, (r, r), cores, _same_resize))
        t_cvm = timed(lambda: subprocess.run([str(mean_tool), str(tmp / "cv"), str(tmp / "cv.binaryproto")],
                                             check=True, capture_output=True))
        t_tfm = timed(lambda: write_mean(compute_mean(tmp / "cv", progress=False), tmp / "tf.binaryproto"))
        n = args.images
        print(f"{n} JPEGs {w}x{h} -> {r}x{r}, LMDB, {cores} cores")
        print(f"convert_imageset          {n / t_cv:8.0f} img/s")
        print(f"tf db                     {n / t_tf:8.0f} img/s   {t_cv / t_tf:4.2f}x convert_imageset (goal >= 1.8x)")
        print(f"Pillow decode+resize      {n / t_pil:8.0f} img/s   tf db is {t_pil / t_tf:4.0%} of it (goal >= 80%)")
        print(f"Pillow + OpenCV's resize  {n / t_same:8.0f} img/s   tf db is {t_same / t_tf:4.0%} of it "
              "(decode and the same non-antialiased bilinear tf db uses; no database)")
        print(f"compute_image_mean        {n / t_cvm:8.0f} img/s")
        print(f"tf mean                   {n / t_tfm:8.0f} img/s   {t_cvm / t_tfm:4.2f}x compute_image_mean")
        shutil.rmtree(tmp / "img")


if __name__ == "__main__":
    main()
